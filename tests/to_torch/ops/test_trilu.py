"""Trilu (onnx2torch has none): ``torch.triu``/``torch.tril`` with ``k``, against onnxruntime."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from onnx import helper


@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, 0, 2, -1])
def test_trilu(roundtrip: Callable[..., str], upper: int, k: int | None) -> None:
    x = np.random.default_rng(0).normal(size=(2, 4, 5)).astype(np.float32)
    inputs = ["x", "k"] if k is not None else ["x"]
    initializers = {"k": np.array(k, dtype=np.int64)} if k is not None else None
    source = roundtrip(helper.make_node("Trilu", inputs, ["y"], upper=upper), [x], initializers)
    function = "triu" if upper else "tril"
    assert f"torch.{function}(x" in source
    assert ("diagonal=" in source) == bool(k)
