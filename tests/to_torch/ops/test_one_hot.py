"""OneHot (onnx2torch has none): negative and out-of-range indices, axis, float indices,
against onnxruntime; the generated code exported with a dynamic batch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import helper

from pipeline.to_torch.codegen import load_generated


@pytest.mark.parametrize("axis", [-1, 0, 1, -2])
@pytest.mark.parametrize(
    ("index_dtype", "depth_dtype"),
    # Combinations onnxruntime implements (float depth and indices too).
    [(np.int64, np.int64), (np.int32, np.int32), (np.float32, np.float32)],
)
def test_one_hot(
    roundtrip: Callable[..., str], tmp_path: Path, axis: int, index_dtype: type, depth_dtype: type
) -> None:
    # 7 and -7 are out of range for depth 5: a row of "off" values.
    indices = np.array([[0, 4, -1], [-5, 7, -7]], dtype=index_dtype)
    node = helper.make_node("OneHot", ["indices", "depth", "values"], ["y"], axis=axis)
    initializers = {
        "depth": np.array(5, dtype=depth_dtype),
        "values": np.array([-2.0, 3.0], dtype=np.float32),
    }
    source = roundtrip(node, [indices], initializers)
    assert "onnx_one_hot(indices, 5, " in source
    generated = load_generated(tmp_path / "torch_model")
    torch.export.export(
        generated, (torch.from_numpy(indices),), dynamic_shapes=({0: torch.export.Dim.AUTO},)
    )
