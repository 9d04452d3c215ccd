"""Runs the converted PyTorch module on the comparison inputs (CUDA when present, else CPU)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch


def torch_device() -> torch.device:
    """The device the comparison runs torch on: the first CUDA device if usable, else CPU."""
    return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")


def run_torch(
    module: torch.nn.Module,
    inputs: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
    device: torch.device | None = None,
) -> dict[str, np.ndarray]:
    """Run ``module`` on ``inputs`` (positional, in ``input_names`` order) without gradients.

    Returns the outputs as NumPy arrays keyed by ``output_names`` (the module returns one
    tensor, or a sequence in the ONNX graph's output order).
    """
    device = device or torch_device()
    module = module.to(device)
    args = [torch.from_numpy(np.ascontiguousarray(inputs[n])).to(device) for n in input_names]
    with torch.no_grad():
        result = module(*args)
    tensors = list(result) if isinstance(result, list | tuple) else [result]
    if len(tensors) != len(output_names):
        raise ValueError(
            f"the torch module returned {len(tensors)} outputs, expected {len(output_names)}"
        )
    return {name: t.detach().cpu().numpy() for name, t in zip(output_names, tensors, strict=True)}
