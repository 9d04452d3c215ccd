"""ONNX ``ReduceSum``, ``ReduceMean``, ``ReduceMax``, ``ReduceMin``, ``ReduceProd``,
``ReduceL1``, ``ReduceL2``, ``ReduceLogSum``, ``ReduceLogSumExp``, ``ReduceSumSquare``.

Converter: ours (:func:`convert_reduce`) where the axes are an input (ReduceSum 13+, the
others 18+) known at import: onnx2torch's ``OnnxReduceStaticAxes`` (or ``nn.Identity`` for
``noop_with_empty_axes``); otherwise onnx2torch's.  Earlier versions (axes an attribute):
onnx2torch's converter as it is (``OnnxReduceStaticAxes``, ``OnnxReduceSumStaticAxes``).
Code form: ``x.sum(dim=..., keepdim=...)`` and its kin.
"""

from __future__ import annotations

from onnx2torch.node_converters.reduce import (
    OnnxReduceStaticAxes,
    OnnxReduceSumDynamicAxes,
    OnnxReduceSumStaticAxes,
)
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from pipeline.to_torch.ops.registry import (
    NodeContext,
    UntranslatableError,
    dim_arg,
    override_converter,
    translates,
    use_fallback,
)
from pipeline.to_torch.ops.shape_values import known_ints, static_dims

_AXES_INPUT_SINCE = {
    "ReduceSum": (13,),
    "ReduceMax": (18, 20),
    "ReduceMin": (18, 20),
    "ReduceMean": (18,),
    "ReduceProd": (18,),
    "ReduceL1": (18,),
    "ReduceL2": (18,),
    "ReduceLogSum": (18,),
    "ReduceLogSumExp": (18,),
    "ReduceSumSquare": (18,),
}


def convert_reduce(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Reduce → onnx2torch's static-axes module (or identity for ``noop_with_empty_axes``)."""
    data = node.input_values[0]
    axes_name = node.input_values[1] if len(node.input_values) > 1 else ""
    axes = known_ints(graph, axes_name) if axes_name else []
    dims = static_dims(graph, data)
    if axes is None or (dims is None and any(a < 0 for a in axes)):
        return use_fallback(fallback, node, graph, "axes computed from tensor data")
    module: nn.Module
    if not axes and node.attributes.get("noop_with_empty_axes", 0):
        module = nn.Identity()
    else:
        rank = len(dims) if dims is not None else 0
        module = OnnxReduceStaticAxes(
            operation_type=node.operation_type,
            axes=[a + rank if a < 0 else a for a in axes] or None,
            keepdims=node.attributes.get("keepdims", 1),
        )
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(data,), outputs=node.output_values),
    )


for _op_type, _versions in _AXES_INPUT_SINCE.items():
    override_converter(
        _op_type,
        versions=_versions,
        produces=(
            OnnxReduceStaticAxes,
            OnnxReduceSumStaticAxes,
            OnnxReduceSumDynamicAxes,
            nn.Identity,
        ),
    )(convert_reduce)


@translates(OnnxReduceStaticAxes, OnnxReduceSumStaticAxes)
def _reduce(ctx: NodeContext) -> str:
    module = ctx.module
    x = ctx.args[0]
    if isinstance(module, OnnxReduceSumStaticAxes):
        operation, axes, keepdims = "ReduceSum", module._axes, bool(module._keepdims)
        if not axes and module._noop_with_empty_axes:
            return x
    else:
        assert isinstance(module, OnnxReduceStaticAxes)
        operation, axes, keepdims = module.operation_type, module.axes, module.keepdims
    axes = list(axes) if axes else list(range(ctx.rank()))
    dims = f"dim={dim_arg(axes)}, keepdim={keepdims}"
    method = {
        "ReduceMean": "mean",
        "ReduceSum": "sum",
        "ReduceMax": "amax",
        "ReduceMin": "amin",
    }.get(operation)
    if method is not None:
        return f"{x}.{method}({dims})"
    if operation == "ReduceProd" and len(axes) == 1:
        return f"{x}.prod({dims})"
    if operation == "ReduceSumSquare":
        return f"{x}.square().sum({dims})"
    if operation == "ReduceL2":
        return f"torch.linalg.vector_norm({x}, 2, {dims})"
    if operation == "ReduceL1":
        return f"torch.linalg.vector_norm({x}, 1, {dims})"
    if operation == "ReduceLogSumExp":
        return f"torch.logsumexp({x}, {dims})"
    raise UntranslatableError(f"{type(module).__name__}({operation})")
