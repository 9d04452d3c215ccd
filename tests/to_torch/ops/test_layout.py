"""Flatten at axis 0 and at negative axes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from onnx import helper

X = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -4])
def test_flatten(roundtrip: Callable[..., str], axis: int) -> None:
    roundtrip(helper.make_node("Flatten", ["x"], ["y"], axis=axis), [X])
