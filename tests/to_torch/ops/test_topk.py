"""TopK: ONNX's order of equal values (the lower index first), against onnxruntime, and the
generated code exported with a dynamic batch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import helper

from pipeline.to_torch.codegen import load_generated


@pytest.mark.parametrize("largest", [0, 1])
@pytest.mark.parametrize("axis", [0, -1])
def test_topk_ties(roundtrip: Callable[..., str], tmp_path: Path, largest: int, axis: int) -> None:
    x = np.array([[3, 1, 3, 2, 1, 3], [0, 0, 0, 5, 5, 1], [2, 2, 2, 2, 2, 2]], dtype=np.float32)
    node = helper.make_node("TopK", ["x", "k"], ["values", "indices"], axis=axis, largest=largest)
    source = roundtrip(node, [x], {"k": np.array([2], dtype=np.int64)})
    assert "onnx_topk(" in source
    generated = load_generated(tmp_path / "torch_model")
    torch.export.export(
        generated, (torch.from_numpy(x),), dynamic_shapes=({1: torch.export.Dim.AUTO},)
    )
