"""DepthToSpace in both modes: F.pixel_shuffle (CRD) and unflatten/permute (DCR)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from onnx import helper

X = np.arange(2 * 8 * 3 * 2, dtype=np.float32).reshape(2, 8, 3, 2)


@pytest.mark.parametrize(("mode", "form"), [("CRD", "F.pixel_shuffle("), ("DCR", ".unflatten(")])
def test_depth_to_space(roundtrip: Callable[..., str], mode: str, form: str) -> None:
    node = helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode=mode)
    assert form in roundtrip(node, [X])
