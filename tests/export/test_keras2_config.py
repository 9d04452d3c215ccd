"""The Keras 2 → Keras 3 config translation alone (pure Python: no TensorFlow, no Keras)."""

from __future__ import annotations

import pytest

from pipeline.export.worker.keras2 import Keras2Unsupported, translated


def _layer(class_name: str, **config: object) -> dict[str, object]:
    return {"class_name": class_name, "config": {"name": class_name.lower(), **config}}


def test_keys_keras3_refuses_are_dropped_where_neutral() -> None:
    model = {
        "class_name": "Functional",
        "config": {
            "layers": [
                _layer("LSTM", units=3, time_major=False, implementation=2),
                _layer("DepthwiseConv2D", kernel_size=3, groups=1),
                _layer("SeparableConv1D", filters=2, groups=1, kernel_initializer={"a": 1}),
                _layer("SpatialDropout1D", rate=0.5, trainable=True, noise_shape=None),
                _layer("MultiHeadAttention", num_heads=2, query_shape=[None, 5, 8]),
                _layer("RandomFlip", mode="horizontal", rng_type="stateful"),
            ]
        },
    }
    layers = translated(model)["config"]["layers"]
    assert layers[0]["config"] == {"name": "lstm", "units": 3, "implementation": 2}
    assert layers[1]["config"] == {"name": "depthwiseconv2d", "kernel_size": 3}
    assert layers[2]["config"] == {"name": "separableconv1d", "filters": 2}
    assert layers[3]["config"] == {"name": "spatialdropout1d", "rate": 0.5}
    assert layers[4]["config"] == {"name": "multiheadattention", "num_heads": 2}
    assert layers[5]["config"] == {"name": "randomflip", "mode": "horizontal"}
    assert model["config"]["layers"][0]["config"]["time_major"] is False  # input untouched


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (_layer("GRU", time_major=True), "'gru' (GRU) has time_major=True"),
        (_layer("Conv2DTranspose", groups=2), "'conv2dtranspose' (Conv2DTranspose) has groups=2"),
    ],
)
def test_behaviour_keras3_lacks_is_refused_in_one_line(
    layer: dict[str, object], message: str
) -> None:
    with pytest.raises(Keras2Unsupported) as raised:
        translated({"class_name": "Sequential", "config": {"layers": [layer]}})
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_tensor_keyword_arguments_become_keras3_node_arguments() -> None:
    """``MultiHeadAttention(q, value=v)``: Keras 2 wrote ``value`` as a reference, which
    Keras 3's legacy loader passes on as a list; other nodes keep the legacy form."""
    legacy = [[["q", 0, 0, {"value": ["v", 0, 0], "training": False}]]]
    plain = [[["q", 0, 0, {}]]]
    entry = {"class_name": "MultiHeadAttention", "config": {"name": "mha"}}
    node = translated({**entry, "inbound_nodes": legacy})["inbound_nodes"][0]
    history = node["args"][0]["config"]["keras_history"]
    assert history == ["q", 0, 0] and node["kwargs"]["training"] is False
    assert node["kwargs"]["value"]["config"]["keras_history"] == ["v", 0, 0]
    assert translated({**entry, "inbound_nodes": plain})["inbound_nodes"] == plain
