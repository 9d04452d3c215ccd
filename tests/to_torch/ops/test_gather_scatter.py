"""GatherElements (negative indices), GatherND (any batch_dims) and ScatterND
(reduction none/add/mul), each as readable indexing in model.py."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
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


@pytest.mark.parametrize(("batch_dims", "last"), [(2, 1), (2, 2), (3, 1)])
def test_gather_nd_several_batch_dims(
    roundtrip: Callable[..., str], batch_dims: int, last: int
) -> None:
    """DeBERTa's disentangled attention: GatherND with ``batch_dims=3`` (ONNX semantics:
    the first ``batch_dims`` dims of data and indices line up)."""
    data = RNG.standard_normal((2, 3, 4, 5, 6)).astype(np.float32)
    high = data.shape[batch_dims : batch_dims + last]
    index_shape = (*data.shape[:batch_dims], 7, last)
    columns = [RNG.integers(-h, h, index_shape[:-1]) for h in high]
    indices = np.stack(columns, axis=-1).astype(np.int64)
    node = helper.make_node("GatherND", ["x", "i"], ["y"], batch_dims=batch_dims)
    source = roundtrip(node, [data, indices])
    assert f"gather_nd(x, i, batch_dims={batch_dims})" in source
    assert "def gather_nd(" in source


def test_gather_nd_batch_dims_exports_with_dynamic_dims(
    imported: Callable[..., torch.fx.GraphModule],
) -> None:
    data = RNG.standard_normal((2, 3, 5, 6)).astype(np.float32)
    indices = RNG.integers(0, 5, (2, 3, 4, 1)).astype(np.int64)
    node = helper.make_node("GatherND", ["x", "i"], ["y"], batch_dims=2)
    module = imported(node, [data, indices])
    batch, heads = torch.export.Dim("batch"), torch.export.Dim("heads")
    args = (torch.from_numpy(data), torch.from_numpy(indices))
    dims = {0: batch, 1: heads}
    program = torch.export.export(module, args, dynamic_shapes=(dims, dims))
    other = (torch.randn(4, 2, 5, 6), torch.randint(0, 5, (4, 2, 4, 1)))
    expected = module(*other)
    np.testing.assert_array_equal(program.module()(*other).numpy(), expected.numpy())
    flat_x, flat_i = other[0].flatten(0, 1), other[1].flatten(0, 1)
    manual = torch.stack([flat_x[b][flat_i[b, :, 0]] for b in range(8)]).unflatten(0, (4, 2))
    np.testing.assert_array_equal(expected.numpy(), manual.numpy())
