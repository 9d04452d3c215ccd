"""GatherElements (negative indices), GatherND (batch_dims 0 and 1) and ScatterND
(reduction none/add/mul), each as readable indexing in model.py."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from onnx import helper

RNG = np.random.default_rng(0)
DATA = RNG.standard_normal((3, 4, 5)).astype(np.float32)


def test_gather_elements_negative_indices(roundtrip: Callable[..., str]) -> None:
    indices = np.array([[[-1, 0, 2, -4, 1]] * 2] * 3, dtype=np.int64)
    node = helper.make_node("GatherElements", ["x", "i"], ["y"], axis=1)
    source = roundtrip(node, [DATA, indices])
    assert "torch.gather(" in source


@pytest.mark.parametrize("batch_dims", [0, 1])
def test_gather_nd(roundtrip: Callable[..., str], batch_dims: int) -> None:
    indices = np.array([[[1, 2], [0, -1]], [[2, 3], [1, 1]], [[0, 0], [2, 3]]], dtype=np.int64)
    if batch_dims:
        indices = indices[:, :, :1] % 4
    node = helper.make_node("GatherND", ["x", "i"], ["y"], batch_dims=batch_dims)
    source = roundtrip(node, [DATA, indices])
    assert "[..., 0]" in source


@pytest.mark.parametrize("reduction", ["none", "add", "mul"])
def test_scatter_nd(roundtrip: Callable[..., str], reduction: str) -> None:
    repeated = reduction != "none"
    indices = np.array([[0, 1], [2, 3], [0, 1] if repeated else [1, 0]], dtype=np.int64)
    updates = RNG.standard_normal((3, 5)).astype(np.float32)
    node = helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction=reduction)
    source = roundtrip(node, [DATA, indices, updates])
    assert ("scatter_nd_multiply(" in source) == (reduction == "mul")
