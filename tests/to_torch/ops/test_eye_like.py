"""EyeLike (any diagonal, dtype) and NonZero ((rank, n) indices)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from onnx import TensorProto, helper


@pytest.mark.parametrize("k", [0, 2, -1])
def test_eye_like(roundtrip: Callable[..., str], k: int) -> None:
    node = helper.make_node("EyeLike", ["x"], ["y"], k=k, dtype=TensorProto.INT32)
    assert "torch." in roundtrip(node, [np.zeros((4, 5), np.float32)])


def test_non_zero(roundtrip: Callable[..., str]) -> None:
    x = np.array([[1, 0, 3], [0, 0, 2]], dtype=np.float32)
    source = roundtrip(helper.make_node("NonZero", ["x"], ["y"]), [x])
    assert "torch.nonzero(" in source
