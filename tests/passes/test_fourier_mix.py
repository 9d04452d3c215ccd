"""The Fourier mixing patch (``patches/fourier_mix.py``): F-Net's ``real(fft2(x))``.

Hand-built graphs (no TensorFlow) pin down what is and is not matched, that the ONNX form
runs in ONNX Runtime (opset 17's ``DFT`` attribute and opset 20's ``axis`` input) and agrees
with numpy's FFT, and that a torch form disagreeing with it is caught; the real stack (TF
worker → tf2onnx → passes → onnx2torch → torch.export → generated code) shows both ways of
writing the op in Keras patched and agreeing three ways, parameters and gradients included.
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
from patches import fourier_mix
from pipeline.core.errors import PassError
from pipeline.core.ort_runner import OrtRunner
from pipeline.passes import default_passes
from pipeline.passes.custom_ops import DOMAIN
from pipeline.to_torch.importer import import_onnx

RNG = np.random.default_rng(0)
X_SHAPE = ["batch", 5, 6]

# -- hand-built graphs ---------------------------------------------------------------------


def _fourier_model(
    *,
    to_complex: str = "zeros_like",
    fft: str = "FFT2D",
    imag_read: bool = False,
    x_type: int = TensorProto.FLOAT,
    opset: int = 17,
) -> onnx.ModelProto:
    """``y = Real(FFT2D(Complex(Relu(x), zeros_like)))`` as tf2onnx leaves it (Identity
    between the links); the keyword arguments give the variants."""
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="net/act/Relu")]
    initializers: list[onnx.TensorProto] = []
    zeros_of = {"zeros_like": "h", "zeros_of_other": "x"}
    if to_complex in zeros_of:
        nodes += [
            helper.make_node("Shape", [zeros_of[to_complex]], ["s"], name="Shape__1"),
            helper.make_node(
                "ConstantOfShape",
                ["s"],
                ["z"],
                name="net/mix/zeros_like",
                value=numpy_helper.from_array(np.zeros(1, np.float32)),
            ),
        ]
    elif to_complex == "cast":
        to = TensorProto.COMPLEX64
        nodes.append(helper.make_node("Cast", ["h"], ["c"], name="net/mix/Cast", to=to))
    else:
        zeros = {
            "scalar_zero": np.zeros((), np.float32),
            "scalar_one": np.ones((), np.float32),
            "zeros_broadcasting_up": np.zeros((4, 5, 6), np.float32),
        }[to_complex]
        initializers.append(numpy_helper.from_array(zeros, "z"))
    if to_complex != "cast":
        nodes.append(helper.make_node("Complex", ["h", "z"], ["c"], name="net/mix/Complex"))
    nodes += [
        helper.make_node("Identity", ["c"], ["ci"], name="net/mix/Identity"),
        helper.make_node(fft, ["ci"], ["f"], name=f"net/mix/{fft}"),
        helper.make_node("Real", ["f"], ["y"], name="net/mix/Real"),
    ]
    outputs = [helper.make_tensor_value_info("y", x_type, X_SHAPE)]
    if imag_read:
        nodes.append(helper.make_node("Imag", ["f"], ["yi"], name="net/mix/Imag"))
        outputs.append(helper.make_tensor_value_info("yi", x_type, X_SHAPE))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", x_type, X_SHAPE)],
        outputs,
        initializer=initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def _x(dtype: type = np.float32) -> np.ndarray:
    return RNG.normal(size=(2, 5, 6)).astype(dtype)


def _expected(x: np.ndarray) -> np.ndarray:
    return np.fft.fft2(np.maximum(x, 0), axes=(-2, -1)).real


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("to_complex", ["zeros_like", "scalar_zero", "cast"])
def test_fourier_mixing_becomes_one_node_that_onnx_runtime_and_torch_run(
    to_complex: str, opset: int
) -> None:
    model = _fourier_model(to_complex=to_complex, opset=opset)
    before = model.SerializeToString()
    result = fourier_mix.PATCH.apply(model)
    assert model.SerializeToString() == before  # the input is never mutated
    assert result.changes == 1
    fixed = result.model
    onnx.checker.check_model(fixed, full_check=True)  # valid ONNX again
    [node] = [n for n in fixed.graph.node if n.domain == DOMAIN]
    assert (node.op_type, node.name, list(node.input)) == ("FourierMix", "net/mix", ["h"])
    assert [n.op_type for n in fixed.graph.node] == ["Relu", "FourierMix"]  # zeros chain gone
    assert not fixed.graph.initializer
    assert [(f.domain, f.name) for f in fixed.functions] == [(DOMAIN, "FourierMix")]

    x = _x()
    [y] = OrtRunner(fixed).run({"x": x}).values()
    np.testing.assert_allclose(y, _expected(x), atol=1e-4)

    module = import_onnx(fixed)
    [mix] = [m for m in module.modules() if isinstance(m, fourier_mix.FourierMix)]
    assert not list(mix.parameters())
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    np.testing.assert_allclose(out.numpy(), _expected(x), atol=1e-4)


def test_float64_fourier_mixing_stays_float64() -> None:
    model = _fourier_model(x_type=TensorProto.DOUBLE)
    fixed = fourier_mix.PATCH.apply(model).model
    x = _x(np.float64)
    [y] = OrtRunner(fixed).run({"x": x}).values()
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, _expected(x), atol=1e-9)


@pytest.mark.parametrize(
    ("variant", "why"),
    [
        ({"to_complex": "scalar_one"}, "the imaginary part is not zero"),
        ({"to_complex": "zeros_of_other"}, "zeros of another tensor's shape"),
        ({"to_complex": "zeros_broadcasting_up"}, "the zeros broadcast x up"),
        ({"fft": "FFT"}, "a 1-D FFT, not FFT2D"),
        ({"fft": "IFFT2D"}, "the inverse transform"),
        ({"imag_read": True}, "the imaginary part is used too"),
        ({"to_complex": "cast", "x_type": TensorProto.DOUBLE}, "float64 cast to complex64"),
        ({"opset": 16}, "no DFT before opset 17"),
    ],
)
def test_other_chains_are_left_alone(variant: dict[str, object], why: str) -> None:
    model = _fourier_model(**variant)  # type: ignore[arg-type]
    result = fourier_mix.PATCH.apply(model)
    assert result.changes == 0, why
    assert result.model is model


def test_two_mixings_in_a_row_are_both_patched() -> None:
    """Downstream of an unconverted FFT no shape is known: the second is still matched and
    its torch form still verified."""
    model = _fourier_model()
    graph = model.graph
    graph.output[0].name = "y1"
    for node in graph.node:
        node.output[:] = ["y1" if o == "y" else o for o in node.output]
    graph.node.extend(
        [
            helper.make_node("Shape", ["y1"], ["s2"], name="Shape__2"),
            helper.make_node(
                "ConstantOfShape",
                ["s2"],
                ["z2"],
                name="net/mix_1/zeros_like",
                value=numpy_helper.from_array(np.zeros(1, np.float32)),
            ),
            helper.make_node("Complex", ["y1", "z2"], ["c2"], name="net/mix_1/Complex"),
            helper.make_node("FFT2D", ["c2"], ["f2"], name="net/mix_1/FFT2D"),
            helper.make_node("Real", ["f2"], ["y"], name="net/mix_1/Real"),
        ]
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, X_SHAPE))
    result = fourier_mix.PATCH.apply(model)
    assert result.changes == 2
    names = [n.name for n in result.model.graph.node if n.domain == DOMAIN]
    assert names == ["net/mix", "net/mix_1"]
    x = _x()
    [y] = OrtRunner(result.model).run({"x": x}).values()
    np.testing.assert_allclose(y, np.fft.fft2(_expected(x)).real, atol=1e-3)


def test_a_torch_form_that_disagrees_with_the_onnx_form_stops_the_patch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        fourier_mix.FourierMix, "forward", lambda self, x: torch.fft.fft(x, dim=-1).real
    )
    with pytest.raises(PassError, match=r"patch 'fourier_mix'.*disagrees with its ONNX function"):
        fourier_mix.PATCH.apply(_fourier_model())


def test_fourier_mix_is_a_default_pass() -> None:
    assert "fourier_mix" in [p.name for p in default_passes()]


# -- the real stack ------------------------------------------------------------------------

FACTORY = '''
"""Fourier mixing written both ways: Keras ops (keras-hub's FNetEncoder) and tf.signal."""
import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops


class KerasMix(layers.Layer):
    """As keras_hub's FNetEncoder: ``real(fft2((x, zeros_like(x))))``."""

    def call(self, x):
        real, _ = ops.fft2((x, ops.zeros_like(x)))
        return real


class TfMix(layers.Layer):
    def call(self, x):
        return tf.math.real(tf.signal.fft2d(tf.cast(x, tf.complex64)))


def model():
    keras.utils.set_random_seed(5)
    x = keras.Input((6, 8), name="seq")
    h = layers.Dense(8, name="proj")(x)
    h = layers.Add(name="residual")([h, KerasMix(name="mixing")(h)])
    h = layers.LayerNormalization(name="norm")(h)
    h = TfMix(name="tf_mixing")(h)
    y = layers.Dense(3, name="out")(h)
    m = keras.Model(x, y)
    rng = np.random.default_rng(5)
    for v in m.weights:
        v.assign(rng.uniform(-0.5, 0.5, v.shape).astype("float32"))
    return m
'''


def test_both_spellings_of_fourier_mixing_convert_three_ways(tmp_path: Path) -> None:
    factory = tmp_path / "fourier.py"
    factory.write_text(textwrap.dedent(FACTORY))
    result = pipeline.convert(f"{factory}:model", tmp_path / "run")
    assert result.verdict == "pass", result.report["comparisons"]
    assert {c["pair"] for c in result.report["comparisons"]} == {"tf-ort", "tf-torch", "ort-torch"}
    assert all(c["pass"] for c in result.report["comparisons"])

    [record] = [p for p in result.report["passes"] if p["name"] == "fourier_mix"]
    assert record["changes"] == 2
    fixed = onnx.load(str(result.run_dir / "model.onnx"))
    custom = [n for n in fixed.graph.node if n.domain == DOMAIN]
    assert [n.op_type for n in custom] == ["FourierMix", "FourierMix"]
    assert not {"Complex", "FFT2D", "Real"} & {n.op_type for n in fixed.graph.node}
    complex_types = {TensorProto.COMPLEX64, TensorProto.COMPLEX128}
    casts = [n for n in fixed.graph.node if n.op_type == "Cast"]
    assert not [n for n in casts if helper.get_node_attr_value(n, "to") in complex_types]

    count = result.report["parameter_count"]
    assert count["status"] == "full" and count["pass"], count
    assert result.report["gradient_check"]["status"] == "checked"
    gradients = result.report["gradients"]
    assert len(gradients) == 6  # proj, norm and out: kernel/gamma and bias/beta each
    assert all(g["checked"] and g["pass"] for g in gradients), gradients

    code = (result.run_dir / "torch_model" / "model.py").read_text()
    assert code.count("torch.fft.fft2(") == 2
