"""Split with sizes known at import: ``torch.split(x, [sizes], dim)``, against onnxruntime."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from onnx import helper


@pytest.mark.parametrize(("axis", "sizes"), [(0, [2, 4]), (1, [1, 2, 2]), (-1, [3, 2])])
def test_split_with_sizes(roundtrip: Callable[..., str], axis: int, sizes: list[int]) -> None:
    shape = [6, 5, 5]
    shape[axis] = sum(sizes)
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    outputs = [f"y{i}" for i in range(len(sizes))]
    node = helper.make_node("Split", ["x", "split"], outputs, axis=axis)
    source = roundtrip(node, [x], {"split": np.array(sizes, dtype=np.int64)})
    assert f"torch.split(x, [{', '.join(map(str, sizes))}], dim={axis})" in source
