"""The float32 noise floor of a converted model: how far float32 itself is from the exact result.

The ONNX graph is imported into torch twice over: as it is, and as a float64 copy (every
floating parameter, buffer and input in float64, every ``Cast`` to a floating type made a
``Cast`` to float64).  Both run on the comparison inputs; for each floating output the noise
floor is ``max |out_float32 - out_float64|`` and its scale ``max |out_float64|``.  Both runs
go through the same converters, so a conversion fault moves them alike and cannot widen the
floor; only rounding does.  :class:`pipeline.core.compare.Noise` turns the floor into each
pair's tolerance.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch

from pipeline.core import compare
from pipeline.core.onnx_graph import all_nodes
from pipeline.core.torch_runner import torch_device
from pipeline.to_torch.importer import import_onnx

log = logging.getLogger(__name__)

_FLOATING = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


@dataclass
class NoiseFloors:
    """The measured floors per floating output, or why they could not be measured."""

    floors: dict[str, compare.Noise] = field(default_factory=dict)
    unmeasured: str | None = None
    """Why there are no floors (the comparison then uses the fixed per-dtype tolerances)."""


def _float64_graph(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of ``model`` whose casts to a floating type cast to float64 instead, so the
    float64 run does not drop back to float32 (or float16) half way; None if it has none."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    changed = False
    for node in all_nodes(model.graph):
        if node.op_type != "Cast":
            continue
        for attribute in node.attribute:
            if attribute.name == "to" and attribute.i in _FLOATING:
                attribute.i = onnx.TensorProto.DOUBLE
                changed = True
    return model if changed else None


def _run(
    module: torch.nn.Module,
    inputs: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
    device: torch.device,
    dtype: torch.dtype | None,
) -> dict[str, np.ndarray]:
    args = []
    for name in input_names:
        tensor = torch.from_numpy(np.ascontiguousarray(inputs[name]))
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        args.append(tensor.to(device))
    with torch.no_grad():
        result = module.to(device)(*args)
    tensors = list(result) if isinstance(result, list | tuple) else [result]
    if len(tensors) != len(output_names):
        raise ValueError(f"{len(tensors)} outputs, expected {len(output_names)}")
    return {n: t.detach().cpu().numpy() for n, t in zip(output_names, tensors, strict=True)}


def measure_noise(
    model: onnx.ModelProto,
    inputs: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
) -> NoiseFloors:
    """The float32 noise floor of every floating, non-float64 output of ``model`` on
    ``inputs`` (see the module docstring).

    Never raises for a model that cannot run in float64 (a converter that insists on
    float32, an op without a float64 kernel): the result then has no floors and
    ``unmeasured`` says why, and the comparison falls back to the fixed tolerances.
    """
    device = torch_device()
    try:
        native = import_onnx(model).eval()
        widened = _float64_graph(model)
        # Without floating casts the float64 module is the same graph: copy, don't re-import.
        wide = (copy.deepcopy(native) if widened is None else import_onnx(widened)).double()
        low = _run(native, inputs, input_names, output_names, device, None)
        high = _run(wide, inputs, input_names, output_names, device, torch.float64)
    except Exception as err:  # any failure only means "no floor": fixed tolerances apply
        text = " ".join(str(err).split())[:200]
        log.info("float32 noise floor not measured: %s", text)
        return NoiseFloors(unmeasured=f"float64 run failed: {type(err).__name__}: {text}")
    floors = {}
    for name in output_names:
        out, ref = low[name], high[name]
        if out.dtype.kind != "f" or out.dtype == np.float64 or out.shape != ref.shape:
            continue
        out64, ref64 = out.astype(np.float64), ref.astype(np.float64)
        finite = np.isfinite(out64) & np.isfinite(ref64)
        if not finite.any():
            continue
        noise = float(np.max(np.abs(out64 - ref64)[finite]))
        scale = float(np.max(np.abs(ref64[finite])))
        floors[name] = compare.Noise(noise=noise, scale=scale, dtype=out.dtype.name)
    return NoiseFloors(floors)
