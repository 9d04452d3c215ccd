"""Scale layer: ``y = x * w`` with ``w`` a variable the layer made with ``add_weight``.

**Match.**  A default-domain ``Mul`` of a computed tensor ``x`` and an initializer ``w``
where

- ``w`` is a TF variable as read: tf2onnx names it ``.../ReadVariableOp:0`` (``.../read:0``
  for TF1 variables), trainable or not.  Constants the model's code multiplies by (the
  ``1/sqrt(d)`` of attention, ``Rescaling``'s factor, MultiHeadAttention's scale) are named
  after their ``Const`` and are not matched, nor are tensors folded from variables
  (BatchNorm's ``gamma * rsqrt(var)``, LayerNorm's reshaped ``gamma``, PReLU's ``-alpha``);
- ``w`` has shape ``()``, ``(1,)`` or ``(1, ..., 1, C)`` with ``C`` the last dim of ``x``
  (a scalar or per-channel scale over the last axis, rank at most ``x``'s), so the product
  has ``x``'s shape: a Mul that broadcasts ``x`` up (LayerNorm's ``rsqrt(var) * gamma``)
  is not a scale layer;
- both are floating point, and ``w`` is not also a graph input (it could be overridden).

Nothing about the layer's name is used.  What also matches, correctly: any layer whose
whole job is multiplying by its own weight, e.g. ConvNeXt's ``LayerScale`` and the
``use_scale`` weight of ``keras.layers.Attention``.

**ONNX form.**  ``tf2torch.ScaleLayer(x, w)``, a model-local function ``Mul(x, w)``.

**Torch form.**  :class:`ScaleLayer`, ``w`` as the parameter ``scale`` (TF's shape).
"""

from __future__ import annotations

import onnx
import onnx_ir as ir
import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from pipeline.core import provenance
from pipeline.passes import custom_ops
from pipeline.passes.base import PassResult

OP_TYPE = "ScaleLayer"


class ScaleLayer(nn.Module):
    """``x * scale``, with ``scale`` a parameter of shape ``()``, ``(1,)`` or ``(..., C)``."""

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.scale = nn.Parameter(scale.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


@custom_ops.register_converter(OP_TYPE)
def convert_scale_layer(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """``tf2torch::ScaleLayer(x, w)`` → :class:`ScaleLayer` holding ``w``."""
    x, w = node.input_values
    if w not in graph.initializers:
        raise NotImplementedError(f"{OP_TYPE} ({node.name}): its scale is not an initializer")
    return OperationConverterResult(
        torch_module=ScaleLayer(graph.initializers[w].to_torch()),
        onnx_mapping=OnnxMapping(inputs=(x,), outputs=node.output_values),
    )


def _function(opset: int) -> onnx.FunctionProto:
    return custom_ops.parse_function(
        f"""
        <domain: "{custom_ops.DOMAIN}", opset_import: ["" : {opset}]>
        {OP_TYPE} (x, scale) => (y) {{
            y = Mul(x, scale)
        }}
        """
    )


def _match(node: ir.Node, record: provenance.Provenance) -> tuple[ir.Value, ir.Value] | None:
    """``(x, w)`` if ``node`` is a scale layer's Mul (see the module docstring), else None."""
    if node.op_type != "Mul" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
        return None
    a, b = node.inputs
    for x, w in ((a, b), (b, a)):
        w_value = custom_ops.weight(w)
        if x is None or w_value is None or custom_ops.const_array(x) is not None:
            continue
        if not custom_ops.is_variable_read(w_value, record):
            continue
        if x.dtype is None or w_value.dtype != x.dtype or not x.dtype.is_floating_point():
            continue
        x_dims, w_dims = custom_ops.dims(x), custom_ops.dims(w_value)
        if not x_dims or w_dims is None or len(w_dims) > len(x_dims):
            continue
        if any(d != 1 for d in w_dims[:-1]):
            continue
        if w_dims and w_dims[-1] != 1 and w_dims[-1] != x_dims[-1]:
            continue
        return x, w_value
    return None


class ScaleLayerPatch:
    """Rewrite ``Mul(x, <TF variable of shape (), (1,) or (C,)>)`` into ``tf2torch.ScaleLayer``."""

    name = "scale_layer"
    description = (
        "Mul of an activation by a TF variable (scalar or per last-axis channel) -> "
        "tf2torch.ScaleLayer (local function Mul) -> ScaleLayer module with `scale` parameter"
    )

    def apply(self, model: onnx.ModelProto) -> PassResult:
        """Return the rewritten copy of ``model`` and the number of scale layers replaced."""
        opset = custom_ops.default_opset(model)
        initializers = {t.name for t in model.graph.initializer}
        if opset < 7 or not any(
            n.op_type == "Mul" and initializers.intersection(n.input) for n in model.graph.node
        ):
            return PassResult(model, 0)
        ir_model = custom_ops.analysed(model)
        graph = ir_model.graph
        record = custom_ops.variable_record(ir_model)
        matches = [(node, m) for node in graph if (m := _match(node, record)) is not None]
        if not matches:
            return PassResult(model, 0)
        new_names = []
        for mul, (x, w) in matches:
            name = custom_ops.unique_node_name(graph, custom_ops.layer_scope([mul], OP_TYPE))
            scale = custom_ops.own_initializer(graph, w, record=record)
            new = ir.Node(custom_ops.DOMAIN, OP_TYPE, [x, scale], name=name, num_outputs=1)
            custom_ops.replace_match(graph, [mul], new, mul.outputs[0])
            new_names.append(name)
        out = custom_ops.finish_patch(
            self.name, ir_model, model, new_names, _function(opset), record=record
        )
        return PassResult(out, len(matches))


PATCH = ScaleLayerPatch()
