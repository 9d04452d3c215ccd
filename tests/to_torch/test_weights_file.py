"""weights.safetensors is written one tensor at a time (no bytes copy of the model) in the
format safetensors itself reads back."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from pipeline.to_torch.codegen.package import _weights_file


def test_streamed_weights_read_back_exactly(tmp_path: Path) -> None:
    base = torch.randn(4, 6)
    state = {
        "dense.weight": base,
        "tied.weight": base.t(),  # a transposed view sharing storage: written as its values
        "steps": torch.arange(5, dtype=torch.int64),
        "norm.scale": torch.randn(3).to(torch.bfloat16),
        "half": torch.randn(2, 2).to(torch.float16),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "mask": torch.tensor([True, False]),
    }
    path = tmp_path / "weights.safetensors"
    _weights_file(state, path)
    back = load_file(str(path))
    assert list(back) == sorted(state) or set(back) == set(state)
    for name, value in state.items():
        assert back[name].dtype == value.dtype, name
        assert back[name].shape == value.shape, name
        assert torch.equal(back[name], value.contiguous()), name
    with safe_open(str(path), "pt") as handle:  # the header parses as safetensors' own
        assert set(handle.keys()) == set(state)
