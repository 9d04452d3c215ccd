"""IsNaN and IsInf (with detect_positive/detect_negative) against onnxruntime."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from onnx import helper

X = np.array([-np.inf, -1.0, 0.0, np.nan, 2.0, np.inf], dtype=np.float32)


def test_isnan(roundtrip: Callable[..., str]) -> None:
    assert "torch.isnan(" in roundtrip(helper.make_node("IsNaN", ["x"], ["y"]), [X])


@pytest.mark.parametrize(
    ("positive", "negative", "written"),
    [(1, 1, "torch.isinf("), (1, 0, "torch.isposinf("), (0, 1, "torch.isneginf(")],
)
def test_isinf(roundtrip: Callable[..., str], positive: int, negative: int, written: str) -> None:
    node = helper.make_node(
        "IsInf", ["x"], ["y"], detect_positive=positive, detect_negative=negative
    )
    assert written in roundtrip(node, [X])
