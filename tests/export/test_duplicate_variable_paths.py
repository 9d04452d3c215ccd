"""Variables are keyed by path (provenance record, parameter table, gradients, torch names),
so every variable the TF worker lists has a path of its own, even where Keras gives two the
same ``path`` (two functional sub-models whose layers share names, as keras-hub CLIP's
vision and text encoders do)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import pipeline
from pipeline.export.worker.loading import unique_paths
from pipeline.to_torch.parameters import fingerprinted

FACTORY = """
import keras
import numpy as np


def _branch(name):
    # Built outside the sub-model's name scope: the variables' paths do not name the
    # sub-model, so both branches have proj/kernel, proj/bias, norm/gamma, norm/beta.
    x = keras.Input((6,))
    h = keras.layers.Dense(4, name="proj")(x)
    return keras.Model(x, keras.layers.LayerNormalization(name="norm")(h), name=name)


def model():
    keras.utils.set_random_seed(0)
    a = keras.Input((6,), name="a")
    b = keras.Input((6,), name="b")
    left, right = _branch("left"), _branch("right")
    joined = keras.layers.Concatenate(name="join")([left(a), right(b)])
    model = keras.Model([a, b], keras.layers.Dense(3, name="head")(joined))
    rng = np.random.default_rng(0)
    for v in model.weights:  # every variable distinct, so a cross-wired one shows
        v.assign(rng.normal(0, 0.5, v.shape).astype("float32"))
    return model
"""

BRANCH_PATHS = ["proj/kernel", "proj/bias", "norm/gamma", "norm/beta"]


def test_unique_paths_qualifies_repeated_paths_by_their_sub_model() -> None:
    paths = [*BRANCH_PATHS, *BRANCH_PATHS, "head/kernel"]
    owners = [*["left"] * 4, *["right"] * 4, "head"]
    assert unique_paths(paths, owners) == [
        *(f"left/{p}" for p in BRANCH_PATHS),
        *(f"right/{p}" for p in BRANCH_PATHS),
        "head/kernel",
    ]


def test_unique_paths_names_the_whole_sub_model_so_layers_cannot_nest() -> None:
    # SigLIP: the text encoder's ``head`` is a Dense, the vision encoder's ``head`` an
    # attention pooling with sub-layers; both encoders also share ``layer_norm``.  Only the
    # shared paths repeat, but the whole of each encoder is named, so ``head`` (a Linear in
    # torch) does not get ``head.attention`` under it.
    paths = ["layer_norm/gamma", "head/attention/kernel", "layer_norm/gamma", "head/kernel"]
    owners = ["vision", "vision", "text", "text"]
    assert unique_paths(paths, owners) == [
        "vision/layer_norm/gamma",
        "vision/head/attention/kernel",
        "text/layer_norm/gamma",
        "text/head/kernel",
    ]


def test_unique_paths_numbers_the_layer_where_the_sub_model_does_not_tell() -> None:
    # Same outer owner (nested sub-models), no owner, and a real layer already named proj_1.
    paths = ["proj/kernel", "proj/kernel", "proj/kernel", "outer/proj_1/kernel", "w", "w"]
    owners = ["outer", "outer", None, "outer", None, None]
    assert unique_paths(paths, owners) == [
        "outer/proj/kernel",
        "outer/proj_2/kernel",
        "proj/kernel",
        "outer/proj_1/kernel",
        "w",
        "w_1",
    ]


def test_fingerprinting_refuses_a_repeated_path() -> None:
    import onnx

    variables = [{"path": "proj/kernel"}, {"path": "proj/kernel"}]
    values = [np.zeros((2, 2), np.float32), np.ones((2, 2), np.float32)]
    with pytest.raises(ValueError, match="proj/kernel"):
        fingerprinted(onnx.ModelProto(), variables, values)


def test_sub_models_with_same_named_layers_convert_with_every_variable_mapped(
    tmp_path: Path,
) -> None:
    factory = tmp_path / "twin_branches.py"
    factory.write_text(FACTORY)
    result = pipeline.convert(f"{factory}:model", tmp_path / "run")
    report = result.report
    assert result.verdict == "pass", report

    rows = {r["tf_name"]: r for r in report["parameters"]}
    expected = {f"{side}/{p}" for side in ("left", "right") for p in BRANCH_PATHS}
    assert set(rows) == expected | {"head/kernel", "head/bias"}
    assert all(r["torch_name"] and not r["unused"] for r in rows.values()), rows
    assert rows["left/proj/kernel"]["torch_name"] == "left.proj.weight"
    assert rows["right/proj/kernel"]["torch_name"] == "right.proj.weight"
    assert len({r["torch_name"] for r in rows.values()}) == len(rows)
    assert report["parameter_count"]["status"] == "full", report["parameter_count"]

    gradients = {g["tf_name"]: g for g in report["gradients"]}
    assert set(gradients) == set(rows)
    assert all(g["checked"] and g["pass"] for g in gradients.values()), gradients

    # Each torch tensor holds its own variable's value (TF's, from the worker's listing).
    params = dict(pipeline.load_torch(result.run_dir).named_parameters())
    by_path = {e.tf_name: e for e in result.parameters}
    left, right = by_path["left/proj/kernel"], by_path["right/proj/kernel"]
    assert left.torch_name and right.torch_name
    assert not torch.equal(params[left.torch_name], params[right.torch_name])
