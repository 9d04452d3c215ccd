"""ONNX ``Squeeze`` and ``Unsqueeze`` (13, 21: axes as an input).

Converters: ours (:func:`convert_squeeze`, :func:`convert_unsqueeze`): axes known at import,
normalised to non-negative, make onnx2torch's ``OnnxSqueezeStaticAxes`` /
``OnnxUnsqueezeStaticAxes``; otherwise onnx2torch's dynamic-axes modules.  Earlier versions
(axes an attribute): onnx2torch's converters as they are.  Code forms: ``x.squeeze(dims)``
and ``x.unsqueeze(a).unsqueeze(b)``.
"""

from __future__ import annotations

from onnx2torch.node_converters.registry import TConverter
from onnx2torch.node_converters.squeeze import OnnxSqueezeDynamicAxes, OnnxSqueezeStaticAxes
from onnx2torch.node_converters.unsqueeze import (
    OnnxUnsqueezeDynamicAxes,
    OnnxUnsqueezeStaticAxes,
)
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

from pipeline.to_torch.ops.registry import (
    NodeContext,
    dim_arg,
    override_converter,
    translates,
    use_fallback,
)
from pipeline.to_torch.ops.shape_values import known_ints, static_dims


@override_converter(
    "Squeeze", versions=(13, 21), produces=(OnnxSqueezeStaticAxes, OnnxSqueezeDynamicAxes)
)
def convert_squeeze(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Squeeze → onnx2torch's static-axes module, axes normalised to non-negative."""
    data = node.input_values[0]
    dims = static_dims(graph, data)
    axes_name = node.input_values[1] if len(node.input_values) > 1 else ""
    axes = known_ints(graph, axes_name) if axes_name else None
    if dims is None or (axes_name and axes is None):
        return use_fallback(fallback, node, graph, "axes or input rank unknown at import")
    if axes is None:
        # No axes: every dim of size 1.  A symbolic dim (the batch) is never squeezed here,
        # which is what a model that works for any batch size means.
        axes = [i for i, d in enumerate(dims) if d == 1]
    axes = [a + len(dims) if a < 0 else a for a in axes]
    return OperationConverterResult(
        torch_module=OnnxSqueezeStaticAxes(axes=axes),
        onnx_mapping=OnnxMapping(inputs=(data,), outputs=node.output_values),
    )


@override_converter(
    "Unsqueeze",
    versions=(13, 21),
    produces=(OnnxUnsqueezeStaticAxes, OnnxUnsqueezeDynamicAxes),
)
def convert_unsqueeze(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Unsqueeze → onnx2torch's static-axes module, axes normalised to non-negative.

    onnx2torch already handles initializer/Constant axes, but sorts negative axes wrongly
    and misses axes computed from constants.
    """
    data = node.input_values[0]
    axes = known_ints(graph, node.input_values[1])
    dims = static_dims(graph, data)
    if axes is None or (dims is None and any(a < 0 for a in axes)):
        return use_fallback(fallback, node, graph, "axes or input rank unknown at import")
    out_rank = len(dims) + len(axes) if dims is not None else 0
    axes = [a + out_rank if a < 0 else a for a in axes]
    return OperationConverterResult(
        torch_module=OnnxUnsqueezeStaticAxes(axes=axes),
        onnx_mapping=OnnxMapping(inputs=(data,), outputs=node.output_values),
    )


@translates(OnnxSqueezeStaticAxes)
def _squeeze(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxSqueezeStaticAxes)
    if not module.axes:
        return f"{ctx.args[0]}.squeeze()"
    return f"{ctx.args[0]}.squeeze({dim_arg(sorted(module.axes))})"


@translates(OnnxUnsqueezeStaticAxes)
def _unsqueeze(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxUnsqueezeStaticAxes)
    result = ctx.args[0]
    for axis in module._axes:
        result = f"{result}.unsqueeze({axis})"
    return result
