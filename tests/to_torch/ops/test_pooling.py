"""AveragePool as ONNX computes it: asymmetric pads (Keras "same"), count_include_pad both
ways, auto_pad SAME, dilations and ceil_mode."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from onnx import helper

X = np.random.default_rng(0).standard_normal((2, 3, 7, 6)).astype(np.float32)


@pytest.mark.parametrize(
    ("attributes", "helper_used"),
    [
        ({"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 0, 1, 0]}, True),  # Keras same
        ({"kernel_shape": [3, 3], "pads": [0, 1, 2, 1], "count_include_pad": 1}, True),
        ({"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}, True),
        ({"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"}, True),
        ({"kernel_shape": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1, "strides": [2, 2]}, True),
        ({"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, False),
        ({"kernel_shape": [2, 2], "strides": [2, 2]}, False),
    ],
)
def test_average_pool(roundtrip: Callable[..., str], attributes: dict, helper_used: bool) -> None:
    source = roundtrip(helper.make_node("AveragePool", ["x"], ["y"], **attributes), [X])
    assert ("average_pool(" in source) == helper_used
    assert ("F.avg_pool2d(" in source) != helper_used


def test_average_pool_dilations_at_opset_19_semantics(roundtrip: Callable[..., str]) -> None:
    # Opset 17 has no dilations attribute for onnxruntime; check against numpy instead.
    import torch

    from pipeline.to_torch.ops.pooling import average_pool

    x = torch.from_numpy(X)
    y = average_pool(x, (2, 2), (1, 1), (0, 0, 0, 0), (2, 2))
    expected = (x[:, :, :-2, :-2] + x[:, :, 2:, :-2] + x[:, :, :-2, 2:] + x[:, :, 2:, 2:]) / 4
    torch.testing.assert_close(y, expected)
