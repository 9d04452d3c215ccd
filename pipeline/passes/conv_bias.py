"""A bias added after a convolution becomes the convolution's own bias input.

Keras adds the bias of ``DepthwiseConv2D``, ``SeparableConv2D`` and the transposed
convolutions as a separate ``BiasAdd``, which tf2onnx exports as ``Add(Conv(x, W), b)`` with
``b`` along the channel axis 1 (``(1, C, 1, 1)``), or in NHWC after the layout transpose,
``Add(Transpose(Conv(x, W), p), b)`` with ``b`` along the axis ``p`` puts the channels on.
This pass gives the Conv the bias (``Conv(x, W, b.reshape(C))`` [then the Transpose], the
reshape recorded for the variable), so onnx2torch imports one ``nn.Conv*d`` that owns the
layer's kernel *and* bias.

Only when the Conv/ConvTranspose has no bias yet, the ops between it and the Add only move
or crop other axes (``Transpose``, ``Squeeze``/``Unsqueeze``, a ``Slice`` with constant axes
that spare the channels: Conv1D and the transposed convolutions) and feed nothing else, and
``b`` is an initializer with ``C`` elements along the channel axis where it is added.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from pipeline.passes import variables
from pipeline.passes.base import PassResult
from pipeline.passes.custom_ops import const_array, hand_over_uses

_CONVS = {"Conv", "ConvTranspose"}


def _channel_vector(array: np.ndarray, rank: int, channels: int, axis: int) -> bool:
    """Whether ``array`` broadcast against a rank-``rank`` tensor varies along ``axis`` only."""
    if array.ndim > rank or array.size != channels:
        return False
    aligned = (1,) * (rank - array.ndim) + array.shape
    return all(d == (channels if i == axis else 1) for i, d in enumerate(aligned))


def _axes(node: ir.Node) -> list[int] | None:
    """Squeeze/Unsqueeze axes as given (input 1 from opset 13, else the attribute)."""
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        found = const_array(node.inputs[1])
        return None if found is None else [int(a) for a in found.reshape(-1)] or None
    attr = node.attributes.get("axes")
    return None if attr is None else list(attr.as_ints()) or None


def _channel_axis_after(node: ir.Node, axis: int, rank: int) -> tuple[int, int] | None:
    """Where the channel axis ``axis`` of a rank-``rank`` tensor is after the layout op
    ``node`` (and the new rank); None when ``node`` is not one or drops the axis."""
    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "Transpose":
        attr = node.attributes.get("perm")
        return None if attr is None else (list(attr.as_ints()).index(axis), rank)
    if node.op_type == "Slice":
        # Cropping other axes (a transposed conv's output shape) leaves the channels alone.
        sliced = const_array(node.inputs[3]) if len(node.inputs) > 3 else None
        if sliced is None:
            return None
        cropped = [int(a) + rank if int(a) < 0 else int(a) for a in sliced.reshape(-1)]
        return None if axis in cropped else (axis, rank)
    axes = _axes(node) if node.op_type in ("Squeeze", "Unsqueeze") else None
    if axes is None:
        return None
    if node.op_type == "Squeeze":
        squeezed = [a + rank if a < 0 else a for a in axes]
        if axis in squeezed:
            return None
        return axis - sum(a < axis for a in squeezed), rank - len(squeezed)
    out_rank = rank + len(axes)
    for a in sorted(a + out_rank if a < 0 else a for a in axes):
        if a <= axis:
            axis += 1
    return axis, out_rank


def _single_use(value: ir.Value) -> bool:
    """One user, not counting ``Shape`` ops (the bias changes no shape)."""
    users = [n for n, _ in value.uses() if n.op_type != "Shape"]
    return len(users) == 1 and not value.is_graph_output()


def _bias_of(add: ir.Node) -> tuple[ir.Node, ir.Value, ir.Value, int, int] | None:
    """``(conv, bias, summand, axis, rank)`` when ``add`` adds ``bias`` to a bias-free
    Conv's output carried through layout ops only (each with no other user); ``axis`` is
    where the channels are in ``summand`` (of rank ``rank``)."""
    for summand, bias in (add.inputs, reversed(add.inputs)):
        chain: list[ir.Node] = []
        value = summand
        while value is not None and _single_use(value):
            producer = value.producer()
            if producer is None:
                break
            if producer.op_type in _CONVS and producer.domain in ("", "ai.onnx"):
                weight = const_array(producer.inputs[1])
                if len(producer.inputs) > 2 or weight is None or bias is None:
                    break
                axis, rank = 1, weight.ndim
                for node in reversed(chain):
                    moved = _channel_axis_after(node, axis, rank)
                    if moved is None:
                        break
                    axis, rank = moved
                else:
                    assert summand is not None
                    return producer, bias, summand, axis, rank
                break
            chain.append(producer)
            value = producer.inputs[0] if producer.inputs else None
    return None


def fuse_conv_bias(model: ir.Model) -> int:
    """Move every such bias into its convolution; returns how many moved."""
    graph = model.graph
    record = variables.record_of(model)
    moved = 0
    for add in list(graph):
        if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or len(add.inputs) != 2:
            continue
        found = _bias_of(add)
        if found is None:
            continue
        conv, bias, summand, axis, rank = found
        weight = const_array(conv.inputs[1])
        array = const_array(bias)
        if weight is None or array is None or not bias.is_initializer():
            continue
        group_attr = conv.attributes.get("group")
        group = group_attr.as_int() if group_attr is not None else 1
        channels = weight.shape[0] if conv.op_type == "Conv" else weight.shape[1] * group
        if not _channel_vector(array, rank, channels, axis):
            continue
        vector = (
            bias
            if array.ndim == 1
            else variables.derived(
                graph, record, bias, array.reshape(-1), "reshape", f"{bias.name}/conv_bias"
            )
        )
        new = ir.Node(
            conv.domain,
            conv.op_type,
            [*conv.inputs, vector],
            attributes=list(conv.attributes.values()),
            name=conv.name,
        )
        graph.insert_before(conv, new)
        # The layout ops after the Conv now carry the biased output; the Add goes.  With no
        # layout op between them (tf2onnx adds a one-channel bias before its Transpose), the
        # Add's readers take the new Conv's output itself.
        direct = summand is conv.outputs[0]
        conv.outputs[0].replace_all_uses_with(new.outputs[0])
        hand_over_uses(add.outputs[0], new.outputs[0] if direct else summand)
        graph.remove(add, safe=True)
        moved += 1
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
