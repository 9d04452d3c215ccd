"""Clip with a missing bound (an empty input name), Selu with non-default alpha/gamma and
Dropout with a seed (and its mask output), against onnxruntime; generated code exports."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import helper

from pipeline.to_torch.codegen import load_generated


def _exports(tmp_path: Path, x: np.ndarray) -> None:
    generated = load_generated(tmp_path / "torch_model")
    program = torch.export.export(
        generated, (torch.from_numpy(x),), dynamic_shapes=({0: torch.export.Dim.AUTO},)
    )
    other = torch.from_numpy(np.concatenate([x, x[:1]]))
    torch.testing.assert_close(program.module()(other), generated(other))


@pytest.mark.parametrize(
    ("names", "dtype", "expected"),
    [
        (["x", "", "hi"], np.float32, "torch.clamp(x, max=0.5)"),
        (["x", "lo"], np.float32, "torch.clamp(x, min=-0.5)"),
        (["x", "", "hi"], np.int8, "torch.clamp(x, max=3)"),
        (["x"], np.float32, None),
    ],
)
def test_clip_missing_bound(
    roundtrip: Callable[..., str],
    tmp_path: Path,
    names: list[str],
    dtype: type,
    expected: str | None,
) -> None:
    x = (np.random.default_rng(0).standard_normal((2, 5)) * 4).astype(dtype)
    bound = {np.float32: {"lo": -0.5, "hi": 0.5}, np.int8: {"lo": -3, "hi": 3}}[dtype]
    initializers = {n: np.array(bound[n], dtype) for n in names[1:] if n}
    source = roundtrip(helper.make_node("Clip", names, ["y"]), [x], initializers)
    if expected is not None:
        assert expected in source
    _exports(tmp_path, x)


def test_selu_non_default(roundtrip: Callable[..., str], tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    source = roundtrip(helper.make_node("Selu", ["x"], ["y"], alpha=2.0, gamma=3.0), [x])
    assert "3.0 * torch.where(x > 0, x, 2.0 * (torch.exp(x) - 1))" in source
    _exports(tmp_path, x)


def test_selu_default_stays_f_selu(roundtrip: Callable[..., str]) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    assert "F.selu(x)" in roundtrip(helper.make_node("Selu", ["x"], ["y"]), [x])


@pytest.mark.parametrize("outputs", [["y"], ["y", "mask"]])
def test_dropout_with_seed_is_identity(
    roundtrip: Callable[..., str], tmp_path: Path, outputs: list[str]
) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    node = helper.make_node("Dropout", ["x", "r"], outputs, seed=0)
    source = roundtrip(node, [x], {"r": np.array(0.3, np.float32)})
    if len(outputs) == 2:
        assert "torch.ones_like(x, dtype=torch.bool)" in source
    else:
        _exports(tmp_path, x)


def test_dropout_training_mode_is_refused(imported: Callable[..., torch.fx.GraphModule]) -> None:
    x = np.ones((2, 3), np.float32)
    node = helper.make_node("Dropout", ["x", "r", "t"], ["y"], seed=0)
    initializers = {"r": np.array(0.5, np.float32), "t": np.array(True)}
    with pytest.raises(Exception, match="training_mode=True"):
        imported(node, [x], initializers)
