"""Resize: exact where torch computes ONNX's values, refused (NotImplementedError naming the
modes) where it does not."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from onnx import helper

X = np.random.default_rng(0).standard_normal((1, 2, 4, 6)).astype(np.float32)


@pytest.mark.parametrize(
    ("scales", "attributes"),
    [
        ([1, 1, 0.5, 0.5], {"mode": "nearest"}),  # half_pixel ties: torch "nearest" picks them
        ([1, 1, 0.6, 0.6], {"mode": "nearest"}),
        ([1, 1, 2, 2], {"mode": "nearest"}),
        (
            [1, 1, 2, 3],
            {
                "mode": "nearest",
                "coordinate_transformation_mode": "asymmetric",
                "nearest_mode": "floor",
            },
        ),
        ([1, 1, 2, 2], {"mode": "linear"}),
        ([1, 1, 0.5, 0.5], {"mode": "linear", "coordinate_transformation_mode": "align_corners"}),
        ([1, 1, 1.5, 1.5], {"mode": "cubic"}),
    ],
)
def test_resize_exact(roundtrip: Callable[..., str], scales: list, attributes: dict) -> None:
    scale_array = np.array(scales, np.float32)
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], **attributes)
    assert "F.interpolate(" in roundtrip(node, [X], {"scales": scale_array})


@pytest.mark.parametrize(
    ("attributes", "named"),
    [
        ({"mode": "cubic", "cubic_coeff_a": -0.5}, "cubic_coeff_a"),
        ({"mode": "linear", "coordinate_transformation_mode": "asymmetric"}, "asymmetric"),
        ({"mode": "nearest", "nearest_mode": "ceil"}, "nearest_mode=ceil"),
        ({"mode": "linear", "coordinate_transformation_mode": "align_corners"}, "fractional"),
    ],
)
def test_resize_refused(imported: Callable[..., object], attributes: dict, named: str) -> None:
    scale_array = np.array([1, 1, 0.6, 0.6], np.float32)
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], **attributes)
    with pytest.raises(Exception, match=named):
        imported(node, [X], {"scales": scale_array})
