"""ArgMax/ArgMin code forms (keepdims, negative axis, select_last_index) against onnxruntime."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import helper

from pipeline.to_torch.codegen import load_generated


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("select_last_index", [0, 1])
@pytest.mark.parametrize("axis", [1, -1])
def test_arg_extremum(
    roundtrip: Callable[..., str],
    tmp_path: Path,
    op: str,
    keepdims: int,
    select_last_index: int,
    axis: int,
) -> None:
    # Small integers: ties, where select_last_index matters.
    x = np.random.default_rng(0).integers(0, 3, size=(3, 4, 5)).astype(np.float32)
    node = helper.make_node(
        op, ["x"], ["y"], axis=axis, keepdims=keepdims, select_last_index=select_last_index
    )
    source = roundtrip(node, [x])
    name = op.lower()
    assert f"torch.{name}(" in source
    assert f"dim={axis}, keepdim={bool(keepdims)}" in source
    assert ("torch.flip(" in source) == bool(select_last_index)
    generated = load_generated(tmp_path / "torch_model")
    program = torch.export.export(
        generated, (torch.from_numpy(x),), dynamic_shapes=({0: torch.export.Dim.AUTO},)
    )
    other = torch.from_numpy(np.random.default_rng(1).integers(0, 3, (7, 4, 5)).astype(np.float32))
    torch.testing.assert_close(program.module()(other), generated(other))
