"""Code forms of arithmetic.py checked against onnxruntime: Max, Mod, Mean, roundings, Pow."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import helper

from pipeline.to_torch.codegen import load_generated

RNG = np.random.default_rng(0)


def test_max_is_maximum(roundtrip: Callable[..., str]) -> None:
    # Max was written as torch.minimum: a silent wrong result.
    a = RNG.normal(size=(2, 3)).astype(np.float32)
    b = RNG.normal(size=(2, 3)).astype(np.float32)
    c = RNG.normal(size=(3,)).astype(np.float32)
    source = roundtrip(helper.make_node("Max", ["a", "b", "c"], ["y"]), [a, b, c])
    assert "torch.maximum(torch.maximum(" in source
    assert "minimum" not in source


def test_min_is_minimum(roundtrip: Callable[..., str]) -> None:
    a = RNG.normal(size=(4,)).astype(np.float32)
    b = RNG.normal(size=(4,)).astype(np.float32)
    source = roundtrip(helper.make_node("Min", ["a", "b"], ["y"]), [a, b])
    assert "torch.minimum(" in source


@pytest.mark.parametrize(
    ("fmod", "dtype", "function"),
    [
        (0, np.int64, "remainder"),
        (0, np.int32, "remainder"),
        (1, np.int32, "fmod"),
        (1, np.float32, "fmod"),
    ],
)
def test_mod(roundtrip: Callable[..., str], fmod: int, dtype: type, function: str) -> None:
    a = np.array([-7, -4, 5, 7, 9, -3], dtype=dtype)
    b = np.array([3, -3, -2, 4, 3, 2], dtype=dtype)
    source = roundtrip(helper.make_node("Mod", ["a", "b"], ["y"], fmod=fmod), [a, b])
    assert f"torch.{function}(" in source


def test_mean(roundtrip: Callable[..., str]) -> None:
    xs = [RNG.normal(size=(2, 3)).astype(np.float32) for _ in range(3)]
    source = roundtrip(helper.make_node("Mean", ["a", "b", "c"], ["y"]), xs)
    assert ") / 3" in source


@pytest.mark.parametrize("op", ["Ceil", "Floor", "Round"])
def test_roundings(roundtrip: Callable[..., str], op: str) -> None:
    # Round is half to even: 0.5 → 0, 1.5 → 2, 2.5 → 2, -2.5 → -2.
    x = np.array([0.5, 1.5, 2.5, -2.5, -0.2, 1.7, -1.7], dtype=np.float32)
    source = roundtrip(helper.make_node(op, ["x"], ["y"]), [x])
    assert f"torch.{op.lower()}(" in source


@pytest.mark.parametrize(
    ("base", "exponent"),
    [
        (np.int64, np.float32),
        (np.int32, np.int64),
        (np.float32, np.int64),
        (np.float32, np.float32),
    ],
)
def test_pow_keeps_the_base_dtype(
    roundtrip: Callable[..., str], base: type, exponent: type
) -> None:
    x = np.array([1, 2, 3, 4], dtype=base)
    y = np.array([2, 3, 1, 2], dtype=exponent)
    source = roundtrip(helper.make_node("Pow", ["x", "y"], ["z"]), [x, y])
    assert "torch.pow(" in source
    promoted = base != exponent and np.dtype(base).kind == "i"
    assert (".to(torch." in source) == promoted


@pytest.mark.parametrize(("op", "bound"), [("Min", "max"), ("Max", "min")])
def test_min_max_against_a_constant_number_is_a_clamp_that_exports(
    roundtrip: Callable[..., str], tmp_path: Path, op: str, bound: str
) -> None:
    # T5's relative-position buckets: Min(x, 15) on int64, the 15 an inlined Python number,
    # which torch.minimum refuses ("must be Tensor, not int") in eager code and in export.
    x = RNG.integers(-40, 40, size=(3, 5)).astype(np.int64)
    limit = np.array(15, np.int64)
    source = roundtrip(helper.make_node(op, ["x", "limit"], ["y"]), [x], {"limit": limit})
    assert f".clamp({bound}=15)" in source
    module = load_generated(tmp_path / "torch_model")
    program = torch.export.export(module, (torch.from_numpy(x),))
    expected = np.minimum(x, 15) if op == "Min" else np.maximum(x, 15)
    np.testing.assert_array_equal(program.module()(torch.from_numpy(x)).numpy(), expected)
