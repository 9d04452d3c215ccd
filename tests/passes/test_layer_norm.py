"""The layer_norm pass: tf2onnx's decomposed Keras LayerNormalization → ONNX
LayerNormalization → ``nn.LayerNorm`` with Keras's epsilon and the Keras gamma/beta."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import pipeline
from pipeline.core.ort_runner import OrtRunner
from pipeline.passes import run_passes
from pipeline.passes.layer_norm import LayerNormPass

ZOO_FILE = Path(__file__).resolve().parents[2] / "models" / "zoo.py"
EPS = 1e-3


def _decomposed(
    shape: tuple[int, ...] = (2, 8, 16),
    *,
    reduce: str = "GlobalAveragePool",
    axes: tuple[int, ...] = (-1,),
    axis: int = -1,
    center: bool = True,
    scale: bool = True,
    eps_input: bool = False,
    gamma_input: bool = False,
    gamma_shape: tuple[int, ...] | None = None,
    swap: bool = False,
    reshape_mean: bool = False,
    opset: int = 17,
) -> onnx.ModelProto:
    """The graph tf2onnx exports for Keras LayerNormalization (``moments`` +
    ``batch_normalization``), with gamma/beta as constants shaped like ``gamma_shape``
    (default: 1 everywhere but ``axis``).  ``swap`` swaps every commutative pair."""
    rank = len(shape)
    channels = shape[axis]
    if gamma_shape is None:
        gamma_shape = tuple(channels if i == axis % rank else 1 for i in range(rank))
    rng = np.random.default_rng(1)
    gamma = rng.uniform(0.5, 1.5, int(np.prod(gamma_shape))).astype(np.float32)
    beta = rng.normal(0.0, 0.1, int(np.prod(gamma_shape))).astype(np.float32)
    inits = [numpy_helper.from_array(np.array(EPS, np.float32), "eps")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *shape[1:]])]
    if gamma_input:
        inputs.append(helper.make_tensor_value_info("gamma", TensorProto.FLOAT, gamma_shape))
    else:
        inits.append(numpy_helper.from_array(gamma.reshape(gamma_shape), "gamma"))
    inits.append(numpy_helper.from_array(beta.reshape(gamma_shape), "beta"))
    if eps_input:
        inputs.append(helper.make_tensor_value_info("eps_in", TensorProto.FLOAT, []))

    def pair(a: str, b: str) -> list[str]:
        return [b, a] if swap else [a, b]

    def mean(src: str, dst: str) -> onnx.NodeProto:
        if reduce == "GlobalAveragePool":
            return helper.make_node("GlobalAveragePool", [src], [dst])
        if opset >= 18:
            return helper.make_node("ReduceMean", [src, "axes"], [dst], keepdims=1)
        return helper.make_node("ReduceMean", [src], [dst], axes=list(axes), keepdims=1)

    if reduce == "ReduceMean" and opset >= 18:
        inits.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
    nodes = [mean("x", "mean")]
    subtracted = "mean"
    if reshape_mean:
        # tf2onnx's form: [-1, then the mean's own dims] (an identity reshape).
        mean_shape = [-1, *[1 if i == axis % rank else d for i, d in enumerate(shape)][1:]]
        inits.append(numpy_helper.from_array(np.array(mean_shape, np.int64), "mean_shape"))
        nodes.append(helper.make_node("Reshape", ["mean", "mean_shape"], ["mean_r"]))
        subtracted = "mean_r"
    nodes += [
        helper.make_node("Neg", ["mean"], ["neg"]),
        helper.make_node("Sub", ["x", subtracted], ["d"]),
        helper.make_node("Mul", ["d", "d"], ["dd"]),
        mean("dd", "var"),
        helper.make_node("Add", pair("var", "eps_in" if eps_input else "eps"), ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["sd"]),
        helper.make_node("Reciprocal", ["sd"], ["inv"]),
    ]
    factor = "inv"
    if scale:
        nodes.append(helper.make_node("Mul", pair("inv", "gamma"), ["m"]))
        factor = "m"
    nodes += [
        helper.make_node("Mul", pair("x", factor), ["xm"]),
        helper.make_node("Mul", pair("neg", factor), ["nm"]),
    ]
    shift = "nm"
    if center:
        nodes.append(helper.make_node("Add", pair("nm", "beta"), ["shift"]))
        shift = "shift"
    nodes.append(helper.make_node("Add", pair("xm", shift), ["y"]))
    graph = helper.make_graph(
        nodes,
        "layer_norm",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", *shape[1:]])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def _feeds(model: onnx.ModelProto, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {"x": (rng.normal(size=shape) * 3 + 1).astype(np.float32)}
    names = {i.name for i in model.graph.input}
    if "eps_in" in names:
        feeds["eps_in"] = np.array(EPS, np.float32)
    if "gamma" in names:
        dims = [d.dim_value for d in model.graph.input[1].type.tensor_type.shape.dim]
        feeds["gamma"] = rng.uniform(0.5, 1.5, dims).astype(np.float32)
    return feeds


def _apply(model: onnx.ModelProto, shape: tuple[int, ...]) -> tuple[onnx.ModelProto, int, float]:
    """Run the pass; check it left its input alone and what it returns is valid ONNX; return
    the graph, the change count and the largest ONNX Runtime output change."""
    before_bytes = model.SerializeToString()
    result = LayerNormPass().apply(model)
    assert model.SerializeToString() == before_bytes, "the pass mutated its input"
    onnx.checker.check_model(result.model, full_check=True)
    feeds = _feeds(model, shape)
    before = OrtRunner(model).run(feeds)["y"]
    after = OrtRunner(result.model).run(feeds)["y"]
    return result.model, result.changes, float(np.abs(before - after).max())


def _ops(model: onnx.ModelProto) -> Counter[str]:
    return Counter(n.op_type for n in model.graph.node)


def _layer_norm_node(model: onnx.ModelProto) -> onnx.NodeProto:
    (node,) = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    return node


def _initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    (found,) = [numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name]
    return found


@pytest.mark.parametrize(
    ("shape", "options"),
    [
        pytest.param((2, 8, 16), {}, id="rank3-GlobalAveragePool"),
        pytest.param((2, 8, 16), {"swap": True}, id="commuted"),
        pytest.param((2, 8, 16), {"center": False}, id="center-False"),
        pytest.param((3, 16), {"reduce": "ReduceMean", "axes": (1,)}, id="rank2-ReduceMean"),
        pytest.param((2, 4, 4, 8), {"reduce": "ReduceMean", "axes": (3,)}, id="rank4-last"),
        pytest.param(
            (2, 4, 4, 8), {"reduce": "ReduceMean", "axes": (-1,), "opset": 18}, id="opset18-axes"
        ),
    ],
)
def test_last_axis_decomposition_becomes_layer_normalization(
    shape: tuple[int, ...], options: dict[str, object]
) -> None:
    model = _decomposed(shape, **options)  # type: ignore[arg-type]
    fused, changes, change = _apply(model, shape)
    assert changes == 1
    ops = _ops(fused)
    assert ops == Counter({"LayerNormalization": 1}), ops  # the whole decomposition is gone
    node = _layer_norm_node(fused)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["axis"] == -1
    assert np.float32(attrs["epsilon"]) == np.float32(EPS)
    gamma = _initializer(model, "gamma").reshape(-1)
    np.testing.assert_array_equal(_initializer(fused, node.input[1]), gamma)
    assert _initializer(fused, node.input[1]).shape == (shape[-1],)
    if options.get("center", True):
        beta = _initializer(model, "beta").reshape(-1)
        np.testing.assert_array_equal(_initializer(fused, node.input[2]), beta)
    else:
        assert len(node.input) == 2
    assert change < 1e-5


def test_inner_axis_norm_is_transposed_around_layer_normalization() -> None:
    """ConvNeXt's form: tf2onnx moved the NHWC last-axis norm to NCHW (mean over axis 1,
    reshaped to its own shape before the Sub, gamma (1, C, 1, 1))."""
    shape = (2, 8, 4, 4)
    model = _decomposed(shape, reduce="ReduceMean", axes=(1,), axis=1, reshape_mean=True)
    fused, changes, change = _apply(model, shape)
    assert changes == 1
    assert _ops(fused) == Counter({"LayerNormalization": 1, "Transpose": 2})
    transposes = [n for n in fused.graph.node if n.op_type == "Transpose"]
    perms = [list(helper.get_attribute_value(t.attribute[0])) for t in transposes]
    assert perms == [[0, 2, 3, 1], [0, 3, 1, 2]]
    assert _initializer(fused, _layer_norm_node(fused).input[1]).shape == (8,)
    assert change < 1e-5


@pytest.mark.parametrize(
    ("shape", "options", "why"),
    [
        ((2, 4, 4, 8), {}, "GlobalAveragePool on rank 4 averages H and W, not the last axis"),
        ((2, 8, 16), {"reduce": "ReduceMean", "axes": (1, 2)}, "two axes"),
        ((2, 8, 16), {"gamma_shape": (1, 8, 16)}, "gamma varies along more than one axis"),
        ((2, 8, 16), {"eps_input": True}, "epsilon is a graph input"),
        ((2, 8, 16), {"gamma_input": True}, "gamma is a graph input"),
        ((2, 8, 16), {"scale": False}, "scale=False: no gamma to put in nn.LayerNorm"),
        ((2, 8, 16), {"opset": 16}, "LayerNormalization needs opset 17"),
        (
            (2, 8, 4, 4),
            {"reduce": "ReduceMean", "axes": (1,), "axis": 1, "reshape_mean": True},
            "mean reshaped to another shape",
        ),
    ],
)
def test_other_normalisations_are_left_alone(
    shape: tuple[int, ...], options: dict[str, object], why: str
) -> None:
    model = _decomposed(shape, **options)  # type: ignore[arg-type]
    if why == "mean reshaped to another shape":
        for init in model.graph.initializer:
            if init.name == "mean_shape":
                init.CopyFrom(numpy_helper.from_array(np.array([-1, 4, 1, 4], np.int64), init.name))
    result = LayerNormPass().apply(model)
    assert result.changes == 0, why
    assert result.model is model


def test_double_input_is_normalised_in_double() -> None:
    model = _decomposed(reduce="ReduceMean", axes=(2,))
    for init in model.graph.initializer:
        value = numpy_helper.to_array(init)
        if value.dtype == np.float32:
            init.CopyFrom(numpy_helper.from_array(value.astype(np.float64), init.name))
    for value_info in [*model.graph.input, *model.graph.output]:
        value_info.type.tensor_type.elem_type = TensorProto.DOUBLE
    result = LayerNormPass().apply(model)
    assert result.changes == 1
    attrs = {a.name: a for a in _layer_norm_node(result.model).attribute}
    assert attrs["stash_type"].i == TensorProto.DOUBLE
    feeds = {"x": np.random.default_rng(0).normal(size=(2, 8, 16)) * 3 + 1}
    before = OrtRunner(model).run(feeds)["y"]
    after = OrtRunner(result.model).run(feeds)["y"]
    assert after.dtype == np.float64
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-12)


def test_pass_is_checked_numerically_by_the_runner() -> None:
    model = _decomposed()
    out, records = run_passes(model, [LayerNormPass()], _feeds(model, (2, 8, 16)))
    (record,) = records
    assert (record.status, record.check, record.changes) == ("applied", "numeric", 1)
    assert record.max_abs_change is not None and record.max_abs_change < 1e-5
    assert _ops(out)["LayerNormalization"] == 1


def test_shared_moments_are_kept_for_their_other_users() -> None:
    """Grappler merges the moments of two layer norms of one tensor: the fused one must not
    take the shared nodes away from the other user."""
    model = _decomposed()
    graph = model.graph
    graph.node.append(helper.make_node("Mul", ["x", "inv"], ["other"]))
    graph.output.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, None))
    fused, changes, change = _apply(model, (2, 8, 16))
    assert changes == 1 and change < 1e-5
    feeds = _feeds(model, (2, 8, 16))
    np.testing.assert_array_equal(
        OrtRunner(model).run(feeds)["other"], OrtRunner(fused).run(feeds)["other"]
    )


def test_keras_layer_normalization_becomes_nn_layer_norm(tmp_path: Path) -> None:
    result = pipeline.convert(f"{ZOO_FILE}:self_attention_layernorm", tmp_path / "run")
    assert result.verdict == "pass", result.report.get("error")
    (record,) = [p for p in result.report["passes"] if p["name"] == "layer_norm"]
    assert (record["status"], record["changes"], record["check"]) == ("applied", 1, "numeric")
    rows = {r["tf_name"]: r for r in result.report["parameters"]}
    for variable, attr in (("norm/gamma", "weight"), ("norm/beta", "bias")):
        row = rows[variable]
        assert row["transform"] == "identity", row
        assert row["torch_name"].endswith(f".{attr}"), row
        assert row["shape"] == [16]
    owner_path = rows["norm/gamma"]["torch_name"].rpartition(".")[0]
    assert rows["norm/beta"]["torch_name"] == f"{owner_path}.bias"
    # The saved program (torch.export) records which module each op ran in.
    program = torch.export.load(str(result.run_dir / "model.pt2"))
    (call,) = [n for n in program.graph.nodes if n.target == torch.ops.aten.layer_norm.default]
    assert call.meta["nn_module_stack"][f"L__self__{owner_path}"] == (
        owner_path,
        "torch.nn.modules.normalization.LayerNorm",
    )
    normalized_shape, eps = call.args[1], call.args[4]
    assert list(normalized_shape) == [16]
    # ONNX stores epsilon as float32: Keras's 1e-3 as the float32 TF adds.
    assert np.float32(eps) == np.float32(1e-3)
    params = dict(result.module.named_parameters())
    assert params[f"{owner_path}.weight"].requires_grad
    gradients = {g["tf_name"]: g for g in result.report["gradients"]}
    assert gradients["norm/gamma"]["pass"] and gradients["norm/beta"]["pass"]


@pytest.mark.slow
def test_convnext_layer_norms_become_nn_layer_norm(tmp_path: Path) -> None:
    """ConvNeXtTiny: 22 NCHW (transposed) layer norms and the head's rank-2 one."""
    result = pipeline.convert(f"{ZOO_FILE}:convnext_tiny", tmp_path / "run")
    assert result.verdict == "pass", result.report.get("error")
    (record,) = [p for p in result.report["passes"] if p["name"] == "layer_norm"]
    assert record["changes"] == 23
    program = torch.export.load(str(result.run_dir / "model.pt2"))
    calls = [n for n in program.graph.nodes if n.target == torch.ops.aten.layer_norm.default]
    assert len(calls) == 23
    assert all(np.float32(c.args[4]) == np.float32(1e-6) for c in calls)
    assert all(
        list(c.meta["nn_module_stack"].values())[-1][1].endswith("normalization.LayerNorm")
        for c in calls
    )
    gammas = [
        r
        for r in result.report["parameters"]
        if "layernorm" in r["tf_name"] and r["tf_name"].endswith("/gamma")
    ]
    assert len(gammas) == 23
    assert all(r["transform"] == "identity" and r["torch_name"].endswith(".weight") for r in gammas)
