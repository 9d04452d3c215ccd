"""Import stage: ONNX → torch module → ``torch.export`` program with a dynamic batch dim.

Every check runs ONNX Runtime (CPU provider) on the same ONNX model and compares it with the
torch module, eagerly and through the exported-and-reloaded program at batch 1 and batch 3
(the program is traced at batch 2, so batch 1 and 3 only work if the batch dim is dynamic).
Keras models are exported to ONNX in a subprocess: TensorFlow never enters this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from pipeline.core.errors import ExportError, UnsupportedOpsError
from pipeline.to_torch.importer import (
    export_program,
    find_unsupported_ops,
    import_onnx,
    load_program,
)

ATOL = 1e-5
"""Max abs error allowed between ONNX Runtime and torch on the small graphs (O(1) values)."""

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min

# onnx2torch modules that read shapes/axes from tensors at run time; none may survive import
# of a graph whose such inputs are constants or shape arithmetic.
RUNTIME_SHAPE_MODULES = {
    "OnnxReshape",
    "OnnxSlice",
    "OnnxSqueezeDynamicAxes",
    "OnnxUnsqueezeDynamicAxes",
    "OnnxExpand",
    "OnnxTile",
    "OnnxConstantOfShape",
    "OnnxResize",
    "OnnxPadDynamic",
    "OnnxSplit13",
    "OnnxRange",
    "OnnxCumSum",
    "OnnxTopK",
    "OnnxShape",
    "OnnxReduceSumDynamicAxes",
}


# --- helpers --------------------------------------------------------------------------------


def _ints(name: str, values: Sequence[int] | int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def _floats(name: str, values: Sequence[float] | float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, dtype=np.float32), name)


def _model(
    nodes: list[onnx.NodeProto],
    outputs: Sequence[str],
    initializers: Sequence[onnx.TensorProto] = (),
    input_shape: Sequence[int | str] = ("N", 4, 6),
    int_outputs: Sequence[str] = (),
) -> onnx.ModelProto:
    """A checked opset-17 model with one float input ``x`` of ``input_shape``; outputs are
    float unless named in ``int_outputs`` (int64)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))
    graph = helper.make_graph(
        nodes,
        "test",
        [x],
        [
            x
            if o == "x"
            else helper.make_tensor_value_info(
                o, TensorProto.INT64 if o in int_outputs else TensorProto.FLOAT, None
            )
            for o in outputs
        ],
        initializer=list(initializers),
    )
    # onnx 1.23 writes IR 14 by default; ONNX Runtime 1.31 reads at most 13.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def _run_ort(model: onnx.ModelProto, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return [np.asarray(o) for o in session.run(None, dict(zip(names, inputs, strict=True)))]


def _run_torch(module: torch.nn.Module, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        result = module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs))
    outputs = list(result) if isinstance(result, tuple | list) else [result]
    return [o.numpy() for o in outputs]


def _max_abs_error(expected: Sequence[np.ndarray], actual: Sequence[np.ndarray]) -> float:
    assert len(expected) == len(actual)
    worst = 0.0
    for e, a in zip(expected, actual, strict=True):
        assert e.shape == a.shape, (e.shape, a.shape)
        assert e.dtype == a.dtype, (e.dtype, a.dtype)
        worst = max(worst, float(np.max(np.abs(e.astype(np.float64) - a), initial=0.0)))
    return worst


def _check_import_and_export(
    model: onnx.ModelProto,
    make_inputs: Callable[[int], list[np.ndarray]],
    tmp_path: Path,
    atol: float,
) -> dict[str, float]:
    """Import, export at batch 1, reload, and compare with ORT; returns max abs errors."""
    module = import_onnx(model)
    leftovers = {type(m).__name__ for m in module.modules()} & RUNTIME_SHAPE_MODULES
    assert not leftovers, f"run-time shape modules left after import: {leftovers}"

    errors = {
        "eager": _max_abs_error(_run_ort(model, make_inputs(3)), _run_torch(module, make_inputs(3)))
    }
    path = tmp_path / "model.pt2"
    export_program(module, make_inputs(1), path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt2"], "temp file left behind"
    program = load_program(path)
    for batch in (1, 3):
        inputs = make_inputs(batch)
        errors[f"batch{batch}"] = _max_abs_error(
            _run_ort(model, inputs), _run_torch(program, inputs)
        )
    assert max(errors.values()) <= atol, errors
    return errors


def _float_inputs(shape: Sequence[int]) -> Callable[[int], list[np.ndarray]]:
    def make(batch: int) -> list[np.ndarray]:
        rng = np.random.default_rng(batch)
        return [rng.standard_normal((batch, *shape)).astype(np.float32)]

    return make


# --- small graphs, one per converter ----------------------------------------------------------


def _shape_prefix(n: int, name: str = "prefix") -> list[onnx.NodeProto]:
    """``name`` = Shape(x)[:n], the way tf2onnx computes it (Shape → Cast → Slice)."""
    return [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Cast", ["shape"], ["shape32"], to=TensorProto.INT32),
        helper.make_node("Slice", ["shape32", "zero", f"n{n}", "zero"], [f"{name}32"]),
        helper.make_node("Cast", [f"{name}32"], [name], to=TensorProto.INT64),
    ]


def _zero_n(n: int) -> list[onnx.TensorProto]:
    return [
        numpy_helper.from_array(np.array([0], np.int32), "zero"),
        numpy_helper.from_array(np.array([n], np.int32), f"n{n}"),
    ]


def reshape_from_shape_chain() -> onnx.ModelProto:
    # tf2onnx's Flatten: Reshape(x, Concat(Shape(x)[:1], [-1])).
    return _model(
        [
            *_shape_prefix(1),
            helper.make_node("Concat", ["prefix", "minus1"], ["target"], axis=0),
            helper.make_node("Reshape", ["x", "target"], ["y"]),
        ],
        ["y"],
        [*_zero_n(1), _ints("minus1", [-1])],
    )


def reshape_zero_copies_dim() -> onnx.ModelProto:
    return _model(
        [helper.make_node("Reshape", ["x", "target"], ["y"])],
        ["y"],
        [_ints("target", [0, 2, -1, 3])],
    )


def reshape_computed_dims() -> onnx.ModelProto:
    # [N, 4, 6] -> [N * 4, 6] with the product computed by ReduceProd over Shape(x)[:2].
    return _model(
        [
            *_shape_prefix(2),
            helper.make_node("ReduceProd", ["prefix"], ["rows"], keepdims=1),
            helper.make_node("Concat", ["rows", "six"], ["target"], axis=0),
            helper.make_node("Reshape", ["x", "target"], ["y"]),
        ],
        ["y"],
        [*_zero_n(2), _ints("six", [6])],
    )


def slice_constant() -> onnx.ModelProto:
    return _model(
        [helper.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"])],
        ["y"],
        [_ints("s", [1, 0]), _ints("e", [INT64_MAX, 5]), _ints("a", [1, -1]), _ints("st", [1, 2])],
    )


def slice_negative_step() -> onnx.ModelProto:
    return _model(
        [helper.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"])],
        ["y"],
        [
            _ints("s", [-1, 2]),
            _ints("e", [INT64_MIN, 0]),
            _ints("a", [2, 1]),
            _ints("st", [-2, -1]),
        ],
    )


def slice_end_from_shape() -> onnx.ModelProto:
    # x[:N, :, 1:W - 1] with both ends computed from Shape(x), the batch one symbolic.
    return _model(
        [
            *_shape_prefix(1),
            helper.make_node("Gather", ["shape", "two"], ["width"], axis=0),
            helper.make_node("Sub", ["width", "one"], ["last"]),
            helper.make_node("Concat", ["prefix", "last"], ["ends"], axis=0),
            helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"]),
        ],
        ["y"],
        [
            *_zero_n(1),
            _ints("two", [2]),
            _ints("one", [1]),
            _ints("starts", [0, 1]),
            _ints("axes", [0, 2]),
        ],
    )


def squeeze_unsqueeze() -> onnx.ModelProto:
    return _model(
        [
            helper.make_node("Unsqueeze", ["x", "axes_u"], ["u"]),
            helper.make_node("Squeeze", ["u", "axes_s"], ["y"]),
        ],
        ["y"],
        [_ints("axes_u", [-1, 1]), _ints("axes_s", [-1])],
    )


def expand_to_batch() -> onnx.ModelProto:
    return _model(
        [
            *_shape_prefix(1),
            helper.make_node("Concat", ["prefix", "rest"], ["target"], axis=0),
            helper.make_node("Expand", ["bias", "target"], ["b"]),
            helper.make_node("Add", ["x", "b"], ["y"]),
        ],
        ["y"],
        [*_zero_n(1), _ints("rest", [1, 6]), _floats("bias", [[0.5], [-1.0], [2.0], [0.0]])],
    )


def tile_constant() -> onnx.ModelProto:
    return _model([helper.make_node("Tile", ["x", "r"], ["y"])], ["y"], [_ints("r", [1, 2, 3])])


def constant_of_shape_from_shape() -> onnx.ModelProto:
    return _model(
        [
            helper.make_node("Shape", ["x"], ["shape"]),
            helper.make_node(
                "ConstantOfShape",
                ["shape"],
                ["c"],
                value=helper.make_tensor("v", TensorProto.FLOAT, [1], [2.5]),
            ),
            helper.make_node("Mul", ["x", "c"], ["y"]),
        ],
        ["y"],
    )


def range_from_shape() -> onnx.ModelProto:
    # Position ids: Range(0, Shape(x)[2], 1) added to every row.
    return _model(
        [
            helper.make_node("Shape", ["x"], ["shape"]),
            helper.make_node("Gather", ["shape", "two"], ["width"], axis=0),
            helper.make_node("Range", ["start", "width", "step"], ["r"]),
            helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["x", "rf"], ["y"]),
        ],
        ["y"],
        [_ints("two", 2), _ints("start", 0), _ints("step", 1)],
    )


def split_constant() -> onnx.ModelProto:
    return _model(
        [helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1)],
        ["a", "b"],
        [_ints("sizes", [1, 3])],
    )


def reduce_sum_axes() -> onnx.ModelProto:
    return _model(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)],
        ["y"],
        [_ints("axes", [-1])],
    )


def pad_constant() -> onnx.ModelProto:
    return _model(
        [helper.make_node("Pad", ["x", "pads", "value"], ["y"])],
        ["y"],
        [_ints("pads", [0, 1, 0, 0, 0, 2]), _floats("value", 0.5)],
    )


def cumsum_exclusive_reverse() -> onnx.ModelProto:
    return _model(
        [
            helper.make_node("CumSum", ["x", "axis"], ["y"], exclusive=1, reverse=1),
            helper.make_node("CumSum", ["x", "axis"], ["z"]),
        ],
        ["y", "z"],
        [_ints("axis", 1)],
    )


def topk_constant() -> onnx.ModelProto:
    return _model(
        [helper.make_node("TopK", ["x", "k"], ["values", "indices"], axis=-1)],
        ["values", "indices"],
        [_ints("k", [3])],
        int_outputs=["indices"],
    )


def resize_scales() -> onnx.ModelProto:
    return _model(
        [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear")],
        ["y"],
        [_floats("scales", [1, 1, 2, 1.5])],
        input_shape=("N", 2, 4, 6),
    )


def resize_sizes_from_shape() -> onnx.ModelProto:
    return _model(
        [
            *_shape_prefix(2),
            helper.make_node("Concat", ["prefix", "hw"], ["sizes"], axis=0),
            helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear"),
        ],
        ["y"],
        [*_zero_n(2), _ints("hw", [7, 3])],
        input_shape=("N", 2, 4, 6),
    )


def outputs_in_graph_order() -> onnx.ModelProto:
    # A graph input passed straight through and one output of a multi-output node: raw
    # onnx2torch gets both wrong.
    return _model(
        [
            helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1),
            helper.make_node("Relu", ["a"], ["r"]),
        ],
        ["b", "x", "r"],
        [_ints("sizes", [1, 3])],
    )


SMALL_GRAPHS: list[Callable[[], onnx.ModelProto]] = [
    reshape_from_shape_chain,
    reshape_zero_copies_dim,
    reshape_computed_dims,
    slice_constant,
    slice_negative_step,
    slice_end_from_shape,
    squeeze_unsqueeze,
    expand_to_batch,
    tile_constant,
    constant_of_shape_from_shape,
    range_from_shape,
    split_constant,
    reduce_sum_axes,
    pad_constant,
    cumsum_exclusive_reverse,
    topk_constant,
    resize_scales,
    resize_sizes_from_shape,
    outputs_in_graph_order,
]


@pytest.mark.parametrize("build", SMALL_GRAPHS, ids=lambda f: f.__name__)
def test_small_graph_matches_ort_and_exports_with_dynamic_batch(
    build: Callable[[], onnx.ModelProto], tmp_path: Path
) -> None:
    model = build()
    assert find_unsupported_ops(model) == {}
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    _check_import_and_export(model, _float_inputs(shape), tmp_path, ATOL)


def test_several_outputs_come_back_as_a_tuple_in_graph_order() -> None:
    model = outputs_in_graph_order()
    x = _float_inputs([4, 6])(2)[0]
    result = import_onnx(model)(torch.from_numpy(x))
    assert isinstance(result, tuple)
    assert [tuple(t.shape) for t in result] == [(2, 3, 6), (2, 4, 6), (2, 1, 6)]
    np.testing.assert_array_equal(result[1].numpy(), x)


# --- unsupported ops --------------------------------------------------------------------------


def _unchecked_model(
    nodes: list[onnx.NodeProto], extra_opsets: Sequence[tuple[str, int]] = ()
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, 4])],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
    )
    opsets = [helper.make_opsetid("", 17)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def test_all_unsupported_ops_are_reported_at_once() -> None:
    model = _unchecked_model(
        [
            helper.make_node("FooBar", ["x"], ["f1"], name="foo_1"),
            helper.make_node("Relu", ["f1"], ["r"], name="relu"),
            helper.make_node("Hardmax", ["r"], ["l"], name="hardmax"),
            helper.make_node("FooBar", ["l"], ["f2"], name="foo_2"),
            helper.make_node("Gizmo", ["f2"], ["g"], name="gizmo", domain="com.acme"),
        ],
        extra_opsets=[("com.acme", 1)],
    )
    expected = {"FooBar": ["foo_1", "foo_2"], "Hardmax": ["hardmax"], "com.acme::Gizmo": ["gizmo"]}
    assert find_unsupported_ops(model) == expected
    with pytest.raises(UnsupportedOpsError) as info:
        import_onnx(model)
    assert info.value.stage == "import"
    assert info.value.ops == expected
    message = str(info.value)
    assert "\n" not in message
    assert "FooBar x2 (foo_1, foo_2)" in message
    assert "Hardmax x1 (hardmax)" in message


def test_unsupported_ops_inside_subgraphs_are_found() -> None:
    branch = helper.make_graph(
        [helper.make_node("FooBar", ["x"], ["t"], name="inner_foo")],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)],
    )
    identity = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["e"], name="inner_identity")],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)],
    )
    model = _unchecked_model(
        [
            helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0, name="max"),
            helper.make_node("Greater", ["m", "m"], ["c"], name="cond"),
            helper.make_node(
                "If", ["c"], ["y"], then_branch=branch, else_branch=identity, name="if"
            ),
        ]
    )
    assert find_unsupported_ops(model) == {"If": ["if"], "FooBar": ["inner_foo"]}


# --- Keras models, exported to ONNX in a subprocess -------------------------------------------

_KERAS_EXPORT_SCRIPT = textwrap.dedent(
    '''
    """Build seeded Keras models and export each to <out>/<name>.onnx with tf2onnx."""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf, keras, onnx, tf2onnx
    from keras.src.backend.tensorflow import nn as tf_nn

    def conv_without_xla(inputs, kernel, strides=1, padding="valid", data_format=None,
                         dilation_rate=1):
        # Keras 3 runs grouped convolutions through tf.function(jit_compile=True) on CPU,
        # which tf2onnx leaves as an unconverted StatefulPartitionedCall (ConvNeXt's
        # depthwise convs).  Export only traces, so call tf.nn.convolution directly.
        data_format = data_format or keras.config.image_data_format()
        return tf.nn.convolution(
            inputs, kernel, strides, padding.upper(),
            data_format=tf_nn._convert_data_format(data_format, len(inputs.shape)),
            dilations=dilation_rate)

    tf_nn.conv = conv_without_xla
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    L = keras.layers

    def perturb_constant_variables(model):
        # Zero biases, unit LayerNorm/BatchNorm scales and statistics, ConvNeXt's 1e-6 layer
        # scale: give them seeded noise so every weight matters to the output.
        for v in model.weights:
            a = np.asarray(v.numpy())
            if a.size and np.all(a == a.reshape(-1)[0]):
                noisy = a + rng.normal(0, 0.1, a.shape)
                v.assign((np.abs(noisy) if "variance" in v.path else noisy).astype(a.dtype))

    def build(name):
        if name == "mlp":
            x = keras.Input((20,), name="x")
            y = L.Dense(10)(L.Dense(32, activation="relu")(x))
            return keras.Model(x, y), (None, 20), tf.float32
        if name == "cnn":
            x = keras.Input((28, 28, 1), name="x")
            h = L.MaxPooling2D()(L.Conv2D(8, 3, activation="relu")(x))
            return keras.Model(x, L.Dense(10)(L.Flatten()(h))), (None, 28, 28, 1), tf.float32
        if name == "mha":
            x = keras.Input((6, 16), name="x")
            a = L.MultiHeadAttention(num_heads=2, key_dim=8)(x, x)
            y = L.Dense(4)(L.LayerNormalization()(x + a))
            return keras.Model(x, y), (None, 6, 16), tf.float32
        if name == "embedding":
            x = keras.Input((7,), dtype="int32", name="x")
            h = L.GlobalAveragePooling1D()(L.Embedding(50, 8, embeddings_initializer=keras.initializers.RandomNormal(
                stddev=1.0, seed=0))(x))
            return keras.Model(x, L.Dense(3)(h)), (None, 7), tf.int32
        if name == "lstm":
            x = keras.Input((5, 4), name="x")
            return keras.Model(x, L.LSTM(64)(x)), (None, 5, 4), tf.float32
        if name == "mobilenetv2":
            m = keras.applications.MobileNetV2(
                weights=None, input_shape=(96, 96, 3), classifier_activation=None)
            return m, (None, 96, 96, 3), tf.float32
        if name == "convnext_tiny":
            m = keras.applications.ConvNeXtTiny(
                weights=None, input_shape=(64, 64, 3), classifier_activation=None)
            return m, (None, 64, 64, 3), tf.float32
        raise ValueError(name)

    out = sys.argv[1]
    for name in sys.argv[2:]:
        model, shape, dtype = build(name)
        perturb_constant_variables(model)
        proto, _ = tf2onnx.convert.from_keras(
            model, input_signature=[tf.TensorSpec(shape, dtype, name="x")], opset=17)
        proto.ir_version = 10  # ONNX Runtime 1.31 reads at most IR 13
        onnx.save(proto, os.path.join(out, name + ".onnx"))
    '''
)


def _export_keras(out_dir: Path, names: Sequence[str]) -> dict[str, Path]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-c", _KERAS_EXPORT_SCRIPT, str(out_dir), *names],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {name: out_dir / f"{name}.onnx" for name in names}


@pytest.fixture(scope="session")
def keras_onnx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small Keras models as tf2onnx ONNX files, made in one TensorFlow subprocess."""
    return _export_keras(
        tmp_path_factory.mktemp("keras_onnx"), ["mlp", "cnn", "mha", "embedding", "lstm"]
    )


@pytest.fixture(scope="session")
def large_keras_onnx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """MobileNetV2 and ConvNeXtTiny as tf2onnx ONNX files (about a minute)."""
    return _export_keras(
        tmp_path_factory.mktemp("large_keras_onnx"), ["mobilenetv2", "convnext_tiny"]
    )


def _keras_inputs(model: onnx.ModelProto) -> Callable[[int], list[np.ndarray]]:
    tensor_type = model.graph.input[0].type.tensor_type
    shape = [d.dim_value for d in tensor_type.shape.dim[1:]]

    def make(batch: int) -> list[np.ndarray]:
        rng = np.random.default_rng(batch)
        if tensor_type.elem_type == TensorProto.INT32:
            return [rng.integers(0, 50, (batch, *shape)).astype(np.int32)]
        return [rng.standard_normal((batch, *shape)).astype(np.float32)]

    return make


@pytest.mark.parametrize("name", ["mlp", "cnn", "mha", "embedding", "lstm"])
def test_keras_model_matches_ort_and_exports_with_dynamic_batch(
    name: str, keras_onnx: dict[str, Path], tmp_path: Path
) -> None:
    model = onnx.load(keras_onnx[name])
    assert find_unsupported_ops(model) == {}
    reference = _run_ort(model, _keras_inputs(model)(3))[0]
    assert np.abs(reference).max() > 0.1, "weak test: outputs near zero"
    _check_import_and_export(model, _keras_inputs(model), tmp_path, ATOL)


def test_keras_lstm_becomes_nn_lstm(keras_onnx: dict[str, Path]) -> None:
    module = import_onnx(onnx.load(keras_onnx["lstm"]))
    lstms = [m for m in module.modules() if isinstance(m, torch.nn.LSTM)]
    assert len(lstms) == 1 and lstms[0].hidden_size == 64
    assert all(p.requires_grad for p in lstms[0].parameters())


def _replace_erfc(model: onnx.ModelProto) -> onnx.ModelProto:
    """Erfc(x) → Sub(1, Erf(x)): a stand-in for pipeline/passes/erfc.py in this test."""
    nodes = []
    for node in model.graph.node:
        if node.op_type != "Erfc":
            nodes.append(node)
            continue
        one, erf = f"{node.name}__one", f"{node.name}__erf"
        model.graph.initializer.append(_floats(one, 1.0))
        nodes.append(helper.make_node("Erf", [node.input[0]], [erf], name=erf))
        nodes.append(helper.make_node("Sub", [one, erf], [node.output[0]], name=node.name))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenetv2", "convnext_tiny"])
def test_large_keras_model_exports_with_dynamic_batch(
    name: str,
    large_keras_onnx: dict[str, Path],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    model = _replace_erfc(onnx.load(large_keras_onnx[name]))
    assert find_unsupported_ops(model) == {}
    make_inputs = _keras_inputs(model)
    reference = _run_ort(model, make_inputs(3))[0]
    scale = float(np.abs(reference).max())
    assert scale > 0.1, "weak test: logits near zero"
    # Deep float32 networks: allow 1e-5 relative to the logits' magnitude.
    atol = 1e-5 * max(1.0, scale)

    start = time.perf_counter()
    module = import_onnx(model)
    import_seconds = time.perf_counter() - start
    start = time.perf_counter()
    export_program(module, make_inputs(1), tmp_path / "timed.pt2")
    export_seconds = time.perf_counter() - start
    (tmp_path / "timed.pt2").unlink()

    errors = _check_import_and_export(model, make_inputs, tmp_path, atol)
    record_property("import_seconds", round(import_seconds, 2))
    record_property("export_seconds", round(export_seconds, 2))
    print(
        f"{name}: import {import_seconds:.2f} s, export {export_seconds:.2f} s, "
        f"logit scale {scale:.3g}, max abs errors {errors}"
    )


# --- export_program / load_program ------------------------------------------------------------


class _DataDependentBranch(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: torch.export must refuse it
            return x
        return -x


def test_export_failure_is_one_line_export_error_and_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(ExportError) as info:
        export_program(_DataDependentBranch(), [np.ones((2, 3), np.float32)], tmp_path / "m.pt2")
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("torch.export failed: ")
    assert list(tmp_path.iterdir()) == []


def test_load_program_runs_without_tensorflow(tmp_path: Path) -> None:
    path = tmp_path / "m.pt2"
    export_program(import_onnx(reshape_from_shape_chain()), [np.ones((1, 4, 6), np.float32)], path)
    script = textwrap.dedent(
        f"""
        import sys, torch
        from pipeline.to_torch.importer import load_program
        out = load_program({str(path)!r})(torch.ones(5, 4, 6))
        assert tuple(out.shape) == (5, 24), out.shape
        assert "tensorflow" not in sys.modules
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
