"""The built-in custom-op patches (``patches/scale_layer.py``, ``patches/attention_pooling.py``).

Hand-built ONNX graphs (no TensorFlow) pin down what is and is not matched and that a torch
module disagreeing with its ONNX form is caught; the real stack (TF worker → tf2onnx → passes
→ onnx2torch → torch.export) shows the zoo models and renamed copies of their layers patched
and still agreeing three ways.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import pipeline
from patches import attention_pooling, scale_layer
from pipeline.core.errors import PassError
from pipeline.core.ort_runner import OrtRunner
from pipeline.passes import default_passes, run_passes
from pipeline.passes.custom_ops import DOMAIN, verify_converter
from pipeline.to_torch.importer import import_onnx

REPO = Path(__file__).resolve().parents[2]
ZOO = REPO / "models" / "zoo.py"
RNG = np.random.default_rng(0)

# -- hand-built graphs ---------------------------------------------------------------------


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: dict[str, np.ndarray],
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        inputs,
        outputs,
        initializer=[numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    # Outputs given without a shape get the inferred one (the checker wants one).
    inferred = onnx.shape_inference.infer_shapes(model)
    for output, typed in zip(model.graph.output, inferred.graph.output, strict=True):
        output.CopyFrom(typed)
    return model


def _float(name: str, shape: list[int | str] | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


VARIABLE = "net/my_scale/mul/ReadVariableOp:0"  # how tf2onnx names a variable read


def _scale_model(
    w: np.ndarray, w_name: str = VARIABLE, x_shape: tuple[int | str, ...] = ("batch", 4)
) -> onnx.ModelProto:
    """``y = Relu(x) * w`` (the Relu makes ``x`` a computed tensor, as in a real graph)."""
    return _model(
        [
            helper.make_node("Relu", ["x"], ["h"], name="net/act/Relu"),
            helper.make_node("Mul", ["h", w_name], ["y"], name="net/my_scale/mul"),
        ],
        [_float("x", list(x_shape))],
        [_float("y")],
        {w_name: w.astype(np.float32)},
    )


def _inputs(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    feeds = {}
    for value in model.graph.input:
        shape = [d.dim_value or 3 for d in value.type.tensor_type.shape.dim]
        if value.type.tensor_type.elem_type == TensorProto.BOOL:
            feeds[value.name] = RNG.random(shape) < 0.7
        else:
            feeds[value.name] = RNG.normal(size=shape).astype(np.float32)
    return feeds


def _custom_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == DOMAIN]


def test_scale_layer_is_rewritten_into_a_checked_local_function() -> None:
    model = _scale_model(np.linspace(0.5, 2.0, 4))
    before = model.SerializeToString()
    fixed, [record] = run_passes(model, [scale_layer.PATCH], _inputs(model))
    assert model.SerializeToString() == before  # the input is never mutated
    assert record.changes == 1 and record.check == "numeric" and record.max_abs_change == 0.0
    [node] = _custom_nodes(fixed)
    assert (node.op_type, node.name) == ("ScaleLayer", "net/my_scale")
    assert [(f.domain, f.name) for f in fixed.functions] == [(DOMAIN, "ScaleLayer")]
    assert any(o.domain == DOMAIN for o in fixed.opset_import)
    assert "Mul" not in {n.op_type for n in fixed.graph.node}

    module = import_onnx(fixed)
    [patch_module] = [m for m in module.modules() if isinstance(m, scale_layer.ScaleLayer)]
    assert isinstance(patch_module.scale, torch.nn.Parameter) and patch_module.scale.requires_grad
    np.testing.assert_array_equal(
        patch_module.scale.detach().numpy(), np.linspace(0.5, 2.0, 4).astype(np.float32)
    )


@pytest.mark.parametrize(
    ("w", "w_name", "x_shape", "why"),
    [
        (
            np.array(0.25),
            "net/attention/truediv_recip:0",
            ("batch", 4),
            "a constant, not a variable",
        ),
        (np.array([2.0]), "net/resc/Cast/x:0", ("batch", 4), "a Const (Rescaling)"),
        (np.full((4,), 0.5), "net/bn/batchnorm/mul:0", ("batch", 4), "folded from variables"),
        (np.ones((1, 4)), VARIABLE, ("batch", 1), "broadcasts x up (LayerNorm's rsqrt*gamma)"),
        (np.ones((4, 1)), VARIABLE, ("batch", 4, 4), "scales a non-last axis"),
        (np.ones((1, 1, 4)), VARIABLE, ("batch", 4), "has a higher rank than x"),
    ],
)
def test_scale_layer_leaves_other_muls_alone(
    w: np.ndarray, w_name: str, x_shape: tuple[int | str, ...], why: str
) -> None:
    model = _scale_model(w, w_name, x_shape)
    result = scale_layer.PATCH.apply(model)
    assert result.changes == 0, why
    assert result.model is model


def test_scale_layer_weight_that_is_also_a_graph_input_is_left_alone() -> None:
    model = _scale_model(np.ones(4))
    model.graph.input.append(_float(VARIABLE, [4]))
    assert scale_layer.PATCH.apply(model).changes == 0


def test_scale_layers_sharing_one_deduplicated_initializer_get_their_own_weights() -> None:
    """tf2onnx merges equal constants: two fresh scale layers (all ones) share one tensor."""
    w = np.full((4,), 1.5, np.float32)
    model = _model(
        [
            helper.make_node("Relu", ["x"], ["h"], name="net/a/Relu"),
            helper.make_node("Mul", ["h", VARIABLE], ["s1"], name="net/scale_a/mul"),
            helper.make_node("Tanh", ["s1"], ["t"], name="net/b/Tanh"),
            helper.make_node("Mul", [VARIABLE, "t"], ["y"], name="net/scale_b/mul"),
        ],
        [_float("x", ["batch", 4])],
        [_float("y")],
        {VARIABLE: w},
    )
    fixed, [record] = run_passes(model, [scale_layer.PATCH], _inputs(model))
    assert record.changes == 2
    nodes = _custom_nodes(fixed)
    assert [n.name for n in nodes] == ["net/scale_a", "net/scale_b"]
    assert len({n.input[1] for n in nodes}) == 2
    params = [p for n, p in import_onnx(fixed).named_parameters() if n.endswith(".scale")]
    assert len(params) == 2 and params[0] is not params[1]


def _pooling_model(
    *, masked: bool, weights_used_as_output: bool = False, score_bias: bool = True
) -> onnx.ModelProto:
    """Attention pooling in its plainest ONNX spelling: 3-D MatMul Dense layers, ``Where``.

    ``score_bias=False``: the scoring Dense has no ``Add`` (``use_bias=False``, or a zero
    bias tf2onnx dropped).
    """
    d, u, t = 4, 3, 5
    rng = np.random.default_rng(1)
    weights = {
        "w1": rng.normal(size=(d, u)),
        "b1": rng.normal(size=(u,)),
        "w2": rng.normal(size=(u, 1)),
        "b2": rng.normal(size=(1,)),
        "last": np.array([2], np.int64),
        "time": np.array([1], np.int64),
    }
    if masked:
        weights["neg"] = np.array(-1e9)
    weights = {k: v if v.dtype == np.int64 else v.astype(np.float32) for k, v in weights.items()}
    nodes = [
        helper.make_node("MatMul", ["h", "w1"], ["p"], name="m/pool/proj/MatMul"),
        helper.make_node("Add", ["p", "b1"], ["pb"], name="m/pool/proj/Add"),
        helper.make_node("Tanh", ["pb"], ["tanh"], name="m/pool/proj/Tanh"),
        helper.make_node("MatMul", ["tanh", "w2"], ["s1"], name="m/pool/score/MatMul"),
    ]
    if score_bias:
        nodes.append(helper.make_node("Add", ["b2", "s1"], ["s1b"], name="m/pool/score/Add"))
    else:
        del weights["b2"]
    nodes.append(
        helper.make_node(
            "Squeeze", ["s1b" if score_bias else "s1", "last"], ["s"], name="m/pool/Squeeze"
        )
    )
    inputs = [_float("h", ["batch", t, d])]
    scores = "s"
    if masked:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", t]))
        nodes.append(helper.make_node("Where", ["mask", "s", "neg"], ["sm"], name="m/pool/Where"))
        scores = "sm"
    nodes += [
        helper.make_node("Softmax", [scores], ["a"], name="m/pool/Softmax", axis=-1),
        helper.make_node("Unsqueeze", ["a", "last"], ["a3"], name="m/pool/ExpandDims"),
        helper.make_node("Mul", ["a3", "h"], ["weighted"], name="m/pool/mul"),
        helper.make_node("ReduceSum", ["weighted", "time"], ["y"], name="m/pool/Sum", keepdims=0),
    ]
    outputs = [_float("y")]
    if weights_used_as_output:
        outputs.append(_float("a"))
    return _model(nodes, inputs, outputs, weights)


def _pooling_reference(feeds: dict[str, np.ndarray], model: onnx.ModelProto) -> np.ndarray:
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    h = feeds["h"].astype(np.float64)
    s = (np.tanh(h @ w["w1"] + w["b1"]) @ w["w2"] + w.get("b2", 0.0))[..., 0]
    if "mask" in feeds:
        s = np.where(feeds["mask"], s, -1e9)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    return (h * a[..., None]).sum(1)


@pytest.mark.parametrize("masked", [True, False], ids=["masked", "unmasked"])
def test_attention_pooling_is_one_node_with_linear_parameters(masked: bool) -> None:
    model = _pooling_model(masked=masked)
    feeds = _inputs(model)
    fixed, [record] = run_passes(model, [attention_pooling.PATCH], feeds)
    assert record.changes == 1 and record.check == "numeric"
    [node] = _custom_nodes(fixed)
    assert node.op_type == ("MaskedAttentionPooling" if masked else "AttentionPooling")
    assert node.name == "m/pool"
    assert [n.op_type for n in fixed.graph.node] == [node.op_type]  # shape chains gone too
    assert {t.name for t in fixed.graph.initializer} == {"w1", "b1", "w2", "b2"}

    module = import_onnx(fixed)
    [pool] = [m for m in module.modules() if isinstance(m, attention_pooling.AttentionPooling)]
    assert isinstance(pool.projection, torch.nn.Linear) and isinstance(pool.score, torch.nn.Linear)
    assert {n for n, p in pool.named_parameters() if p.requires_grad} == {
        "projection.weight",
        "projection.bias",
        "score.weight",
        "score.bias",
    }
    expected = _pooling_reference(feeds, model)
    with torch.no_grad():
        got = module(*(torch.from_numpy(feeds[i.name]) for i in fixed.graph.input)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(OrtRunner(fixed).run(feeds)["y"], expected, atol=1e-6)


def test_attention_pooling_without_a_score_bias_gets_a_zero_one() -> None:
    model = _pooling_model(masked=True, score_bias=False)
    before = model.SerializeToString()
    feeds = _inputs(model)
    fixed, [record] = run_passes(model, [attention_pooling.PATCH], feeds)
    assert model.SerializeToString() == before
    assert record.changes == 1
    [node] = _custom_nodes(fixed)
    bias = {t.name: numpy_helper.to_array(t) for t in fixed.graph.initializer}[node.input[4]]
    np.testing.assert_array_equal(bias, np.zeros(1, np.float32))
    np.testing.assert_allclose(
        OrtRunner(fixed).run(feeds)["y"], _pooling_reference(feeds, model), atol=1e-6
    )


def test_attention_pooling_whose_weights_are_also_an_output_is_left_alone() -> None:
    model = _pooling_model(masked=True, weights_used_as_output=True)
    assert attention_pooling.PATCH.apply(model).changes == 0


def test_a_torch_module_that_disagrees_with_its_onnx_form_stops_the_patch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = _scale_model(np.linspace(0.5, 2.0, 4))
    monkeypatch.setattr(scale_layer.ScaleLayer, "forward", lambda self, x: x * self.scale * 1.001)
    with pytest.raises(PassError, match=r"patch 'scale_layer'.*disagrees with its ONNX function"):
        scale_layer.PATCH.apply(model)
    with pytest.raises(PassError, match=r"pass 'scale_layer' raised PassError"):
        run_passes(model, [scale_layer.PATCH], _inputs(model))


def test_a_torch_module_that_ignores_the_mask_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    forward = attention_pooling.AttentionPooling.forward
    monkeypatch.setattr(
        attention_pooling.AttentionPooling,
        "forward",
        lambda self, x, mask=None: forward(self, x),
    )
    with pytest.raises(PassError, match=r"patch 'attention_pooling'.*MaskedAttentionPooling"):
        attention_pooling.PATCH.apply(_pooling_model(masked=True))


def test_weights_that_do_not_become_parameters_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def buffer_init(self: torch.nn.Module, scale: torch.Tensor) -> None:
        torch.nn.Module.__init__(self)
        self.register_buffer("scale", scale.clone())

    monkeypatch.setattr(scale_layer.ScaleLayer, "__init__", buffer_init)
    with pytest.raises(PassError, match=r"patch 'scale_layer'.*must become nn.Parameters"):
        scale_layer.PATCH.apply(_scale_model(np.ones(4)))


def test_verify_converter_names_the_patch_and_the_node() -> None:
    fixed = scale_layer.PATCH.apply(_scale_model(np.ones(4))).model
    [node] = _custom_nodes(fixed)
    typed = onnx.shape_inference.infer_shapes(fixed)
    assert verify_converter("mine", typed, node) == 0.0
    bad = onnx.NodeProto()
    bad.CopyFrom(node)
    bad.op_type = "NoSuchOp"
    with pytest.raises(PassError, match=r"patch 'mine': tf2torch::NoSuchOp node 'net/my_scale'"):
        verify_converter("mine", typed, bad)


def test_both_patches_are_default_passes() -> None:
    names = [p.name for p in default_passes()]
    assert {"attention_pooling", "scale_layer"} <= set(names)


# -- the real stack ------------------------------------------------------------------------


def _passes(result: pipeline.ConversionResult) -> dict[str, dict[str, object]]:
    return {p["name"]: p for p in result.report["passes"]}


def _assert_three_way(result: pipeline.ConversionResult) -> None:
    assert result.verdict == "pass", result.report["comparisons"]
    assert {c["pair"] for c in result.report["comparisons"]} == {"tf-ort", "tf-torch", "ort-torch"}


def _run_onnx(result: pipeline.ConversionResult) -> onnx.ModelProto:
    return onnx.load(str(result.run_dir / "model.onnx"))


def _raw_initializer(result: pipeline.ConversionResult, name: str) -> np.ndarray:
    raw = onnx.load(str(result.run_dir / "model.raw.onnx"))
    [tensor] = [t for t in raw.graph.initializer if t.name == name]
    return numpy_helper.to_array(tensor)


def test_zoo_scale_layer_net_is_patched_and_its_scale_is_a_parameter(tmp_path: Path) -> None:
    result = pipeline.convert(f"{ZOO}:scale_layer_net", tmp_path / "run")
    _assert_three_way(result)
    record = _passes(result)["scale_layer"]
    assert record["changes"] == 1 and record["check"] == "numeric"
    [node] = _custom_nodes(_run_onnx(result))
    assert node.op_type == "ScaleLayer"
    value = _raw_initializer(result, node.input[1])
    scales = [(n, p) for n, p in result.module.named_parameters() if n.endswith("scale")]
    assert len(scales) == 1, list(dict(result.module.named_parameters()))
    _, param = scales[0]
    assert param.requires_grad and tuple(param.shape) == (1,)
    np.testing.assert_array_equal(param.detach().cpu().numpy(), value)


def test_zoo_attention_pooling_is_patched_with_its_mask(tmp_path: Path) -> None:
    # Token 0 is padding: no padding, trailing padding, one real token, all padding.
    tokens = np.random.default_rng(3).integers(1, 50, (4, 12)).astype(np.int32)
    tokens[1, 7:] = 0
    tokens[2, 1:] = 0
    tokens[3, :] = 0
    np.savez(tmp_path / "tokens.npz", tokens=tokens)
    options = pipeline.ConvertOptions(inputs=tmp_path / "tokens.npz")
    result = pipeline.convert(f"{ZOO}:attention_pooling", tmp_path / "run", options)
    _assert_three_way(result)
    record = _passes(result)["attention_pooling"]
    assert record["changes"] == 1 and record["check"] == "numeric"
    fixed = _run_onnx(result)
    [node] = _custom_nodes(fixed)
    assert node.op_type == "MaskedAttentionPooling"
    assert not {"Softmax", "Tanh", "ReduceSum"} & {n.op_type for n in fixed.graph.node}
    params = {n: tuple(p.shape) for n, p in result.module.named_parameters() if p.requires_grad}
    for suffix, shape in [
        ("projection.weight", (16, 16)),
        ("projection.bias", (16,)),
        ("score.weight", (1, 16)),
        ("score.bias", (1,)),
    ]:
        assert [s for n, s in params.items() if n.endswith(suffix)] == [shape], params


RENAMED_LAYERS = '''
"""The zoo's custom layers rewritten by someone else, under other names."""
import keras
import numpy as np
from keras import layers, ops


class MyGain(layers.Layer):
    """A frozen per-channel gain (the scale layer, per channel, not trainable)."""

    def build(self, input_shape):
        self.g = self.add_weight(
            name="g", shape=(input_shape[-1],), initializer="ones", trainable=False
        )

    def call(self, x):
        return self.g * x


class Summarize(layers.Layer):
    """Attention pooling without a mask, every name changed."""

    def __init__(self, width, **kwargs):
        super().__init__(**kwargs)
        self.hidden = layers.Dense(width, activation="tanh", name="hid")
        self.energy = layers.Dense(1, name="energy")

    def build(self, input_shape):
        self.hidden.build(input_shape)
        self.energy.build((*input_shape[:-1], self.hidden.units))

    def call(self, x):
        e = ops.squeeze(self.energy(self.hidden(x)), axis=-1)
        return ops.sum(x * ops.expand_dims(ops.softmax(e, axis=-1), -1), axis=1)


def model():
    keras.utils.set_random_seed(7)
    x = keras.Input((6, 8), name="seq")
    h = layers.Dense(8, name="enc")(x)
    h = MyGain(name="block_out")(h)
    h = Summarize(5, name="summary")(h)
    y = layers.Dense(3, name="out")(h)
    m = keras.Model(x, y)
    rng = np.random.default_rng(7)
    for v in m.weights:
        low, high = (0.5, 1.5) if v.path.endswith("/g") else (-0.8, 0.8)
        v.assign(rng.uniform(low, high, v.shape).astype("float32"))
    return m
'''


def test_patches_recognise_the_ops_under_other_names(tmp_path: Path) -> None:
    factory = tmp_path / "renamed.py"
    factory.write_text(textwrap.dedent(RENAMED_LAYERS))
    result = pipeline.convert(f"{factory}:model", tmp_path / "run")
    _assert_three_way(result)
    passes = _passes(result)
    assert passes["scale_layer"]["changes"] == 1
    assert passes["attention_pooling"]["changes"] == 1
    fixed = _run_onnx(result)
    by_type = {n.op_type: n for n in _custom_nodes(fixed)}
    assert set(by_type) == {"ScaleLayer", "AttentionPooling"}
    # The frozen per-channel gain is in the torch module with its values (a parameter or,
    # being non-trainable in TF, a buffer) ...
    gain = _raw_initializer(result, by_type["ScaleLayer"].input[1])
    assert gain.shape == (8,)
    state = result.module.state_dict()
    assert any(
        tuple(t.shape) == (8,) and np.array_equal(t.detach().cpu().numpy(), gain)
        for t in state.values()
    ), list(state)
    # ... and the pooling's Dense layers are trainable nn.Linear parameters.
    params = {n: tuple(p.shape) for n, p in result.module.named_parameters() if p.requires_grad}
    assert [s for n, s in params.items() if n.endswith("projection.weight")] == [(5, 8)], params
    assert [s for n, s in params.items() if n.endswith("score.weight")] == [(1, 5)], params


def test_a_model_without_the_ops_is_left_alone(tmp_path: Path) -> None:
    """Self-attention multiplies by a constant ``1/sqrt(d)`` and has a Softmax: no patch."""
    result = pipeline.convert(f"{ZOO}:self_attention", tmp_path / "run")
    _assert_three_way(result)
    passes = _passes(result)
    assert passes["scale_layer"]["changes"] == 0
    assert passes["attention_pooling"]["changes"] == 0
    assert not _custom_nodes(_run_onnx(result))
