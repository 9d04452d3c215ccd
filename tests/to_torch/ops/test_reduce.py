"""ReduceProd (one, several, all axes) and ReduceLogSum code forms against onnxruntime."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from onnx import helper

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
