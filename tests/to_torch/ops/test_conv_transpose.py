"""ConvTranspose with asymmetric padding (Keras ``Conv2DTranspose(padding="same",
strides=2)``), ``auto_pad`` SAME and ``output_shape``: an ``nn.ConvTranspose2d`` holding the
kernel unchanged, then a crop."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from onnx import helper

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3, 5, 4)).astype(np.float32)
W = RNG.standard_normal((3, 4, 3, 3)).astype(np.float32)
B = RNG.standard_normal(4).astype(np.float32)


@pytest.mark.parametrize(
    "attributes",
    [
        {"strides": [2, 2], "pads": [0, 0, 1, 1]},  # Keras "same", stride 2
        {"strides": [2, 2], "pads": [1, 0, 2, 1], "output_padding": [1, 1]},
        {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
        {"strides": [2, 2], "auto_pad": "SAME_LOWER"},
        {"strides": [3, 2], "output_shape": [16, 10]},
        {"strides": [1, 1], "pads": [1, 1, 1, 1]},
    ],
)
def test_conv_transpose_padding(roundtrip: Callable[..., str], attributes: dict) -> None:
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], **attributes)
    source = roundtrip(node, [X], {"w": W, "b": B})
    assert "nn.ConvTranspose2d(" in source


def test_kernel_kept_unchanged_in_the_module(imported: Callable[..., torch.nn.Module]) -> None:
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], pads=[0, 0, 1, 1])
    module = imported(node, [X], {"w": W})
    weights = [p for name, p in module.named_parameters() if name.endswith("weight")]
    assert len(weights) == 1
    np.testing.assert_array_equal(weights[0].detach().numpy(), W)
