"""A bias added after a convolution becomes the convolution's own bias input.

Keras adds the bias of ``DepthwiseConv2D``, ``SeparableConv2D`` and the transposed
convolutions as a separate ``BiasAdd``, which tf2onnx exports as ``Add(Conv(x, W), b)`` with
``b`` along the channel axis 1 (``(1, C, 1, 1)``), or in NHWC after the layout transpose,
``Add(Transpose(Conv(x, W), p), b)`` with ``b`` along the axis ``p`` puts the channels on.
This pass gives the Conv the bias (``Conv(x, W, b.reshape(C))`` [then the Transpose], the
reshape recorded for the variable), so onnx2torch imports one ``nn.Conv*d`` that owns the
layer's kernel *and* bias.

Only when the Conv/ConvTranspose has no bias yet, its output (and the Transpose's) feeds
nothing but the Add, and ``b`` is an initializer with ``C`` elements along that one axis.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from pipeline.passes import variables
from pipeline.passes.base import PassResult
from pipeline.passes.custom_ops import const_array

_CONVS = {"Conv", "ConvTranspose"}


def _channel_vector(array: np.ndarray, rank: int, channels: int, axis: int) -> bool:
    """Whether ``array`` broadcast against a rank-``rank`` tensor varies along ``axis`` only."""
    if array.ndim > rank or array.size != channels:
        return False
    aligned = (1,) * (rank - array.ndim) + array.shape
    return all(d == (channels if i == axis else 1) for i, d in enumerate(aligned))


def _perm(node: ir.Node | None) -> list[int] | None:
    if node is None or node.op_type != "Transpose" or node.domain not in ("", "ai.onnx"):
        return None
    attr = node.attributes.get("perm")
    return None if attr is None else list(attr.as_ints())


def fuse_conv_bias(model: ir.Model) -> int:
    """Move every such bias into its convolution; returns how many moved."""
    graph = model.graph
    record = variables.record_of(model)
    moved = 0
    for add in list(graph):
        if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or len(add.inputs) != 2:
            continue
        for summand, bias in (add.inputs, reversed(add.inputs)):
            producer = summand.producer() if summand is not None else None
            perm = _perm(producer)
            conv_out = producer.inputs[0] if perm is not None and producer is not None else summand
            conv = conv_out.producer() if conv_out is not None else None
            if conv is None or conv.op_type not in _CONVS or conv.domain not in ("", "ai.onnx"):
                continue
            assert conv_out is not None and summand is not None
            if len(conv.inputs) > 2 or len(conv_out.uses()) != 1 or len(summand.uses()) != 1:
                continue
            weight = const_array(conv.inputs[1])
            array = const_array(bias)
            if weight is None or array is None or bias is None or not bias.is_initializer():
                continue
            group_attr = conv.attributes.get("group")
            group = group_attr.as_int() if group_attr is not None else 1
            channels = weight.shape[0] if conv.op_type == "Conv" else weight.shape[1] * group
            axis = 1 if perm is None else perm.index(1)
            if not _channel_vector(array, weight.ndim, channels, axis):
                continue
            vector = bias if array.ndim == 1 else variables.derived(
                graph, record, bias, array.reshape(-1), "reshape", f"{bias.name}/conv_bias"
            )
            new = ir.Node(
                conv.domain,
                conv.op_type,
                [*conv.inputs, vector],
                attributes=list(conv.attributes.values()),
                name=conv.name,
            )
            graph.insert_before(add, new)
            result = new.outputs[0]
            if perm is not None:
                moved_back = ir.node("Transpose", [result], attributes={"perm": perm})
                graph.insert_after(new, moved_back)
                result = moved_back.outputs[0]
            add.outputs[0].replace_all_uses_with(result)
            graph.remove(add, safe=True)
            moved += 1
            break
    if moved:
        RemoveUnusedNodesPass()(model)
        variables.save(model, record)
    return moved


class ConvBiasPass:
    """``Add(Conv(x, W), b)`` → ``Conv(x, W, b)`` for a per-channel ``b``."""

    name = "conv_bias"
    description = (
        "Add of a per-channel bias after a bias-free Conv/ConvTranspose (Keras depthwise, "
        "separable and transposed convolutions) -> the Conv's bias input"
    )

    def apply(self, model: onnx.ModelProto) -> PassResult:
        """Return the rewritten copy of ``model`` and the number of biases moved."""
        if not any(n.op_type in _CONVS for n in model.graph.node):
            return PassResult(model, 0)
        ir_model = ir.serde.deserialize_model(model)
        changes = fuse_conv_bias(ir_model)
        if changes == 0:
            return PassResult(model, 0)
        return PassResult(ir.serde.serialize_model(ir_model), changes)
