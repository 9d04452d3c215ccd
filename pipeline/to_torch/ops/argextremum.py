"""ONNX ``ArgMax`` and ``ArgMin`` (11, 12, 13).

Converter: onnx2torch's as it is (``OnnxArgExtremum``; ``OnnxArgExtremumOld`` at opset 11).
Code form: ``torch.argmax(x, dim=1, keepdim=True)``; with ``select_last_index`` (the last of
equal extrema, torch gives the first) the index in the flipped input, mapped back:
``x.shape[1] - 1 - torch.argmax(torch.flip(x, (1,)), dim=1, keepdim=True)``.
"""

from __future__ import annotations

import torch
from onnx2torch.node_converters.arg_extrema import OnnxArgExtremum, OnnxArgExtremumOld

from pipeline.to_torch.ops.registry import NodeContext, translates, uses_onnx2torch

uses_onnx2torch(__name__, ("ArgMax", "ArgMin"), OnnxArgExtremum, OnnxArgExtremumOld)


@translates(OnnxArgExtremum, OnnxArgExtremumOld)
def _arg_extremum(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxArgExtremum | OnnxArgExtremumOld)
    name = "argmax" if module.extremum_function is torch.argmax else "argmin"
    x, axis = ctx.args[0], module.axis
    last = isinstance(module, OnnxArgExtremum) and module.select_last_index
    data = f"torch.flip({x}, ({axis},))" if last else x
    call = f"torch.{name}({data}, dim={axis}, keepdim={module.keepdims})"
    return f"{x}.shape[{axis}] - 1 - {call}" if last else call
