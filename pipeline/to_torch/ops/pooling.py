"""Pooling: ONNX ``MaxPool`` and ``AveragePool``.

Converters: onnx2torch's as they are (``nn.MaxPool*d``/``nn.AvgPool*d``; asymmetric padding
makes an ``nn.Sequential(pad, pool)`` that ``codegen/simplify.py`` splits).  Code forms:
``F.max_pool2d(x, kernel, stride=...)`` and ``F.avg_pool2d(...)``, defaults left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from pipeline.to_torch.codegen import literals
from pipeline.to_torch.ops.registry import NodeContext, translates, uses_onnx2torch

uses_onnx2torch(__name__, ("MaxPool",), nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.Sequential)
uses_onnx2torch(__name__, ("AveragePool",), nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)


def _tuple_or_int(values: Sequence[int]) -> str:
    return literals.int_or_tuple(list(values))


def _pool_args(module: nn.Module, names: Sequence[str], defaults: dict[str, Any]) -> str:
    parts = []
    for name in names:
        value = getattr(module, name)
        if name == "stride" and value == module.kernel_size:
            continue
        value = list(value) if isinstance(value, list | tuple) else value
        if value == defaults.get(name) or (
            isinstance(value, list) and set(value) == {defaults.get(name)}
        ):
            continue
        text = _tuple_or_int(value) if isinstance(value, list) else literals.number(value)
        parts.append(f"{name}={text}")
    return "".join(f", {p}" for p in parts)


@translates(nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
def _max_pool(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, nn.MaxPool1d | nn.MaxPool2d | nn.MaxPool3d)
    spatial = type(module).__name__[-2:].lower()
    kernel = module.kernel_size
    kernel_text = _tuple_or_int(list(kernel)) if isinstance(kernel, list | tuple) else kernel
    extra = _pool_args(
        module,
        ["stride", "padding", "dilation", "ceil_mode"],
        {"padding": 0, "dilation": 1, "ceil_mode": False},
    )
    return f"F.max_pool{spatial}({ctx.args[0]}, {kernel_text}{extra})"


@translates(nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
def _avg_pool(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, nn.AvgPool1d | nn.AvgPool2d | nn.AvgPool3d)
    spatial = type(module).__name__[-2:].lower()
    kernel = module.kernel_size
    kernel_text = _tuple_or_int(list(kernel)) if isinstance(kernel, list | tuple) else kernel
    extra = _pool_args(
        module,
        ["stride", "padding", "ceil_mode", "count_include_pad"],
        {"padding": 0, "ceil_mode": False, "count_include_pad": True},
    )
    return f"F.avg_pool{spatial}({ctx.args[0]}, {kernel_text}{extra})"
