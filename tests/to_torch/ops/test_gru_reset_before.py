"""ONNX ``GRU`` with ``linear_before_reset=0`` (Keras ``reset_after=False``): imported as
:class:`~pipeline.to_torch.ops.recurrent.GruResetBefore` and written into ``model.py`` as that
class, against onnxruntime (layout 0) and a NumPy reference of ONNX's formulas."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import helper

import pipeline
from pipeline.api import ConvertOptions
from pipeline.passes import default_passes
from pipeline.passes.keras_gru_loop import KerasGruLoopPass
from pipeline.to_torch.ops.recurrent import GruResetBefore

INPUT, HIDDEN, SEQ, BATCH = 4, 5, 6, 3


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _reference(
    x: np.ndarray, w: np.ndarray, r: np.ndarray, b: np.ndarray, h0: np.ndarray, direction: str
) -> tuple[np.ndarray, np.ndarray]:
    """ONNX's GRU (linear_before_reset=0, layout 0) in NumPy: (Y, Y_h)."""
    dirs = w.shape[0]
    ys, hs = [], []
    for d in range(dirs):
        wz, wr, wh = np.split(w[d], 3)
        rz, rr, rh = np.split(r[d], 3)
        wbz, wbr, wbh, rbz, rbr, rbh = np.split(b[d], 6)
        h = h0[d]
        backward = d == 1 or direction == "reverse"
        steps = range(x.shape[0] - 1, -1, -1) if backward else range(x.shape[0])
        y = np.zeros((x.shape[0], *h.shape), np.float32)
        for t in steps:
            xt = x[t]
            z = _sigmoid(xt @ wz.T + h @ rz.T + wbz + rbz)
            rg = _sigmoid(xt @ wr.T + h @ rr.T + wbr + rbr)
            n = np.tanh(xt @ wh.T + (rg * h) @ rh.T + rbh + wbh)
            h = (1 - z) * n + z * h
            y[t] = h
        ys.append(y)
        hs.append(h)
    return np.stack(ys, 1), np.stack(hs, 0)


def _case(
    direction: str, with_h0: bool, outputs: Sequence[str] = ("y", "y_h"), seed: int = 0
) -> tuple[object, list[np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    dirs = 2 if direction == "bidirectional" else 1
    weights = {
        "W": rng.normal(0, 0.5, (dirs, 3 * HIDDEN, INPUT)).astype(np.float32),
        "R": rng.normal(0, 0.5, (dirs, 3 * HIDDEN, HIDDEN)).astype(np.float32),
        "B": rng.normal(0, 0.5, (dirs, 6 * HIDDEN)).astype(np.float32),
    }
    inputs = [rng.standard_normal((SEQ, BATCH, INPUT)).astype(np.float32)]
    names = ["x", "W", "R", "B"]
    if with_h0:
        inputs.append(rng.standard_normal((dirs, BATCH, HIDDEN)).astype(np.float32))
        names += ["", "h0"]
    node = helper.make_node(
        "GRU",
        names,
        list(outputs),
        hidden_size=HIDDEN,
        direction=direction,
        linear_before_reset=0,
    )
    return node, inputs, weights


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("with_h0", [False, True])
def test_against_onnxruntime(roundtrip: Callable[..., str], direction: str, with_h0: bool) -> None:
    node, inputs, weights = _case(direction, with_h0)
    source = roundtrip(node, inputs, weights)
    assert "class GruResetBefore(nn.Module):" in source
    assert f"direction={direction!r}" in source


def test_y_only(roundtrip: Callable[..., str]) -> None:
    node, inputs, weights = _case("bidirectional", True, outputs=("y",), seed=3)
    source = roundtrip(node, inputs, weights)
    assert "outputs=1" in source


def test_without_bias_matches_reference(
    imported: Callable[..., torch.fx.GraphModule],
) -> None:
    node, inputs, weights = _case("forward", True, seed=4)
    node.input[3] = ""
    del weights["B"]
    module = imported(node, inputs, weights)
    with torch.no_grad():
        y, y_h = module(*(torch.from_numpy(a) for a in inputs))
    zero_b = np.zeros((1, 6 * HIDDEN), np.float32)
    want_y, want_h = _reference(inputs[0], weights["W"], weights["R"], zero_b, inputs[1], "forward")
    np.testing.assert_allclose(y.numpy(), want_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y_h.numpy(), want_h, rtol=1e-5, atol=1e-5)


def test_module_matches_reference_in_both_layouts() -> None:
    # onnxruntime has no layout=1: the module against the NumPy reference instead.
    _, inputs, weights = _case("bidirectional", True, seed=5)
    x, h0 = inputs
    want_y, want_h = _reference(x, weights["W"], weights["R"], weights["B"], h0, "bidirectional")
    for layout in (0, 1):
        module = GruResetBefore(INPUT, HIDDEN, direction="bidirectional", layout=layout)
        with torch.no_grad():
            for d, suffix in enumerate(["", "_reverse"]):
                getattr(module, f"weight_ih_l0{suffix}").copy_(torch.from_numpy(weights["W"][d]))
                getattr(module, f"weight_hh_l0{suffix}").copy_(torch.from_numpy(weights["R"][d]))
                wb, rb = np.split(weights["B"][d], 2)
                getattr(module, f"bias_ih_l0{suffix}").copy_(torch.from_numpy(wb))
                getattr(module, f"bias_hh_l0{suffix}").copy_(torch.from_numpy(rb))
            tx, th = torch.from_numpy(x), torch.from_numpy(h0)
            if layout == 1:
                tx, th = tx.transpose(0, 1), th.transpose(0, 1)
            y, y_h = module(tx, th)
        if layout == 1:
            y, y_h = y.permute(1, 2, 0, 3), y_h.transpose(0, 1)
        np.testing.assert_allclose(y.numpy(), want_y, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(y_h.numpy(), want_h, rtol=1e-5, atol=1e-5)


def test_gradients_reach_every_weight() -> None:
    module = GruResetBefore(INPUT, HIDDEN, direction="bidirectional")
    for p in module.parameters():
        torch.nn.init.normal_(p, 0, 0.5)
    y, y_h = module(torch.randn(SEQ, BATCH, INPUT), torch.randn(2, BATCH, HIDDEN))
    (y.sum() + y_h.sum()).backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_exports_with_static_sequence() -> None:
    module = GruResetBefore(INPUT, HIDDEN, direction="reverse").eval()
    x = torch.randn(SEQ, BATCH, INPUT)
    exported = torch.export.export(module, (x,))
    torch.testing.assert_close(exported.module()(x), module(x))


_FACTORIES = textwrap.dedent(
    """
    import keras
    import numpy as np
    from keras import layers


    def _seeded(model, seed):
        rng = np.random.default_rng(seed)
        for w in model.weights:
            w.assign(rng.normal(0, 0.4, w.shape).astype("float32"))
        return model


    def gru_no_reset_after():
        x = keras.Input((7, 5), name="sequence")
        return _seeded(keras.Model(x, layers.GRU(8, reset_after=False)(x)), 0)


    def bigru_no_reset_after():
        x = keras.Input((7, 5), name="sequence")
        gru = layers.GRU(6, reset_after=False, return_sequences=True)
        h = layers.Bidirectional(gru)(x)
        return _seeded(keras.Model(x, layers.Dense(3)(h)), 1)
    """
)


def _convert_options(tmp_path: Path) -> ConvertOptions:
    """Options that run the Keras GRU loop pass (as a patch dir unless it is a default)."""
    if any(p.name == KerasGruLoopPass.name for p in default_passes()):
        return ConvertOptions()
    patches = tmp_path / "patches"
    patches.mkdir()
    (patches / "keras_gru_loop.py").write_text(
        "from pipeline.passes.keras_gru_loop import KerasGruLoopPass\nPATCH = KerasGruLoopPass()\n"
    )
    return ConvertOptions(patches=[patches])


@pytest.mark.parametrize("factory", ["gru_no_reset_after", "bigru_no_reset_after"])
def test_keras_gru_without_reset_after_end_to_end(tmp_path: Path, factory: str) -> None:
    (tmp_path / "factories.py").write_text(_FACTORIES)
    result = pipeline.convert(
        f"{tmp_path / 'factories.py'}:{factory}", tmp_path / "run", _convert_options(tmp_path)
    )
    comparisons = result.report["comparisons"]
    assert len(comparisons) == 3 and all(c["pass"] for c in comparisons), comparisons
    assert result.verdict == "pass", result.report["parameter_count"]
    gradients = result.report["gradients"]
    assert gradients and all(g["checked"] and g["pass"] for g in gradients), gradients
    assert result.report["parameter_count"]["unmapped"] == 0
    source = next((tmp_path / "run").rglob("model.py")).read_text()
    assert "class GruResetBefore(nn.Module):" in source
