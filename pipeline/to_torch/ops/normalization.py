"""Normalizations: ONNX ``LayerNormalization``, ``BatchNormalization``,
``InstanceNormalization`` and ``LRN``.

Converters: onnx2torch's for ``BatchNormalization`` and ``InstanceNormalization``
(``nn.BatchNorm*d``/``nn.InstanceNorm*d`` holding constant statistics and weights, else
``OnnxBatchNorm``/``OnnxInstanceNorm`` taking them as inputs).  Ours for
``LayerNormalization`` (:func:`convert_layer_norm`): ``nn.LayerNorm`` when scale and bias are
constants of the normalized shape and only ``Y`` is read, else :class:`LayerNormalization`
(scale/bias broadcast or computed, any ``axis``, and the ``Mean``/``InvStdDev`` outputs,
which onnx2torch's module does not return).  Ours for ``LRN`` (:func:`convert_lrn`):
onnx2torch's ``nn.LocalResponseNorm``, refused for an even ``size`` (torch centres an even
window one channel lower than ONNX).

Code forms: ``self.<path>(x)`` for the ``torch.nn`` modules with weights (built by
``codegen/modules.py``); ``F.batch_norm(x, mean, var, scale, bias, eps=...)``,
``F.instance_norm(x, weight=scale, bias=bias, eps=...)``, ``F.layer_norm(x, x.shape[1:],
eps=...) * scale + bias`` (the helper ``layer_norm_with_statistics`` when the statistics are
read) and ``F.local_response_norm(x, 3, alpha=..., beta=..., k=...)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.node_converters.batch_norm import OnnxBatchNorm
from onnx2torch.node_converters.instance_norm import OnnxInstanceNorm
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from pipeline.to_torch.codegen import literals
from pipeline.to_torch.ops.registry import (
    NodeContext,
    call_attribute,
    override_converter,
    register_helper,
    static_dims,
    translates,
    use_fallback,
    uses_onnx2torch,
)

uses_onnx2torch(
    __name__,
    ("BatchNormalization",),
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    OnnxBatchNorm,
)
uses_onnx2torch(
    __name__,
    ("InstanceNormalization",),
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    OnnxInstanceNorm,
)

translates(
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LayerNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)(call_attribute)


def _eps(value: float) -> str:
    return f", eps={literals.number(value)}" if value != 1e-5 else ""


@translates(OnnxBatchNorm)
def _batch_norm(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxBatchNorm)
    x, scale, bias, mean, var = ctx.args
    return f"F.batch_norm({x}, {mean}, {var}, {scale}, {bias}{_eps(module.epsilon)})"


@translates(OnnxInstanceNorm)
def _instance_norm(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxInstanceNorm)
    x, scale, bias = ctx.args
    return f"F.instance_norm({x}, weight={scale}, bias={bias}{_eps(module.epsilon)})"


# ---------------------------------------------------------------------- LayerNormalization

_LAYER_NORM_WITH_STATISTICS = '''
def layer_norm_with_statistics(
    x: torch.Tensor, axis: int, scale: torch.Tensor, bias: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ONNX LayerNormalization over the dims from ``axis`` on, with its other outputs: the
    mean and the inverse standard deviation (kept dims of size 1)."""
    dims = tuple(range(axis, x.dim()))
    mean = x.mean(dims, keepdim=True)
    inv_std_dev = torch.rsqrt((x - mean).square().mean(dims, keepdim=True) + eps)
    y = (x - mean) * inv_std_dev * scale
    return (y if bias is None else y + bias), mean, inv_std_dev
'''
layer_norm_with_statistics = register_helper(
    "layer_norm_with_statistics", _LAYER_NORM_WITH_STATISTICS
)


class LayerNormalization(nn.Module):
    """ONNX LayerNormalization over the dims from ``axis`` (non-negative) on, scale and bias
    as inputs (broadcast); returns ``Y`` alone, or ``(Y, Mean, InvStdDev)[:outputs]``."""

    def __init__(self, axis: int, epsilon: float, outputs: int) -> None:
        super().__init__()
        self.axis = axis
        self.epsilon = epsilon
        self.outputs = outputs

    def forward(
        self, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The normalized ``x`` (and its statistics)."""
        if self.outputs == 1:
            y = F.layer_norm(x, x.shape[self.axis :], eps=self.epsilon) * scale
            return y if bias is None else y + bias
        results = layer_norm_with_statistics(x, self.axis, scale, bias, self.epsilon)
        return tuple(results[: self.outputs])


def _rank(graph: OnnxGraph, name: str) -> int | None:
    info = graph.value_info.get(name)
    if info is None or not info.type.tensor_type.HasField("shape"):
        return None
    return len(info.type.tensor_type.shape.dim)


@override_converter(
    "LayerNormalization", versions=(17,), produces=(nn.LayerNorm, LayerNormalization)
)
def convert_layer_norm(
    node: OnnxNode, graph: OnnxGraph, _fallback: TConverter | None
) -> OperationConverterResult:
    """LayerNormalization → ``nn.LayerNorm`` or :class:`LayerNormalization`."""
    axis = int(node.attributes.get("axis", -1))
    epsilon = float(node.attributes.get("epsilon", 1e-5))
    rank = _rank(graph, node.input_values[0])
    if axis < 0:
        if rank is None:
            raise NotImplementedError(f"LayerNormalization ({node.name}): rank unknown")
        axis += rank
    outputs = len(node.output_values)
    weights = [n for n in node.input_values[1:] if n]
    normalized = static_dims(graph, node.input_values[0], axis)
    constants = all(n in graph.initializers for n in weights)
    if outputs == 1 and constants and normalized is not None:
        values = [graph.initializers[n].to_torch() for n in weights]
        if all(list(v.shape) == normalized for v in values):
            layer_norm = nn.LayerNorm(normalized, eps=epsilon)
            with torch.no_grad():
                layer_norm.weight.data = values[0]
                if len(values) > 1:
                    layer_norm.bias.data = values[1]
            return OperationConverterResult(
                torch_module=layer_norm,
                onnx_mapping=OnnxMapping(
                    inputs=(node.input_values[0],), outputs=node.output_values
                ),
            )
    return OperationConverterResult(
        torch_module=LayerNormalization(axis, epsilon, outputs),
        onnx_mapping=OnnxMapping(
            inputs=(node.input_values[0], *weights), outputs=node.output_values
        ),
    )


@translates(LayerNormalization)
def _layer_norm(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, LayerNormalization)
    x, scale, *bias = ctx.args
    if module.outputs > 1:
        call = (
            f"{ctx.helper('layer_norm_with_statistics')}({x}, {module.axis}, {scale}, "
            f"{bias[0] if bias else None}, {literals.number(module.epsilon)})"
        )
        return call if module.outputs == 3 else f"{call}[:{module.outputs}]"
    text = f"F.layer_norm({x}, {x}.shape[{module.axis}:]{_eps(module.epsilon)}) * {scale}"
    return f"{text} + {bias[0]}" if bias else text


# ------------------------------------------------------------------------------------- LRN


@override_converter("LRN", versions=(1, 13), produces=(nn.LocalResponseNorm,))
def convert_lrn(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """LRN → onnx2torch's ``nn.LocalResponseNorm``; NotImplementedError for an even size."""
    size = int(node.attributes["size"])
    if size % 2 == 0:
        raise NotImplementedError(
            f"LRN ({node.name}): even size {size} (torch's window is one channel lower)"
        )
    return use_fallback(fallback, node, graph, "no converter")


@translates(nn.LocalResponseNorm)
def _lrn(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, nn.LocalResponseNorm)
    return (
        f"F.local_response_norm({ctx.args[0]}, {module.size}, "
        f"alpha={literals.number(module.alpha)}, beta={literals.number(module.beta)}, "
        f"k={literals.number(module.k)})"
    )
