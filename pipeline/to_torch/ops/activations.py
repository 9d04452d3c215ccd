"""Activations: ONNX ``Relu``, ``Sigmoid``, ``Elu``, ``Celu``, ``Selu``, ``LeakyRelu``,
``HardSwish``, ``HardSigmoid``, ``Softmax``, ``LogSoftmax``, ``Softsign``, ``Softplus``,
``Erf``, ``PRelu``, ``Gelu``, ``Clip`` and ``Dropout`` (inference: the identity).

Converters: onnx2torch's as they are (``torch.nn`` activations and a few ``Onnx*`` modules),
but ours for ``Gelu`` (opset 20, which onnx2torch lacks: :func:`convert_gelu`, ``nn.GELU``),
``Clip`` 11+ (:func:`convert_clip`: an empty input name is a missing bound, which
onnx2torch read as a run-time one; integer bounds stay ints), ``Selu``
(:func:`convert_selu`: ``nn.SELU`` for the default alpha/gamma, else :class:`Selu`, code form
``gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))``) and ``Dropout`` 12+
(:func:`convert_dropout`: inference, so the identity whatever ``seed`` and ``ratio`` are;
its optional mask output is all True, :class:`DropoutWithMask`, code form
``(x, torch.ones_like(x, dtype=torch.bool))``; ``training_mode`` known True with a nonzero
ratio is refused: its output is random; a run-time ``training_mode`` falls back to
onnx2torch's ``OnnxDropoutDynamic``, which has no code form).
Code forms: ``F.relu(x)`` and its kin; ``PRelu`` is ``torch.where(x >= 0, x, x * slope)``
(ONNX's slope broadcasts to ``x``); ONNX ``Softmax`` before opset 13 (over the input
flattened at ``axis``) calls the helper ``onnx_softmax_v1``.  Also the code forms of the
``torch.nn`` activations our own passes put in the graph (``nn.GELU``, ``nn.SiLU``...).
"""

from __future__ import annotations

import math

import torch
from onnx2torch.node_converters.activations import (
    OnnxErf,
    OnnxHardSigmoid,
    OnnxPReLU,
    OnnxSoftmaxV1V11,
)
from onnx2torch.node_converters.clip import OnnxClip
from onnx2torch.node_converters.dropout import OnnxDropoutDynamic
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value
from torch import nn

from pipeline.to_torch.codegen import literals
from pipeline.to_torch.ops.registry import (
    NodeContext,
    new_converter,
    override_converter,
    register_helper,
    translates,
    use_fallback,
    uses_onnx2torch,
)

uses_onnx2torch(__name__, ("Relu",), nn.ReLU)
uses_onnx2torch(__name__, ("Sigmoid",), nn.Sigmoid)
uses_onnx2torch(__name__, ("Elu",), nn.ELU)
uses_onnx2torch(__name__, ("Celu",), nn.CELU)
uses_onnx2torch(__name__, ("LeakyRelu",), nn.LeakyReLU)
uses_onnx2torch(__name__, ("HardSwish",), nn.Hardswish)
uses_onnx2torch(__name__, ("HardSigmoid",), OnnxHardSigmoid)
uses_onnx2torch(__name__, ("Softmax",), nn.Softmax, OnnxSoftmaxV1V11)
uses_onnx2torch(__name__, ("LogSoftmax",), nn.LogSoftmax, OnnxSoftmaxV1V11)
uses_onnx2torch(__name__, ("Softsign",), nn.Softsign)
uses_onnx2torch(__name__, ("Softplus",), nn.Softplus)
uses_onnx2torch(__name__, ("Erf",), OnnxErf)
uses_onnx2torch(__name__, ("PRelu",), OnnxPReLU)
uses_onnx2torch(__name__, ("Clip",), OnnxClip, nn.ReLU, nn.ReLU6, nn.Identity)
uses_onnx2torch(__name__, ("Dropout",), nn.Dropout, OnnxDropoutDynamic)


_ELEMENTWISE: dict[type, str] = {
    nn.ReLU: "F.relu({x})",
    nn.ReLU6: "F.relu6({x})",
    nn.Sigmoid: "torch.sigmoid({x})",
    nn.Tanh: "torch.tanh({x})",
    nn.SiLU: "F.silu({x})",
    nn.Hardswish: "F.hardswish({x})",
    nn.Hardsigmoid: "F.hardsigmoid({x})",
    nn.Softsign: "F.softsign({x})",
    nn.Mish: "F.mish({x})",
    nn.SELU: "F.selu({x})",
    nn.Identity: "{x}",
    nn.Dropout: "{x}",
    OnnxErf: "torch.erf({x})",
}


def _elementwise(ctx: NodeContext) -> str:
    return _ELEMENTWISE[type(ctx.module)].format(x=ctx.args[0])


for _cls in _ELEMENTWISE:
    translates(_cls)(_elementwise)


@translates(nn.Softmax, nn.LogSoftmax)
def _softmax(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, nn.Softmax | nn.LogSoftmax)
    function = "softmax" if isinstance(module, nn.Softmax) else "log_softmax"
    return f"torch.{function}({ctx.args[0]}, dim={module.dim})"


@new_converter("Gelu", versions=(20,), produces=(nn.GELU,))
def convert_gelu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Gelu → ``nn.GELU`` (``approximate``: ``none`` or ``tanh``)."""
    del graph
    approximate = node.attributes.get("approximate", "none")
    if isinstance(approximate, bytes):
        approximate = approximate.decode()
    return OperationConverterResult(
        torch_module=nn.GELU(approximate=approximate),
        onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values),
    )


@translates(OnnxPReLU)
def _prelu(ctx: NodeContext) -> str:
    x, slope = ctx.args
    return f"torch.where({x} >= 0, {x}, {x} * {slope})"


@translates(nn.GELU)
def _gelu(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, nn.GELU)
    extra = ', approximate="tanh"' if module.approximate == "tanh" else ""
    return f"F.gelu({ctx.args[0]}{extra})"


@translates(nn.ELU, nn.CELU)
def _elu(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, nn.ELU | nn.CELU)
    name = "elu" if isinstance(module, nn.ELU) else "celu"
    return f"F.{name}({ctx.args[0]}, alpha={literals.number(module.alpha)})"


@translates(nn.LeakyReLU)
def _leaky_relu(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, nn.LeakyReLU)
    return f"F.leaky_relu({ctx.args[0]}, {literals.number(module.negative_slope)})"


@translates(nn.Softplus)
def _softplus(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, nn.Softplus)
    if module.beta != 1 or module.threshold != 20:
        return (
            f"F.softplus({ctx.args[0]}, beta={literals.number(module.beta)}, "
            f"threshold={literals.number(module.threshold)})"
        )
    return f"F.softplus({ctx.args[0]})"


@translates(nn.Hardtanh)
def _hardtanh(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, nn.Hardtanh)
    low, high = literals.number(module.min_val), literals.number(module.max_val)
    return f"F.hardtanh({ctx.args[0]}, {low}, {high})"


@translates(OnnxHardSigmoid)
def _hard_sigmoid(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxHardSigmoid)
    alpha, beta = literals.number(module.alpha), literals.number(module.beta)
    return f"torch.clamp({ctx.args[0]} * {alpha} + {beta}, 0.0, 1.0)"


@translates(OnnxClip)
def _clip(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxClip)
    low, high = module.min_val, module.max_val
    if low == 0 and high == 6:
        return f"F.relu6({ctx.args[0]})"
    if low == 0 and high is None:
        return f"F.relu({ctx.args[0]})"
    bounds = ", ".join(
        f"{key}={literals.number(value)}"
        for key, value in (("min", low), ("max", high))
        if value is not None
    )
    return f"torch.clamp({ctx.args[0]}, {bounds})"


@translates(OnnxSoftmaxV1V11)
def _softmax_v1(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxSoftmaxV1V11)
    name = ctx.helper("onnx_softmax_v1")
    return f"{name}({ctx.args[0]}, axis={module.axis}, log={module.is_log})"


register_helper(
    "onnx_softmax_v1",
    '''
def onnx_softmax_v1(x: torch.Tensor, axis: int, log: bool) -> torch.Tensor:
    """ONNX Softmax before opset 13: over the input flattened to 2-D at ``axis``."""
    flat = x.flatten(axis) if axis > 0 else x.reshape(1, -1)
    flat = flat.reshape(-1, flat.shape[-1]) if axis > 0 else flat
    result = torch.log_softmax(flat, dim=-1) if log else torch.softmax(flat, dim=-1)
    return result.reshape(x.shape)
''',
)


# ------------------------------------------------------------------------------------ Clip


@override_converter(
    "Clip", versions=(11, 12, 13), produces=(OnnxClip, nn.ReLU, nn.ReLU6, nn.Identity)
)
def convert_clip(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Clip → ``torch.clamp`` bounds known at import; an empty (or absent) min/max input is
    no bound.  A bound computed at run time: onnx2torch's converter (which refuses it)."""
    names = [*node.input_values[1:3], "", ""][:2]
    bounds: list[bool | int | float | None] = []
    for name in names:
        if not name:
            bounds.append(None)
            continue
        try:
            value = get_const_value(name, graph)
        except KeyError:
            return use_fallback(fallback, node, graph, "min/max computed from tensor data")
        bounds.append(value.reshape(()).item() if isinstance(value, torch.Tensor) else value)
    low, high = bounds
    module: nn.Module
    if low is None and high is None:
        module = nn.Identity()
    elif low == 0 and high is None:
        module = nn.ReLU()
    elif low == 0 and high == 6:
        module = nn.ReLU6()
    else:
        module = OnnxClip(min_val=low, max_val=high)
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values),
    )


# ------------------------------------------------------------------------------------ Selu

_SELU_ALPHA = 1.67326319217681884765625  # torch's (and ONNX's default, as float32)
_SELU_GAMMA = 1.05070102214813232421875


class Selu(nn.Module):
    """ONNX Selu with a non-default ``alpha`` or ``gamma`` (``F.selu`` fixes both)."""

    def __init__(self, alpha: float, gamma: float) -> None:
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``gamma * (x if x > 0 else alpha * (exp(x) - 1))``."""
        return self.gamma * torch.where(x > 0, x, self.alpha * (torch.exp(x) - 1))


@override_converter("Selu", versions=(6,), produces=(nn.SELU, Selu))
def convert_selu(
    node: OnnxNode, graph: OnnxGraph, _fallback: TConverter | None
) -> OperationConverterResult:
    """Selu → ``nn.SELU`` for the default alpha and gamma, else :class:`Selu`."""
    del graph
    alpha = float(node.attributes.get("alpha", _SELU_ALPHA))
    gamma = float(node.attributes.get("gamma", _SELU_GAMMA))
    default = math.isclose(alpha, _SELU_ALPHA, rel_tol=1e-6) and math.isclose(
        gamma, _SELU_GAMMA, rel_tol=1e-6
    )
    return OperationConverterResult(
        torch_module=nn.SELU() if default else Selu(alpha, gamma),
        onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values),
    )


@translates(Selu)
def _selu(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, Selu)
    x = ctx.args[0]
    alpha, gamma = literals.number(module.alpha), literals.number(module.gamma)
    return f"{gamma} * torch.where({x} > 0, {x}, {alpha} * (torch.exp({x}) - 1))"


# --------------------------------------------------------------------------------- Dropout


class DropoutWithMask(nn.Module):
    """ONNX Dropout at inference with its mask output: ``x`` and a mask of all True."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` unchanged and its (all True) keep-mask."""
        return x, torch.ones_like(x, dtype=torch.bool)


@override_converter(
    "Dropout",
    versions=(12, 13),
    produces=(nn.Dropout, nn.Identity, DropoutWithMask, OnnxDropoutDynamic),
)
def convert_dropout(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Dropout at inference → the identity (``nn.Dropout``, or ``nn.Identity`` for a run-time
    ratio), or :class:`DropoutWithMask` when the mask is an output; ``seed`` is moot."""
    names = [*node.input_values, "", ""]
    ratio: float | None = 0.5
    training = False
    try:
        if names[1]:
            ratio = float(get_const_value(names[1], graph))
    except KeyError:
        ratio = None  # only matters in training mode
    try:
        if names[2]:
            training = bool(get_const_value(names[2], graph))
    except KeyError:
        return use_fallback(fallback, node, graph, "training_mode computed from tensor data")
    if training and ratio != 0:
        raise NotImplementedError(
            f"Dropout ({node.name}): training_mode=True with ratio {ratio}: a random output, "
            "not inference"
        )
    outputs = [o for o in node.output_values if o]
    module: nn.Module
    if len(outputs) > 1:
        module = DropoutWithMask()
    elif ratio is None or not 0 <= ratio <= 1:
        module = nn.Identity()
    else:
        module = nn.Dropout(p=ratio)
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values),
    )


@translates(DropoutWithMask)
def _dropout_with_mask(ctx: NodeContext) -> str:
    x = ctx.args[0]
    return f"({x}, torch.ones_like({x}, dtype=torch.bool))"
