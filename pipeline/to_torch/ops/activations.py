"""Activations: ONNX ``Relu``, ``Sigmoid``, ``Elu``, ``Celu``, ``Selu``, ``LeakyRelu``,
``HardSwish``, ``HardSigmoid``, ``Softmax``, ``LogSoftmax``, ``Softsign``, ``Softplus``,
``Erf``, ``PRelu``, ``Gelu``, ``Clip`` and ``Dropout`` (inference: the identity).

Converters: onnx2torch's as they are (``torch.nn`` activations and a few ``Onnx*`` modules),
but ``Gelu`` (opset 20, which onnx2torch lacks): ours (:func:`convert_gelu`, ``nn.GELU``).
Code forms: ``F.relu(x)`` and its kin; ``PRelu`` is ``torch.where(x >= 0, x, x * slope)``
(ONNX's slope broadcasts to ``x``); ONNX ``Softmax`` before opset 13 (over the input
flattened at ``axis``) calls the helper ``onnx_softmax_v1``.  Also the code forms of the
``torch.nn`` activations our own passes put in the graph (``nn.GELU``, ``nn.SiLU``...).
"""

from __future__ import annotations

from onnx2torch.node_converters.activations import (
    OnnxErf,
    OnnxHardSigmoid,
    OnnxPReLU,
    OnnxSoftmaxV1V11,
)
from onnx2torch.node_converters.clip import OnnxClip
from onnx2torch.node_converters.dropout import OnnxDropoutDynamic
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from pipeline.to_torch.codegen import literals
from pipeline.to_torch.ops.registry import (
    NodeContext,
    new_converter,
    register_helper,
    translates,
    uses_onnx2torch,
)

uses_onnx2torch(__name__, ("Relu",), nn.ReLU)
uses_onnx2torch(__name__, ("Sigmoid",), nn.Sigmoid)
uses_onnx2torch(__name__, ("Elu",), nn.ELU)
uses_onnx2torch(__name__, ("Celu",), nn.CELU)
uses_onnx2torch(__name__, ("Selu",), nn.SELU)
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
