"""LayerNormalization on any axis, with its Mean/InvStdDev outputs and broadcast scale;
BatchNormalization and InstanceNormalization with statistics as inputs; LRN."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from onnx import helper

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)


@pytest.mark.parametrize("axis", [0, 1, -1, -3])
@pytest.mark.parametrize("outputs", [1, 3])
def test_layer_norm(roundtrip: Callable[..., str], axis: int, outputs: int) -> None:
    normalized = X.shape[axis:]
    scale = RNG.standard_normal(normalized).astype(np.float32)
    bias = RNG.standard_normal(normalized).astype(np.float32)
    names = ["y", "mean", "inv_std_dev"][:outputs]
    node = helper.make_node("LayerNormalization", ["x", "s", "b"], names, axis=axis, epsilon=1e-3)
    source = roundtrip(node, [X], {"s": scale, "b": bias})
    assert ("layer_norm_with_statistics(" in source) == (outputs == 3)


def test_layer_norm_broadcast_scale(roundtrip: Callable[..., str]) -> None:
    scale = RNG.standard_normal(5).astype(np.float32)
    node = helper.make_node("LayerNormalization", ["x", "s"], ["y"], axis=1)
    assert "F.layer_norm(" in roundtrip(node, [X], {"s": scale})


def test_batch_and_instance_norm_with_inputs(roundtrip: Callable[..., str]) -> None:
    stats = [RNG.standard_normal(3).astype(np.float32) for _ in range(4)]
    stats[3] = np.abs(stats[3])
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])
    assert "F.batch_norm(" in roundtrip(node, [X, *stats])
    node = helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=1e-3)
    assert "F.instance_norm(" in roundtrip(node, [X, *stats[:2]])


def test_lrn(roundtrip: Callable[..., str]) -> None:
    node = helper.make_node("LRN", ["x"], ["y"], size=3, alpha=2e-4, beta=0.6, bias=1.5)
    assert "F.local_response_norm(" in roundtrip(node, [X])


def test_lrn_even_size_refused(imported: Callable[..., object]) -> None:
    node = helper.make_node("LRN", ["x"], ["y"], size=4)
    with pytest.raises(Exception, match="even size"):
        imported(node, [X])
