"""Einsum: ``torch.einsum("eq", ...)`` against onnxruntime (spaces in the equation too)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from onnx import helper

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    ("equation", "shapes", "written"),
    [
        ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)], "'bij,bjk->bik'"),
        ("ij->ji", [(3, 4)], "'ij->ji'"),
        ("i, i", [(5,), (5,)], "'i,i'"),
        ("...ii->...i", [(2, 3, 3)], "'...ii->...i'"),
    ],
)
def test_einsum(
    roundtrip: Callable[..., str], equation: str, shapes: list[tuple[int, ...]], written: str
) -> None:
    inputs = [RNG.normal(size=s).astype(np.float32) for s in shapes]
    names = [f"x{i}" for i in range(len(inputs))]
    source = roundtrip(helper.make_node("Einsum", names, ["y"], equation=equation), inputs)
    assert f"torch.einsum({written}, " in source
