"""Attention pooling over time, with an optional padding mask.

``y = sum_t softmax_t(s)_t * h_t`` with ``s_t = w2 · tanh(W1 h_t + b1) + b2`` over
``h`` of shape ``(batch, time, features)``; where a mask is given, ``s_t`` is replaced by a
constant (e.g. ``-1e9``) at the time steps where the mask is False (padding).

**Match** (anchored on the weighted sum, checked backwards; op types, constant axes and
inferred shapes, never names):

- ``ReduceSum(Mul(h, Unsqueeze(a, axes=[-1])), axes=[1], keepdims=0)`` with ``h`` of rank 3;
- ``a = Softmax(s', axis=-1)`` over the ``(batch, time)`` scores;
- ``s'`` is one of: ``s`` (no mask); ``Where(mask, s, c)``; or tf2onnx's arithmetic form of
  ``SelectV2``, ``Cast(mask)·s + c·Cast(Not(mask))`` (either operand order), where ``mask``
  is boolean, ``c`` a constant of equal elements or ``Expand`` of one, and ``s'`` has ``s``'s
  shape;
- ``s = Squeeze(score, axes=[-1])`` where ``score`` (``(batch, time, 1)``) is a Dense with
  one unit on ``tanh(Dense(h))`` -- the *same* ``h`` that is pooled;
- a Dense on the last axis is ``[Add(·, b)]`` over either ``MatMul(x, W)`` or Keras's
  Tensordot form ``Reshape(MatMul(Reshape(x, [-1, D]), W), shape)`` whose inferred output
  shape is provably ``x``'s with the last dim replaced; ``W`` (and ``b``, if any) are
  initializers; a missing bias becomes zeros;
- every intermediate tensor is used only inside the match (shape chains included) and is
  not a graph output.

**ONNX form.**  ``tf2torch.AttentionPooling(h, W1, b1, W2, b2)`` or
``tf2torch.MaskedAttentionPooling(h, W1, b1, W2, b2, mask)`` with attribute ``mask_value``:
model-local functions spelling out the computation above (opset 15 or newer: the masked
form needs ``CastLike``).

**Torch form.**  :class:`AttentionPooling`: ``projection`` and ``score`` ``nn.Linear``\\ s
(weights transposed from TF's ``(in, out)``), and the mask handled with ``torch.where``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
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

OP_TYPE = "AttentionPooling"
MASKED_OP_TYPE = "MaskedAttentionPooling"
MIN_OPSET = 15


class AttentionPooling(nn.Module):
    """``sum_t softmax_t(score(tanh(projection(x)))) * x_t``; masked steps get ``mask_value``."""

    def __init__(self, projection: nn.Linear, score: nn.Linear, mask_value: float | None) -> None:
        super().__init__()
        self.projection = projection
        self.score = score
        self.mask_value = mask_value

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        scores = self.score(torch.tanh(self.projection(x))).squeeze(-1)  # (batch, time)
        if mask is not None:
            assert self.mask_value is not None
            scores = torch.where(mask, scores, torch.full_like(scores, self.mask_value))
        weights = torch.softmax(scores, dim=-1)
        return (x * weights.unsqueeze(-1)).sum(dim=1)


def _linear(kernel: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    """``nn.Linear`` computing ``x @ kernel + bias`` (TF's kernel is ``(in, out)``)."""
    linear = nn.Linear(kernel.shape[0], kernel.shape[1], dtype=kernel.dtype)
    with torch.no_grad():
        linear.weight.copy_(kernel.T)
        linear.bias.copy_(bias.reshape(-1))
    return linear


def _convert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    x, w1, b1, w2, b2, *rest = node.input_values
    weights = []
    for name in (w1, b1, w2, b2):
        if name not in graph.initializers:
            raise NotImplementedError(
                f"{node.operation_type} ({node.name}): {name} is not constant"
            )
        weights.append(graph.initializers[name].to_torch())
    mask_value = node.attributes.get("mask_value") if rest else None
    module = AttentionPooling(
        _linear(weights[0], weights[1]),
        _linear(weights[2], weights[3]),
        None if mask_value is None else float(mask_value),
    )
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(x, *rest), outputs=node.output_values),
    )


@custom_ops.register_converter(OP_TYPE)
def convert_attention_pooling(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """``tf2torch::AttentionPooling`` → :class:`AttentionPooling` (no mask)."""
    return _convert(node, graph)


@custom_ops.register_converter(MASKED_OP_TYPE)
def convert_masked_attention_pooling(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """``tf2torch::MaskedAttentionPooling`` → :class:`AttentionPooling` with the mask."""
    return _convert(node, graph)


def _function(opset: int, masked: bool) -> onnx.FunctionProto:
    if masked:
        header = f"{MASKED_OP_TYPE} <mask_value> (x, w1, b1, w2, b2, mask) => (y)"
        select = """
            fill_value = Constant <value_float: float = @mask_value> ()
            fill = CastLike(fill_value, s)
            scores = Where(mask, s, fill)"""
    else:
        header = f"{OP_TYPE} (x, w1, b1, w2, b2) => (y)"
        select = """
            scores = Identity(s)"""
    return custom_ops.parse_function(
        f"""
        <domain: "{custom_ops.DOMAIN}", opset_import: ["" : {opset}]>
        {header} {{
            last = Constant <value = int64[1] {{-1}}> ()
            time = Constant <value = int64[1] {{1}}> ()
            p = MatMul(x, w1)
            pb = Add(p, b1)
            t = Tanh(pb)
            s1 = MatMul(t, w2)
            s1b = Add(s1, b2)
            s = Squeeze(s1b, last){select}
            a = Softmax <axis = -1> (scores)
            a3 = Unsqueeze(a, last)
            weighted = Mul(x, a3)
            y = ReduceSum <keepdims = 0> (weighted, time)
        }}
        """
    )


# -- matching ------------------------------------------------------------------------------


def _producer(value: ir.Value | None, op_type: str) -> ir.Node | None:
    node = value.producer() if value is not None else None
    if node is None or node.op_type != op_type or node.domain not in ("", "ai.onnx"):
        return None
    return node


def _axes(node: ir.Node, rank: int) -> list[int] | None:
    """``node``'s constant axes (input 1, opset 13+), normalised to ``[0, rank)``."""
    if len(node.inputs) < 2:
        return None
    axes = custom_ops.const_array(node.inputs[1])
    if axes is None:
        return None
    return sorted(int(a) % rank for a in np.asarray(axes).reshape(-1))


@dataclass
class _Dense:
    x: ir.Value
    kernel: ir.Value
    bias: ir.Value | None
    nodes: list[ir.Node]


def _dense(value: ir.Value | None) -> _Dense | None:
    """``value = x @ W (+ b)`` over the last axis of ``x`` (MatMul or Keras's Tensordot)."""
    if value is None:
        return None
    nodes: list[ir.Node] = []
    bias = None
    pre_bias: ir.Value | None = value
    add = _producer(value, "Add")
    if add is not None:
        a, b = add.inputs
        for y, c in ((a, b), (b, a)):
            cw = custom_ops.weight(c)
            if cw is not None and y is not None and custom_ops.const_array(y) is None:
                bias, pre_bias = cw, y
                nodes.append(add)
                break
        else:
            return None
    matmul = _producer(pre_bias, "MatMul")
    outer = None
    if matmul is None:
        outer = _producer(pre_bias, "Reshape")
        matmul = _producer(outer.inputs[0], "MatMul") if outer is not None else None
    if matmul is None:
        return None
    x, w = matmul.inputs
    kernel = custom_ops.weight(w)
    kernel_dims = custom_ops.dims(kernel)
    if kernel is None or kernel_dims is None or len(kernel_dims) != 2 or x is None:
        return None
    n_in, n_out = kernel_dims
    inner_nodes = [matmul]
    if outer is not None:
        inner = _producer(x, "Reshape")
        target = custom_ops.const_array(inner.inputs[1]) if inner is not None else None
        if inner is None or target is None or list(target.reshape(-1)) != [-1, n_in]:
            return None
        x = inner.inputs[0]
        x_dims, out_dims = custom_ops.dims(x), custom_ops.dims(outer.outputs[0])
        if x is None or x_dims is None or out_dims is None:
            return None
        if not custom_ops.same_dims(out_dims, [*x_dims[:-1], n_out]):
            return None  # the outer Reshape is not provably "x's shape, last dim n_out"
        inner_nodes = [inner, matmul, outer]
    x_dims = custom_ops.dims(x)
    if x is None or not x_dims or x_dims[-1] != n_in:
        return None
    if bias is not None and custom_ops.dims(bias) not in ([n_out], [1]):
        return None
    return _Dense(x, kernel, bias, [*inner_nodes, *nodes])


@dataclass
class _Mask:
    mask: ir.Value
    value: float
    nodes: list[ir.Node]


def _fill_value(value: ir.Value | None) -> tuple[float, list[ir.Node]] | None:
    """The one value of a constant (or ``Expand`` of a constant) tensor."""
    nodes: list[ir.Node] = []
    expand = _producer(value, "Expand")
    if expand is not None:
        nodes.append(expand)
        value = expand.inputs[0]
    array = custom_ops.const_array(value)
    if array is None or array.size == 0 or not np.all(array == array.reshape(-1)[0]):
        return None
    return float(array.reshape(-1)[0]), nodes


def _cast_of(value: ir.Value | None) -> tuple[ir.Value, ir.Node] | None:
    cast = _producer(value, "Cast")
    if cast is None or cast.inputs[0] is None or cast.inputs[0].dtype != ir.DataType.BOOL:
        return None
    return cast.inputs[0], cast


def _masked(value: ir.Value) -> tuple[ir.Value, _Mask | None] | None:
    """``(s, mask)`` for the scores ``value`` fed to Softmax (``mask`` None: unmasked)."""
    where = _producer(value, "Where")
    if where is not None:
        cond, s, fill = where.inputs
        found = _fill_value(fill)
        if cond is None or s is None or cond.dtype != ir.DataType.BOOL or found is None:
            return None
        return s, _Mask(cond, found[0], [where, *found[1]])
    add = _producer(value, "Add")
    if add is None:
        return value, None
    # tf2onnx's SelectV2: Cast(cond) * s + fill * Cast(Not(cond)), in any operand order.
    for kept_term, masked_term in (add.inputs, reversed(add.inputs)):
        keep_mul, fill_mul = _producer(kept_term, "Mul"), _producer(masked_term, "Mul")
        if keep_mul is None or fill_mul is None:
            continue
        for cast_in, s in (keep_mul.inputs, reversed(keep_mul.inputs)):
            kept = _cast_of(cast_in)
            if kept is None or s is None:
                continue
            for fill, not_cast in (fill_mul.inputs, reversed(fill_mul.inputs)):
                inverted = _cast_of(not_cast)
                not_node = _producer(inverted[0], "Not") if inverted is not None else None
                found = _fill_value(fill)
                if inverted is None or not_node is None or found is None:
                    continue
                if not_node.inputs[0] is not kept[0]:
                    continue
                nodes = [add, keep_mul, fill_mul, kept[1], inverted[1], not_node, *found[1]]
                return s, _Mask(kept[0], found[0], nodes)
    return None


@dataclass
class _Match:
    x: ir.Value
    projection: _Dense
    score: _Dense
    mask: _Mask | None
    nodes: list[ir.Node]
    result: ir.Value


def _match(reduce: ir.Node) -> _Match | None:
    if reduce.op_type != "ReduceSum" or reduce.domain not in ("", "ai.onnx"):
        return None
    if custom_ops.int_attr(reduce, "keepdims", 1) != 0 or _axes(reduce, 3) != [1]:
        return None
    weighted = _producer(reduce.inputs[0], "Mul")
    if weighted is None:
        return None
    for x, expanded in (weighted.inputs, reversed(weighted.inputs)):
        unsqueeze = _producer(expanded, "Unsqueeze")
        x_dims = custom_ops.dims(x)
        if x is None or unsqueeze is None or x_dims is None or len(x_dims) != 3:
            continue
        if _axes(unsqueeze, 3) != [2]:
            continue
        softmax = _producer(unsqueeze.inputs[0], "Softmax")
        if softmax is None or custom_ops.int_attr(softmax, "axis", -1) not in (-1, 1):
            continue
        scores = softmax.inputs[0]
        found = _masked(scores) if scores is not None else None
        if found is None or scores is None:
            continue
        s, mask = found
        s_dims, scores_dims = custom_ops.dims(s), custom_ops.dims(scores)
        if s_dims is None or scores_dims is None or len(s_dims) != 2:
            continue
        if not custom_ops.same_dims(scores_dims, s_dims):
            continue
        squeeze = _producer(s, "Squeeze")
        if squeeze is None or _axes(squeeze, 3) != [2]:
            continue
        score = _dense(squeeze.inputs[0])
        if score is None or (custom_ops.dims(score.kernel) or [0])[-1] != 1:
            continue
        tanh = _producer(score.x, "Tanh")
        projection = _dense(tanh.inputs[0]) if tanh is not None else None
        if tanh is None or projection is None or projection.x is not x:
            continue
        dtype = x.dtype
        if dtype is None or not dtype.is_floating_point():
            continue
        if any(w.dtype != dtype for w in (projection.kernel, score.kernel)):
            continue
        nodes = [
            *projection.nodes,
            tanh,
            *score.nodes,
            squeeze,
            *(mask.nodes if mask is not None else []),
            softmax,
            unsqueeze,
            weighted,
            reduce,
        ]
        return _Match(x, projection, score, mask, nodes, reduce.outputs[0])
    return None


def _weights(
    graph: ir.Graph, dense: _Dense, name: str, record: provenance.Provenance
) -> tuple[ir.Value, ir.Value]:
    """The kernel and bias of ``dense`` as initializers only the new node uses."""
    kernel = custom_ops.own_initializer(graph, dense.kernel, record=record)
    if dense.bias is None:
        assert dense.kernel.const_value is not None
        kernel_array = dense.kernel.const_value.numpy()
        zeros = np.zeros(kernel_array.shape[-1], kernel_array.dtype)
        bias = custom_ops.new_initializer(graph, f"{name}/bias", zeros)
    else:
        bias = custom_ops.own_initializer(graph, dense.bias, record=record)
    return kernel, bias


class AttentionPoolingPatch:
    """Rewrite additive attention pooling (optionally masked) into one ``tf2torch`` node."""

    name = "attention_pooling"
    description = (
        "softmax(Dense(1)(tanh(Dense(h))) [masked]) weighted sum over time -> "
        "tf2torch.(Masked)AttentionPooling (local function) -> AttentionPooling module "
        "with nn.Linear projection and score"
    )

    def apply(self, model: onnx.ModelProto) -> PassResult:
        """Return the rewritten copy of ``model`` and the number of poolings replaced."""
        opset = custom_ops.default_opset(model)
        ops = {n.op_type for n in model.graph.node}
        if opset < MIN_OPSET or not {"ReduceSum", "Softmax", "Tanh"} <= ops:
            return PassResult(model, 0)
        ir_model = custom_ops.analysed(model)
        graph = ir_model.graph
        record = custom_ops.variable_record(ir_model)
        new_names: list[str] = []
        masked_used = unmasked_used = False
        for reduce in [n for n in graph if n.op_type == "ReduceSum"]:
            match = _match(reduce)
            if match is None:
                continue
            keep: Sequence[ir.Value] = [
                match.x,
                match.projection.kernel,
                match.score.kernel,
                *([b for b in (match.projection.bias, match.score.bias) if b is not None]),
                *([match.mask.mask] if match.mask is not None else []),
            ]
            removed = custom_ops.removal_set(match.nodes, keep, match.result)
            if removed is None:
                continue
            name = custom_ops.unique_node_name(graph, custom_ops.layer_scope(match.nodes, OP_TYPE))
            w1, b1 = _weights(graph, match.projection, f"{name}/projection", record)
            w2, b2 = _weights(graph, match.score, f"{name}/score", record)
            inputs = [match.x, w1, b1, w2, b2]
            attributes = []
            op_type = OP_TYPE
            if match.mask is not None:
                op_type = MASKED_OP_TYPE
                inputs.append(match.mask.mask)
                attributes.append(ir.AttrFloat32("mask_value", match.mask.value))
                masked_used = True
            else:
                unmasked_used = True
            new = ir.Node(custom_ops.DOMAIN, op_type, inputs, attributes, name=name, num_outputs=1)
            custom_ops.replace_match(graph, removed, new, match.result)
            new_names.append(name)
        if not new_names:
            return PassResult(model, 0)
        functions = [
            *([_function(opset, masked=False)] if unmasked_used else []),
            *([_function(opset, masked=True)] if masked_used else []),
        ]
        out = custom_ops.finish_patch(
            self.name, ir_model, model, new_names, *functions, record=record
        )
        return PassResult(out, len(new_names))


PATCH = AttentionPoolingPatch()
