"""GlobalMaxPool's code form against onnxruntime, and its generated code exported."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import helper

from pipeline.to_torch.codegen import load_generated


@pytest.mark.parametrize(
    ("spatial", "dims"), [([5], "2"), ([4, 3], "(2, 3)"), ([2, 3, 2], "(2, 3, 4)")]
)
def test_global_max_pool(
    roundtrip: Callable[..., str], tmp_path: Path, spatial: list[int], dims: str
) -> None:
    x = np.random.default_rng(0).normal(size=(2, 3, *spatial)).astype(np.float32)
    source = roundtrip(helper.make_node("GlobalMaxPool", ["x"], ["y"]), [x])
    assert f".amax(dim={dims}, keepdim=True)" in source
    generated = load_generated(tmp_path / "torch_model")
    torch.export.export(
        generated, (torch.from_numpy(x),), dynamic_shapes=({0: torch.export.Dim.AUTO},)
    )
