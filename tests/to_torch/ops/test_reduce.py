"""ReduceProd (one, several, all axes), ReduceLogSum and ReduceMax/ReduceMin over an empty
set (:class:`ReduceEmpty`) code forms against onnxruntime."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import helper

from pipeline.to_torch.codegen import load_generated

X = np.random.default_rng(0).uniform(0.5, 1.5, size=(2, 3, 4)).astype(np.float32)


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes", [None, [1], [0, 2], [-1, 0]])
def test_reduce_prod(roundtrip: Callable[..., str], keepdims: int, axes: list[int] | None) -> None:
    # At opset 17, ReduceProd's axes are an attribute (absent: all axes).
    extra = {"axes": axes} if axes is not None else {}
    node = helper.make_node("ReduceProd", ["x"], ["y"], keepdims=keepdims, **extra)
    source = roundtrip(node, [X])
    assert ".prod(" in source
    if axes is None and not keepdims:
        assert "x.prod()" in source


@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_log_sum(roundtrip: Callable[..., str], keepdims: int) -> None:
    node = helper.make_node("ReduceLogSum", ["x"], ["y"], keepdims=keepdims, axes=[1, 2])
    assert "torch.log(" in roundtrip(node, [X])


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceProd", "ReduceL2"])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_negative_axes_attribute(roundtrip: Callable[..., str], op: str, keepdims: int) -> None:
    # onnx2torch's module reduced the wrong axes here (keepdims=0, a negative axis).
    if op == "ReduceSum":  # ReduceSum's axes became an input at 13
        node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)
        roundtrip(node, [X], {"axes": np.array([-1, 0], dtype=np.int64)})
    else:
        roundtrip(helper.make_node(op, ["x"], ["y"], keepdims=keepdims, axes=[-1, 0]), [X])


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_max_min_empty_set(
    roundtrip: Callable[..., str], tmp_path: Path, op: str, dtype: type, keepdims: int
) -> None:
    # ONNX: the type's lowest (highest) value; torch's amax/amin raise on an empty dim.
    x = np.zeros((2, 0, 4), dtype)
    node = helper.make_node(op, ["x"], ["y"], axes=[1], keepdims=keepdims)
    source = roundtrip(node, [x])
    shape = "(x.shape[0], 1, x.shape[2])" if keepdims else "(x.shape[0], x.shape[2])"
    assert f"x.new_full({shape}, " in source
    generated = load_generated(tmp_path / "torch_model")
    program = torch.export.export(
        generated, (torch.from_numpy(x),), dynamic_shapes=({0: torch.export.Dim.AUTO},)
    )
    other = torch.from_numpy(np.zeros((3, 0, 4), dtype))
    torch.testing.assert_close(program.module()(other), generated(other))


def test_reduce_max_empty_set_bool(imported: Callable[..., torch.fx.GraphModule]) -> None:
    # Not against onnxruntime: bool ReduceMax needs opset 20 (the one-node model is 17).
    x = np.zeros((2, 0, 4), np.bool_)
    node = helper.make_node("ReduceMax", ["x"], ["y"], axes=[1], keepdims=1)
    module = imported(node, [x])
    assert module(torch.from_numpy(x)).dtype == torch.bool
    assert not module(torch.from_numpy(x)).any()


def test_reduce_max_nonempty_keeps_amax(roundtrip: Callable[..., str]) -> None:
    assert "x.amax(dim=1, keepdim=True)" in roundtrip(
        helper.make_node("ReduceMax", ["x"], ["y"], axes=[1], keepdims=1), [X]
    )


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceProd", "ReduceSumSquare"])
def test_integer_reduction_keeps_the_input_dtype(roundtrip: Callable[..., str], op: str) -> None:
    # ONNX keeps int32; torch's sum/prod of int32 is int64 (roundtrip checks the dtype).
    x = np.random.default_rng(3).integers(-3, 4, (2, 3, 4)).astype(np.int32)
    if op == "ReduceSum":
        node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=0)
        source = roundtrip(node, [x], {"axes": np.array([-1], dtype=np.int64)})
    else:  # opset 17: the axes are still an attribute of these
        source = roundtrip(helper.make_node(op, ["x"], ["y"], keepdims=0, axes=[2]), [x])
    assert ".to(torch.int32)" in source
