"""Runs the converted PyTorch module on the comparison inputs (CUDA when present, else CPU).

One device per run: the caller places the module once (:func:`place_module`), and everything
that feeds it afterwards (outputs, gradients, diff's recording) takes the device from the
module (:func:`module_device`), so a CUDA machine runs exactly what a CPU one does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch


def torch_device() -> torch.device:
    """The device the comparison runs torch on: the first CUDA device if usable, else CPU."""
    return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")


def module_device(module: torch.nn.Module) -> torch.device:
    """The device ``module`` lives on: that of its first parameter, else of its first buffer,
    else the CPU (a module without tensors runs wherever its inputs are)."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def positional_args(
    inputs: Mapping[str, np.ndarray], input_names: Sequence[str], device: torch.device
) -> list[torch.Tensor]:
    """``inputs`` as tensors on ``device``, in ``input_names`` order."""
    return [torch.from_numpy(np.ascontiguousarray(inputs[n])).to(device) for n in input_names]


def place_module(module: torch.nn.Module, device: torch.device | None = None) -> torch.device:
    """Move ``module`` (in place) to ``device``, by default :func:`torch_device`, and return
    the device it is on now: what every later run of it must feed its inputs to."""
    module.to(device or torch_device())
    return module_device(module)


def run_torch(
    module: torch.nn.Module,
    inputs: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
) -> dict[str, np.ndarray]:
    """Run ``module`` on ``inputs`` (positional, in ``input_names`` order) without gradients,
    on the module's own device (:func:`module_device`; move it first with
    :func:`place_module`).

    Returns the outputs as NumPy arrays keyed by ``output_names`` (the module returns one
    tensor, or a sequence in the ONNX graph's output order).
    """
    args = positional_args(inputs, input_names, module_device(module))
    with torch.no_grad():
        result = module(*args)
    tensors = list(result) if isinstance(result, list | tuple) else [result]
    if len(tensors) != len(output_names):
        raise ValueError(
            f"the torch module returned {len(tensors)} outputs, expected {len(output_names)}"
        )
    return {name: t.detach().cpu().numpy() for name, t in zip(output_names, tensors, strict=True)}
