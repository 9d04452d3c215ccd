"""Every Keras variable is its own torch parameter, by construction (issue 10).

Unit level (no TensorFlow): transform labels, fingerprints, the provenance record, the passes
that move variables, and adoption on hand-built graphs whose variables have equal values.
End to end (TF worker): one test per case of the issue's "Why", the layouts Keras layers use,
and a fresh twin of every zoo model; each must pass by default with ``parameter_count.status``
``full`` and every gradient checked.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import pipeline
from pipeline.commands.demo import load_catalog
from pipeline.core import fingerprint, provenance
from pipeline.core.fingerprint import NOT_A_FINGERPRINT, fingerprints_for
from pipeline.core.ort_runner import OrtRunner
from pipeline.core.signature import TensorSpec
from pipeline.core.transforms import apply_transform, describe_index_map
from pipeline.passes.batch_norm import BatchNormPass
from pipeline.passes.transposes import TransposePass
from pipeline.passes.variable_layout import VariableLayoutPass
from pipeline.to_torch.parameters import count_trainable
from pipeline.to_torch.stage import import_torch
from pipeline.verify.report import verdict_of

HERE = Path(__file__).resolve().parent
CASES = HERE / "keras_cases.py"
ZOO_FILE = HERE.parents[1] / "models" / "zoo.py"
FRESH_ZOO = HERE.parents[1] / "models" / "zoo_fresh.py"
ZOO = load_catalog().ZOO


# ------------------------------------------------------------------ labels and fingerprints


@pytest.mark.parametrize(
    ("shape", "label", "target"),
    [
        ((3, 4), "identity", (3, 4)),
        ((3, 4), "transpose(1,0)", (4, 3)),
        ((3, 3, 2, 5), "permute(3,2,0,1)", (5, 2, 3, 3)),  # Conv2D HWIO -> OIHW
        ((3, 3, 3, 4), "permute(2,3,0,1),reshape", (12, 1, 3, 3)),  # depth multiplier 4
        ((4, 8), "transpose(1,0),gates(0,3,1,2)", (8, 4)),  # LSTM kernel, ONNX iofc
        ((32, 4, 8), "permute(1,2,0),reshape", (32, 32)),  # EinsumDense kernel -> Linear
        ((1, 1, 1, 6), "reshape", (6,)),
    ],
)
def test_index_maps_are_named_by_their_label(
    shape: tuple[int, ...], label: str, target: tuple[int, ...]
) -> None:
    index = np.arange(int(np.prod(shape))).reshape(shape)
    moved = apply_transform(index, label, target)
    assert moved.shape == target
    found = describe_index_map(moved, shape)
    assert found is not None
    np.testing.assert_array_equal(apply_transform(index, found, target), moved)


def test_a_row_of_a_stacked_variable_is_named() -> None:
    bias = np.arange(12).reshape(2, 6)  # Keras GRU (2, 3H): input and recurrent biases
    second = apply_transform(bias, "row(1),gates(1,0,2)", (6,))
    assert describe_index_map(second, (2, 6)) == "row(1),gates(1,0,2)"
    assert describe_index_map(np.array([0, 0, 1, 2]), (2, 2)) is None  # not a layout


def test_fingerprints_decode_every_element_and_nothing_else() -> None:
    values = [np.zeros((3, 4), np.float32), np.zeros((3, 4), np.float32), np.ones(5, np.float64)]
    prints = fingerprints_for(values)
    seen = np.concatenate([prints.value(i).reshape(-1).astype(np.float64) for i in range(2)])
    assert np.unique(seen).size == 24  # equal values, different fingerprints
    moved = np.transpose(prints.value(1))
    owner, flat = prints.decode(moved)
    assert np.all(owner == 1)
    np.testing.assert_array_equal(flat, np.arange(12).reshape(3, 4).T)
    owner, flat = prints.decode(prints.value(2))
    assert np.all(owner == 2) and list(flat) == [0, 1, 2, 3, 4]
    computed = prints.value(0) * 2  # a folded value is no fingerprint
    assert np.all(prints.decode(computed)[0] == NOT_A_FINGERPRINT)
    assert np.all(prints.decode(np.zeros(3, np.float32))[0] == NOT_A_FINGERPRINT)


def test_stacked_initializer_decodes_to_regions() -> None:
    """tf2onnx's bidirectional LSTM stacks both directions in one W (and pads B with zeros)."""
    forward, backward = np.zeros((2, 8), np.float32), np.zeros((2, 8), np.float32)
    prints = fingerprints_for([forward, backward])
    w = np.stack(
        [apply_transform(prints.value(i), "transpose(1,0),gates(0,3,1,2)", (8, 2)) for i in (0, 1)]
    )
    parts, problems = provenance.decode_parts(w, prints, ["fw/kernel", "bw/kernel"])
    assert not problems
    assert [(p.variable, p.region) for p in parts] == [
        ("fw/kernel", ((0, 1), (0, 8), (0, 2))),
        ("bw/kernel", ((1, 2), (0, 8), (0, 2))),
    ]
    real = {"fw/kernel": np.arange(16.0).reshape(2, 8), "bw/kernel": -np.arange(16.0).reshape(2, 8)}
    built = provenance.build_value(np.zeros((2, 8, 2)), parts, real)
    np.testing.assert_array_equal(
        built[1, :, 0], apply_transform(real["bw/kernel"], parts[1].transform, (1, 8, 2))[0, :, 0]
    )


# ---------------------------------------------------------------------- hand-built graphs


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: dict[str, np.ndarray],
    record: provenance.Provenance,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        inputs,
        outputs,
        initializer=[numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    provenance.write(model, record)
    return model


def _variables(
    values: dict[str, np.ndarray], trainable: Sequence[str] | None = None
) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    meta = [
        {
            "path": path,
            "shape": list(value.shape),
            "trainable": trainable is None or path in trainable,
            "has_grad": True,
        }
        for path, value in values.items()
    ]
    return meta, list(values.values())


X_SPEC = [TensorSpec("x", "float32", (None, 4))]


def _mlp(values: dict[str, np.ndarray], record: provenance.Provenance) -> onnx.ModelProto:
    nodes = [
        helper.make_node("MatMul", ["x", "d1/kernel"], ["m1"], name="d1/MatMul"),
        helper.make_node("Add", ["m1", "d1/bias"], ["a1"], name="d1/BiasAdd"),
        helper.make_node("Relu", ["a1"], ["r1"], name="d1/Relu"),
        helper.make_node("MatMul", ["r1", "d2/kernel"], ["m2"], name="d2/MatMul"),
        helper.make_node("Add", ["m2", "d2/bias"], ["y"], name="d2/BiasAdd"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        values,
        record,
    )


def test_twin_variables_with_equal_values_are_two_parameters(tmp_path: Path) -> None:
    """Two Dense layers with equal kernels and zero biases: by value they are
    indistinguishable, by provenance each is its own nn.Linear parameter."""
    kernel = np.eye(4, dtype=np.float32)
    values = {
        "d1/kernel": kernel,
        "d1/bias": np.zeros(4, np.float32),
        "d2/kernel": kernel.copy(),
        "d2/bias": np.zeros(4, np.float32),
    }
    record = provenance.Provenance({k: [provenance.Part(k)] for k in values})
    meta, arrays = _variables(values)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    imported = import_torch(
        _mlp(values, record), meta, arrays, [x], X_SPEC, ["y"], tmp_path / "m.pt2"
    )
    rows = {e.tf_name: e for e in imported.parameters}
    assert rows["d1/kernel"].torch_name == "d1.weight"
    assert rows["d2/kernel"].torch_name == "d2.weight"
    assert rows["d1/bias"].torch_name == "d1.bias" and rows["d2/bias"].torch_name == "d2.bias"
    assert {e.transform for e in imported.parameters} == {"transpose(1,0)", "identity"}
    params = dict(imported.module.named_parameters())
    assert set(params) == {"d1.weight", "d1.bias", "d2.weight", "d2.bias"}
    assert all(p.requires_grad and p.grad is None for p in params.values())
    count = count_trainable(imported.module, meta, imported.parameters, imported.problems)
    assert count["status"] == "full" and count["pass"], count


def test_a_folded_variable_fails_the_verdict_by_name(tmp_path: Path) -> None:
    """Two chained scale weights multiplied into one constant (what grappler did): neither
    variable is in the graph any more.  The verdict fails and names both."""
    values = {
        "d1/kernel": np.eye(4, dtype=np.float32),
        "d1/bias": np.zeros(4, np.float32),
        "d2/kernel": np.eye(4, dtype=np.float32),
        "d2/bias": np.zeros(4, np.float32),
        "scale_a/scale": np.full(4, 2.0, np.float32),
        "scale_b/scale": np.full(4, 3.0, np.float32),
    }
    record = provenance.Provenance({k: [provenance.Part(k)] for k in list(values)[:4]})
    record.lost["scale_a/scale"] = "folded into another constant"
    model = _mlp({k: values[k] for k in list(values)[:4]}, record)
    model.graph.initializer.append(numpy_helper.from_array(np.full(4, 6.0, np.float32), "folded"))
    model.graph.node.insert(3, helper.make_node("Mul", ["r1", "folded"], ["r1s"]))
    model.graph.node[4].input[0] = "r1s"  # d2/MatMul reads the scaled activation
    meta, arrays = _variables(values)
    x = np.ones((2, 4), np.float32)
    imported = import_torch(model, meta, arrays, [x], X_SPEC, ["y"], tmp_path / "m.pt2")
    count = count_trainable(imported.module, meta, imported.parameters, imported.problems)
    assert count["status"] == "fail" and not count["pass"]
    named = {p["name"]: p["reason"] for p in count["problems"]}
    assert set(named) == {"scale_a/scale", "scale_b/scale"}
    assert "folded" in named["scale_a/scale"]
    assert "folded" not in dict(imported.module.named_parameters())  # a constant: frozen
    assert verdict_of([_agreeing()], [], count) == "fail"


def _agreeing() -> Any:
    from pipeline.core import compare

    return compare.compare_pair("tf-torch", "y", np.ones(3), np.ones(3), compare.Tolerance(0, 0))


def test_a_wrong_record_is_caught_by_the_value_cross_check() -> None:
    kernel = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    record = provenance.Provenance({"k": [provenance.Part("d/kernel", "transpose(1,0)")]})
    model = _model([], [], [], {"k": kernel.T.copy()}, record)
    assert provenance.check_values(model, record, {"d/kernel": kernel}) == {}
    record.initializers["k"] = [provenance.Part("d/kernel")]  # claims identity: wrong
    assert "k" in provenance.check_values(model, record, {"d/kernel": kernel})


def test_layout_pass_folds_a_conv_kernel_transpose_and_records_it() -> None:
    kernel = np.random.default_rng(0).standard_normal((3, 3, 2, 4)).astype(np.float32)
    record = provenance.Provenance({"conv/kernel": [provenance.Part("conv/kernel")]})
    model = _model(
        [
            helper.make_node("Transpose", ["conv/kernel"], ["w"], perm=[3, 2, 0, 1]),
            helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])],
        {"conv/kernel": kernel},
        record,
    )
    out = VariableLayoutPass().apply(model)
    assert out.changes == 1
    assert [n.op_type for n in out.model.graph.node] == ["Conv"]
    after = provenance.read(out.model)
    assert after is not None
    assert after.initializers["conv/kernel"] == [provenance.Part("conv/kernel", "permute(3,2,0,1)")]
    assert provenance.check_values(out.model, after, {"conv/kernel": kernel}) == {}


def _keras_batchnorm_model(
    scale: bool, center: bool
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """``tf.nn.batch_normalization`` as tf2onnx exports it, after an NCHW→NHWC transpose."""
    rng = np.random.default_rng(1)
    values = {
        "bn/gamma": rng.uniform(0.5, 1.5, 3).astype(np.float32),
        "bn/beta": rng.normal(size=3).astype(np.float32),
        "bn/moving_mean": rng.normal(size=3).astype(np.float32),
        "bn/moving_variance": rng.uniform(0.5, 1.5, 3).astype(np.float32),
    }
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 3, 1]),
        helper.make_node("Add", ["bn/moving_variance", "eps"], ["v"]),
        helper.make_node("Sqrt", ["v"], ["s"]),
        helper.make_node("Reciprocal", ["s"], ["inv"]),
    ]
    factor = "inv"
    if scale:
        nodes.append(helper.make_node("Mul", ["inv", "bn/gamma"], ["factor"]))
        factor = "factor"
    if center:
        nodes += [
            helper.make_node("Mul", ["bn/moving_mean", factor], ["mm"]),
            helper.make_node("Sub", ["bn/beta", "mm"], ["shift"]),
        ]
    else:
        nodes += [
            helper.make_node("Neg", ["bn/moving_mean"], ["neg"]),
            helper.make_node("Mul", ["neg", factor], ["shift"]),
        ]
    nodes += [
        helper.make_node("Mul", ["xt", factor], ["xs"]),
        helper.make_node("Add", ["xs", "shift"], ["y"]),
    ]
    used = {
        k: v for k, v in values.items() if (scale or k != "bn/gamma") and (center or k != "bn/beta")
    }
    record = provenance.Provenance({k: [provenance.Part(k)] for k in used})
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 4, 3])],
        {**used, "eps": np.array(1e-3, np.float32)},
        record,
    )
    return model, used


@pytest.mark.parametrize(("scale", "center"), [(True, True), (False, True), (True, False)])
def test_batch_norm_pass_fuses_keras_form_keeping_its_variables(scale: bool, center: bool) -> None:
    model, used = _keras_batchnorm_model(scale, center)
    out = BatchNormPass().apply(model)
    assert out.changes == 1
    bn = next(n for n in out.model.graph.node if n.op_type == "BatchNormalization")
    eps = next(a for a in bn.attribute if a.name == "epsilon")
    assert eps.f == pytest.approx(1e-3)
    record = provenance.read(out.model)
    assert record is not None
    assert {p.variable for parts in record.initializers.values() for p in parts} == set(used)
    for name in bn.input[1:]:
        assert name not in record.initializers or record.initializers[name][0].variable in used
    x = {"x": np.random.default_rng(2).standard_normal((2, 3, 4, 4)).astype(np.float32)}
    np.testing.assert_allclose(
        OrtRunner(out.model).run(x)["y"], OrtRunner(model).run(x)["y"], atol=1e-5, rtol=1e-5
    )


def test_transposes_cancel_across_layout_free_ops() -> None:
    """NCHW→NHWC, Relu, NHWC→NCHW: the pair goes; the numbers stay."""
    model = _model(
        [
            helper.make_node("Transpose", ["x"], ["a"], perm=[0, 2, 3, 1]),
            helper.make_node("Relu", ["a"], ["b"]),
            helper.make_node("Transpose", ["b"], ["y"], perm=[0, 3, 1, 2]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 4, 5])],
        {},
        provenance.Provenance(),
    )
    # The last Transpose writes a graph output: it moves above the Relu and cancels there.
    out = TransposePass().apply(model)
    assert out.changes > 0
    assert [n.op_type for n in out.model.graph.node].count("Transpose") <= 1
    x = {"x": np.random.default_rng(3).standard_normal((2, 3, 4, 5)).astype(np.float32)}
    np.testing.assert_array_equal(OrtRunner(out.model).run(x)["y"], OrtRunner(model).run(x)["y"])


# -------------------------------------------------------------------------- end to end


def assert_trainable_like_keras(result: pipeline.ConversionResult) -> dict[str, dict[str, Any]]:
    """The verdict passes, every Keras variable is exactly one torch tensor (trainable ones a
    trainable parameter), every gradient is checked and agrees, and the module's
    ``requires_grad`` flags are the table's.  Returns the table by TF name (first row)."""
    report = result.report
    count = report["parameter_count"]
    assert result.verdict == "pass", (count, [c for c in report["comparisons"] if not c["pass"]])
    assert count["status"] == "full" and count["pass"] and not count["problems"], count
    assert count["tf_trainable"] == count["torch_trainable"] > 0, count
    rows = report["parameters"]
    assert all(r["torch_name"] and r["transform"] != "unmapped" for r in rows), rows
    trainable = {r["tf_name"] for r in rows if r["tf_name"] and r["trainable"]}
    gradients = report["gradients"]
    assert {g["tf_name"] for g in gradients} == trainable
    assert all(g["checked"] and g["pass"] for g in gradients), gradients
    params = dict(result.module.named_parameters())
    # Exactly the trainable rows train: frozen rows and constants that a torch class keeps
    # as a parameter (LayerNorm's bias without Keras's ``center``) do not.
    trains = {r["torch_name"] for r in rows if r["trainable"]}
    for name, parameter in params.items():
        assert parameter.requires_grad == (name in trains), name
        assert parameter.grad is None, name
    torch_trainable = {n for n, p in params.items() if p.requires_grad}
    assert torch_trainable == {r["torch_name"] for r in rows if r["trainable"]}
    by_tf: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["tf_name"]:
            by_tf.setdefault(row["tf_name"], row)
    return by_tf


def _convert(source: str, out: Path, **options: Any) -> pipeline.ConversionResult:
    return pipeline.convert(source, out, pipeline.ConvertOptions(**options))


def test_two_scale_layers_after_a_conv_stay_two(tmp_path: Path) -> None:
    rows = assert_trainable_like_keras(_convert(f"{CASES}:two_scales_after_conv", tmp_path / "r"))
    assert (
        rows["scale_a/scale"]["torch_name"] == "scale_a.scale"
        and rows["scale_a/scale"]["trainable"]
    )
    assert rows["scale_b/scale"]["torch_name"] == "scale_b.scale"
    assert not rows["scale_b/scale"]["trainable"]
    assert rows["conv/kernel"]["transform"] == "permute(3,2,0,1)"


def test_fresh_twin_layernorms_and_zero_biases(tmp_path: Path) -> None:
    rows = assert_trainable_like_keras(_convert(f"{CASES}:twin_layernorms", tmp_path / "r"))
    assert rows["ln_a/gamma"]["torch_name"] == "ln_a.weight"
    assert rows["ln_b/gamma"]["torch_name"] == "ln_b.weight"
    assert rows["d1/bias"]["torch_name"] == "d1.bias" and rows["d2/bias"]["torch_name"] == "d2.bias"


def test_fresh_bidirectional_lstm(tmp_path: Path) -> None:
    result = _convert(f"{CASES}:fresh_bilstm", tmp_path / "r")
    rows = assert_trainable_like_keras(result)
    forward, backward = (
        rows[f"bilstm/{d}_lstm/lstm_cell/bias"]["torch_name"] for d in ("forward", "backward")
    )
    assert forward.endswith("bias_ih_l0") and backward.endswith("bias_ih_l0_reverse")
    slots = [r for r in result.report["parameters"] if r["tf_name"] is None]
    assert len(slots) == 2 and all(not r["trainable"] for r in slots)


def test_depthwise_conv_with_depth_multiplier_4(tmp_path: Path) -> None:
    rows = assert_trainable_like_keras(_convert(f"{CASES}:depth_multiplier_4", tmp_path / "r"))
    assert rows["dw/kernel"]["torch_name"] == "dw.weight"
    assert rows["dw/kernel"]["shape"] == [12, 1, 3, 3]
    assert rows["dw/kernel"]["transform"] == "permute(2,3,0,1),reshape"
    assert rows["dw/bias"]["torch_name"] == "dw.bias"


@pytest.mark.slow  # the corpus's ConvNeXt networks have it too
def test_fresh_convnext_block_with_layer_scale(tmp_path: Path) -> None:
    rows = assert_trainable_like_keras(_convert(f"{CASES}:convnext_block", tmp_path / "r"))
    assert rows["ln/gamma"]["torch_name"] == "ln.weight"
    assert rows["ln/beta"]["torch_name"] == "ln.bias"
    assert rows["dwconv/bias"]["torch_name"] == "dwconv.bias"
    assert rows["layer_scale/scale"]["torch_name"] == "layer_scale.scale"


@pytest.mark.slow  # the corpus's DenseNets have it too
def test_densenet_style_batchnorm_relu_conv(tmp_path: Path) -> None:
    rows = assert_trainable_like_keras(_convert(f"{CASES}:densenet_block", tmp_path / "r"))
    assert rows["bn/gamma"]["torch_name"] == "bn.weight"
    assert rows["bn/moving_mean"]["torch_name"] == "bn.running_mean"
    assert rows["bn2/moving_variance"]["torch_name"] == "bn2.running_var"
    assert rows["conv/kernel"]["torch_name"] == "conv.weight"
    assert rows["bn/gamma"]["note"] == "BatchNorm2d(eps=0.001, momentum=0.01)"


def test_separable_conv_then_batchnorm(tmp_path: Path) -> None:
    rows = assert_trainable_like_keras(_convert(f"{CASES}:separable_bn", tmp_path / "r"))
    assert rows["sep/depthwise_kernel"]["torch_name"] == "sep.depthwise.weight"
    assert rows["sep/depthwise_kernel"]["transform"] == "permute(2,3,0,1),reshape"
    assert rows["sep/pointwise_kernel"]["torch_name"] == "sep.pointwise.weight"
    assert rows["sep/bias"]["torch_name"] == "sep.pointwise.bias"
    assert rows["bn/gamma"]["torch_name"] == "bn.weight"


def test_convolution_layouts(tmp_path: Path) -> None:
    rows = assert_trainable_like_keras(_convert(f"{CASES}:conv_1d_3d_transposed", tmp_path / "r"))
    assert rows["c3/kernel"]["transform"] == "permute(4,3,0,1,2)"
    assert (
        rows["t2/kernel"]["transform"] == "permute(3,2,0,1)"
    )  # (out, in) swapped: (in, out, h, w)
    for layer in ("c1", "c3", "t2", "t1"):
        kernel, bias = rows[f"{layer}/kernel"]["torch_name"], rows[f"{layer}/bias"]["torch_name"]
        assert kernel.rpartition(".")[0] == bias.rpartition(".")[0], (kernel, bias)  # one module


def test_normalisation_prelu_and_embedding_layouts(tmp_path: Path) -> None:
    result = _convert(f"{CASES}:norms_and_prelu", tmp_path / "r", input_ranges={"tokens": (0, 20)})
    rows = assert_trainable_like_keras(result)
    assert rows["embedding/embeddings"]["transform"] == "identity"
    assert rows["ln_no_center/gamma"]["torch_name"] == "ln_no_center.weight"
    assert rows["bn_no_scale/beta"]["torch_name"] == "bn_no_scale.bias"
    assert rows["bn_no_center/gamma"]["torch_name"] == "bn_no_center.weight"
    for name in ("ln_no_scale/beta", "ln_rms/gamma", "gn/gamma", "gn/beta", "prelu/alpha"):
        assert rows[name]["torch_name"].startswith(name.split("/")[0] + "."), rows[name]


def test_multi_head_attention_einsum_kernels_are_linear(tmp_path: Path) -> None:
    rows = assert_trainable_like_keras(_convert(f"{CASES}:multi_head_attention", tmp_path / "r"))
    assert rows["mha/query/kernel"]["torch_name"] == "mha.query.weight"
    assert rows["mha/query/kernel"]["transform"] == "permute(1,2,0),reshape"
    assert rows["mha/query/bias"]["torch_name"] == "mha.query.bias"
    assert rows["mha/query/bias"]["transform"] == "reshape"
    assert rows["mha/attention_output/kernel"]["transform"] == "permute(2,0,1),reshape"


def test_a_layer_called_twice_is_one_parameter(tmp_path: Path) -> None:
    result = _convert(f"{CASES}:shared_dense", tmp_path / "r")
    rows = assert_trainable_like_keras(result)
    assert rows["shared/kernel"]["torch_name"] == "shared.weight"
    assert set(dict(result.module.named_parameters())) == {"shared.weight", "shared.bias"}


def test_fold_for_inference_lists_what_it_folded(tmp_path: Path) -> None:
    result = _convert(f"{CASES}:separable_bn", tmp_path / "r", fold_for_inference=True)
    report = result.report
    assert report["inference_only"] is True
    count = report["parameter_count"]
    assert count["status"] == "inference-only" and count["pass"], count
    assert result.verdict == "pass"
    folded = {r["tf_name"]: r["note"] for r in report["parameters"] if r["transform"] == "unmapped"}
    assert set(folded) >= {"bn/gamma", "bn/beta", "bn/moving_mean", "bn/moving_variance"}
    assert all(note.startswith("folded into Conv") for note in folded.values()), folded
    assert not any(
        n.op_type == "BatchNormalization"
        for n in onnx.load(str(result.run_dir / "model.onnx")).graph.node
    )


def test_dict_inputs_as_keras_hub_models_have_them(tmp_path: Path) -> None:
    result = _convert(
        f"{CASES}:dict_inputs",
        tmp_path / "r",
        input_ranges={"token_ids": (0, 30), "padding_mask": (0, 2)},
    )
    assert_trainable_like_keras(result)
    assert {i["name"] for i in result.report["inputs"]} == {"token_ids", "padding_mask"}


@pytest.mark.slow  # --keep-batchnorm is the default: the zoo covers it
def test_keep_batchnorm_is_accepted_and_changes_nothing(tmp_path: Path) -> None:
    result = _convert(f"{CASES}:densenet_block", tmp_path / "r", keep_batchnorm=True)
    assert_trainable_like_keras(result)


@pytest.fixture(scope="module")
def conv_bn_saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zoo's Conv → BatchNorm model as a SavedModel (built in a subprocess: TensorFlow)."""
    path = tmp_path_factory.mktemp("saved") / "conv_bn"
    script = (
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('zoo', {str(ZOO_FILE)!r})\n"
        "zoo = importlib.util.module_from_spec(spec); spec.loader.exec_module(zoo)\n"
        f"zoo.conv_bn_dropout().export({str(path)!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=300)
    return path


def test_saved_model_variables_are_graph_inputs_not_folded(
    conv_bn_saved_model: Path, tmp_path: Path
) -> None:
    """A SavedModel's serving signature is exported with its variables as graph inputs
    (route ``signature+variables``): TF cannot fold its BatchNorm, so every variable is named
    in the table and the run passes in full (it used to be frozen, BatchNorm folded and the
    verdict failed on the folded variables)."""
    result = _convert(str(conv_bn_saved_model), tmp_path / "r")
    count = result.report["parameter_count"]
    assert count["export_route"] == "signature+variables"
    assert result.verdict == "pass" and count["status"] == "full", count
    rows = {r["tf_name"]: r for r in result.report["parameters"]}
    for name in ("bn/gamma", "bn/beta", "bn/moving_mean", "bn/moving_variance"):
        assert rows[name]["torch_name"], rows[name]
    assert all(g["pass"] and g["checked"] for g in result.report["gradients"])


FRESH_DEFAULT = ("cnn", "bidirectional_lstm", "multi_head_attention")
"""Fresh twins the default suite converts (a convolution, fingerprinted recurrent weights,
einsum kernels); every other zoo model's twin is in the slow suite."""


def _fresh(name: str) -> list[Any]:
    slow = ZOO[name].slow or name not in FRESH_DEFAULT
    return [pytest.param(name, marks=[pytest.mark.slow] if slow else [], id=name)]


@pytest.mark.parametrize(
    "name", [p for name, e in ZOO.items() if e.expected == "pass" for p in _fresh(name)]
)
def test_fresh_twin_of_every_zoo_model(name: str, tmp_path: Path) -> None:
    """The zoo model as Keras builds it (zero biases, identity normalisations, twins of equal
    values everywhere) converts with every variable its own parameter."""
    entry = ZOO[name]
    result = _convert(f"{FRESH_ZOO}:{name}", tmp_path / name, input_ranges=dict(entry.input_ranges))
    assert_trainable_like_keras(result)


@pytest.mark.parametrize("chunk", [1, 5, 7, 2**22])
def test_fingerprints_decode_the_same_in_chunks(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    """Decoded a chunk at a time (an LLM's embedding at once would be several copies of it):
    the same owners and indices, whatever the chunk, on a tensor mixing two variables, a
    computed value and a transposed (non-contiguous) view."""
    values = [np.zeros((3, 4), np.float32), np.zeros((2, 5), np.float32)]
    prints = fingerprints_for(values)
    mixed = np.concatenate(
        [prints.value(0).reshape(-1), prints.value(1).reshape(-1)[::-1], np.float32([0.5, 2.0])]
    ).reshape(4, 6)
    monkeypatch.setattr(fingerprint, "DECODE_CHUNK", chunk)
    owner, flat = prints.decode(mixed)
    assert owner.shape == flat.shape == (4, 6)
    np.testing.assert_array_equal(np.asarray(owner).reshape(-1), [0] * 12 + [1] * 10 + [-1, -1])
    np.testing.assert_array_equal(
        np.asarray(flat).reshape(-1), [*range(12), *range(9, -1, -1), -1, -1]
    )
    owner, flat = prints.decode(np.transpose(prints.value(0)))
    np.testing.assert_array_equal(flat, np.arange(12).reshape(3, 4).T)


def test_float32_fingerprints_reach_past_a_billion_elements() -> None:
    """A 1.1-billion-parameter model has more float32 elements than the positive bit
    patterns from 2**20 up hold: the count goes on with the same magnitudes negative, every
    element still its own finite float that decodes to itself."""
    prints = fingerprint.Fingerprints([(1_000_000_000,), (800_000_000,), (6,)], ["float32"] * 3)
    assert all(prints.supported(i) for i in range(3))
    tail = prints.value(2)
    assert np.all(np.isfinite(tail)) and np.all(tail < 0) and np.unique(tail).size == 6
    owner, flat = prints.decode(tail[::-1])
    assert np.all(owner == 2) and list(flat) == [5, 4, 3, 2, 1, 0]
    assert np.all(prints.decode(-tail)[0] != 2)  # the positive twins are other elements
    too_many = fingerprint.Fingerprints([(1_900_000_000,)], ["float32"])
    assert not too_many.supported(0)


def test_a_constant_equal_to_a_fingerprint_is_not_taken_for_the_variable() -> None:
    """Past a billion float32 elements a graph constant can equal a fingerprint (keras-hub's
    -1e9 attention mask value did, in the 1.1B Llama): a tensor smaller than any holding of
    that variable is a constant, left as it is, not a piece of the variable."""
    from pipeline.to_torch.parameters import _decoded

    prints = fingerprints_for([np.zeros((4, 6), np.float32)])
    module = torch.nn.Module()
    module.weight = torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(prints.value(0).T)))
    module.register_buffer("mask_value", torch.tensor(prints.value(0)[1, 2]))
    found, mixed = _decoded(module, prints)
    assert [slot.name for slot in found] == ["weight"] and not mixed
