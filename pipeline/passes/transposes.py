"""Layout transposes pushed down the graph until they cancel.

A Keras CNN computes in NHWC; ONNX convolutions, pooling and ``BatchNormalization`` work in
NCHW.  tf2onnx wraps each such op in ``Transpose(NHWC → NCHW)`` … ``Transpose(NCHW → NHWC)``,
and with every variable an input (the stateless export) its own transpose optimiser cannot
move them past the ops between two convolutions, so a ResNet arrives with a pair around
every layer.  This pass moves each ``Transpose`` below the ops that do not care about layout
and removes pairs that cancel::

    Transpose(Transpose(x, p), q)         -> Transpose(x, p∘q), or x when that is the identity
    U(Transpose(x, p))                    -> Transpose(U(x), p)           U element-wise, one input
    B(Transpose(x, p), Transpose(y, p))   -> Transpose(B(x, y), p)        B element-wise, broadcasting
    B(Transpose(x, p), c)                 -> Transpose(B(x, c'), p)       c a constant, c' = c laid out for x
    Concat(Transpose(x_i, p)..., axis=a)  -> Transpose(Concat(x_i..., axis=p[a]), p)
    Reduce(Transpose(x, p), axes=A)       -> Reduce(x, axes=p[A]) [+ Transpose of the kept axes]
    Softmax(Transpose(x, p), axis=a)      -> Transpose(Softmax(x, axis=p[a]), p)
    Pad(Transpose(x, p), pads)            -> Transpose(Pad(x, pads permuted), p)

so ``Conv → T → T⁻¹ → BatchNorm → T → Relu → T⁻¹ → Conv`` becomes ``Conv → BatchNorm →
Relu → Conv``.  Every rewrite moves data, never values: a constant operand that is a TF
variable (a per-channel scale layer) is left where it is, in its own layout (the transposes
around it stay), so the variable keeps its Keras layout and the patches still recognise it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from pipeline.core import provenance
from pipeline.passes import variables
from pipeline.passes.base import PassResult
from pipeline.passes.custom_ops import const_array, hand_over_uses

_UNARY = {
    "Abs", "Ceil", "Cast", "Clip", "Celu", "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid",
    "HardSwish", "Identity", "IsInf", "IsNaN", "LeakyRelu", "Log", "Mish", "Neg", "Not",
    "Reciprocal", "Relu", "Round", "Selu", "Shrink", "Sigmoid", "Sign", "Sin", "Cos", "Softplus",
    "Softsign", "Sqrt", "Tanh", "ThresholdedRelu", "Dropout",
}  # fmt: skip
_BINARY = {
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Equal", "Greater", "Less",
    "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "PRelu", "Mod", "BitShift",
}  # fmt: skip
_REDUCE = {
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
}  # fmt: skip
# Reductions whose axes moved from an attribute to an input at this opset.
_AXES_INPUT_SINCE = {"ReduceSum": 13}
_AXES_INPUT_DEFAULT = 18


def _perm(node: ir.Node) -> list[int] | None:
    if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx"):
        return None
    attr = node.attributes.get("perm")
    if attr is None:
        rank = len(node.inputs[0].shape) if node.inputs[0] and node.inputs[0].shape else None
        return None if rank is None else list(reversed(range(rank)))
    return list(attr.as_ints())


def _inverse(perm: Sequence[int]) -> list[int]:
    return [int(i) for i in np.argsort(perm)]


class _Rewriter:
    """One run of the pass over a model."""

    def __init__(self, model: ir.Model, opset: int) -> None:
        self.model = model
        self.graph = model.graph
        self.opset = opset
        self.record: provenance.Provenance = variables.record_of(model)
        self.changes = 0

    # -- building blocks -----------------------------------------------------------------

    def _transpose_after(self, anchor: ir.Node, value: ir.Value, perm: Sequence[int]) -> ir.Value:
        node = ir.node("Transpose", [value], attributes={"perm": list(perm)})
        self.graph.insert_after(anchor, node)
        return node.outputs[0]

    def _clone(self, node: ir.Node, inputs: Sequence[ir.Value | None], **attrs: Any) -> ir.Node:
        """A copy of ``node`` reading ``inputs``, with ``attrs`` replacing its attributes."""
        attributes = dict(node.attributes)
        for key, value in attrs.items():
            attributes[key] = ir.convenience.convert_attribute(key, value)
        clone = ir.Node(
            node.domain,
            node.op_type,
            list(inputs),
            attributes=list(attributes.values()),
            num_outputs=len(node.outputs),
            name=node.name,
        )
        self.graph.insert_before(node, clone)
        return clone

    def _replace(self, node: ir.Node, new_outputs: Sequence[ir.Value]) -> None:
        """Replace ``node`` by the values computing its outputs (a graph output keeps its
        name and position)."""
        for old, new in zip(node.outputs, new_outputs, strict=True):
            hand_over_uses(old, new)
        self.graph.remove(node, safe=True)
        self.changes += 1

    def _constant_for(self, value: ir.Value, rank: int, perm: Sequence[int]) -> ir.Value | None:
        """``value`` (a constant broadcast against a transposed rank-``rank`` tensor) laid out
        for the tensor before the transpose; None when it is a TF variable or not constant."""
        array = const_array(value)
        if array is None or array.ndim > rank:
            return None
        if all(d == 1 for d in array.shape):
            return value  # broadcasts the same way in any layout
        if variables.variable_of(self.record, value) is not None:
            return None  # keep a variable in its Keras layout
        aligned = array.reshape((1,) * (rank - array.ndim) + array.shape)
        moved = np.ascontiguousarray(np.transpose(aligned, _inverse(perm)))
        name = variables.free_name(self.graph, f"{value.name or 'constant'}__transposed")
        return variables.add_initializer(self.graph, name, moved)

    # -- the rewrites ----------------------------------------------------------------------

    def cancel(self, node: ir.Node) -> bool:
        """``Transpose(Transpose(x, p), q)``."""
        perm = _perm(node)
        inner = node.inputs[0].producer() if node.inputs[0] is not None else None
        inner_perm = _perm(inner) if inner is not None else None
        if perm is None or inner is None or inner_perm is None or len(perm) != len(inner_perm):
            return False
        combined = [inner_perm[i] for i in perm]
        source = inner.inputs[0]
        assert source is not None
        identity = combined == list(range(len(combined)))
        if identity and not node.outputs[0].is_graph_output():
            node.outputs[0].replace_all_uses_with(source)
            self.graph.remove(node, safe=True)
            self.changes += 1
            return True
        if identity:  # a graph output keeps its name: an Identity writes it
            new = ir.node("Identity", [source])
        else:
            new = ir.node("Transpose", [source], attributes={"perm": combined})
        self.graph.insert_before(node, new)
        self._replace(node, new.outputs)
        return True

    def push(self, transpose: ir.Node, consumer: ir.Node) -> bool:
        """Move ``transpose`` below ``consumer`` (one of its users) if that is a layout-free op."""
        perm = _perm(transpose)
        if perm is None or consumer.domain not in ("", "ai.onnx"):
            return False
        if any(o.is_graph_output() for o in consumer.outputs):
            return False
        x = transpose.inputs[0]
        assert x is not None
        op = consumer.op_type
        mine = transpose.outputs[0]
        if op in _UNARY and consumer.inputs[0] is mine and len(consumer.outputs) == 1:
            if any(v is mine for v in consumer.inputs[1:]):
                return False
            clone = self._clone(consumer, [x, *consumer.inputs[1:]])
            self._replace(consumer, [self._transpose_after(clone, clone.outputs[0], perm)])
            return True
        if op in _BINARY and len(consumer.inputs) == 2 and len(consumer.outputs) == 1:
            return self._push_binary(transpose, consumer, perm)
        if op == "Concat":
            return self._push_concat(consumer, perm)
        if op in _REDUCE:
            return self._push_reduce(consumer, x, perm)
        if op in ("Softmax", "LogSoftmax") and self.opset >= 13:
            attr = consumer.attributes.get("axis")
            axis = attr.as_int() if attr is not None else -1
            axis = axis + len(perm) if axis < 0 else axis
            clone = self._clone(consumer, [x], axis=perm[axis])
            self._replace(consumer, [self._transpose_after(clone, clone.outputs[0], perm)])
            return True
        if op == "Pad" and self.opset >= 11 and consumer.inputs[0] is mine:
            return self._push_pad(consumer, x, perm)
        return False

    def _push_binary(self, transpose: ir.Node, consumer: ir.Node, perm: list[int]) -> bool:
        new_inputs: list[ir.Value] = []
        for operand in consumer.inputs:
            if operand is None:
                return False
            producer = operand.producer()
            if producer is not None and _perm(producer) == perm:
                assert producer.inputs[0] is not None
                new_inputs.append(producer.inputs[0])
                continue
            laid_out = self._constant_for(operand, len(perm), perm)
            if laid_out is None:
                return False
            new_inputs.append(laid_out)
        clone = self._clone(consumer, new_inputs)
        self._replace(consumer, [self._transpose_after(clone, clone.outputs[0], perm)])
        return True

    def _push_concat(self, consumer: ir.Node, perm: list[int]) -> bool:
        sources = []
        for operand in consumer.inputs:
            producer = operand.producer() if operand is not None else None
            if producer is None or _perm(producer) != perm:
                return False
            sources.append(producer.inputs[0])
        attr = consumer.attributes.get("axis")
        if attr is None:
            return False
        axis = attr.as_int()
        axis = axis + len(perm) if axis < 0 else axis
        clone = self._clone(consumer, sources, axis=perm[axis])
        self._replace(consumer, [self._transpose_after(clone, clone.outputs[0], perm)])
        return True

    def _push_reduce(self, consumer: ir.Node, x: ir.Value, perm: list[int]) -> bool:
        rank = len(perm)
        since = _AXES_INPUT_SINCE.get(consumer.op_type, _AXES_INPUT_DEFAULT)
        axes_in_input = self.opset >= since
        if axes_in_input:
            if len(consumer.inputs) < 2 or consumer.inputs[1] is None:
                return False  # every axis: layout-free, but rare enough to leave
            found = const_array(consumer.inputs[1])
            if found is None:
                return False
            axes = [int(a) for a in found.reshape(-1)]
        else:
            attr = consumer.attributes.get("axes")
            if attr is None:
                return False
            axes = list(attr.as_ints())
        if not axes:
            return False
        axes = [a + rank if a < 0 else a for a in axes]
        moved = sorted(perm[a] for a in axes)
        keep_attr = consumer.attributes.get("keepdims")
        keepdims = keep_attr.as_int() if keep_attr is not None else 1
        if axes_in_input:
            name = variables.free_name(self.graph, f"{consumer.name or 'reduce'}__axes")
            axes_value = variables.add_initializer(self.graph, name, np.array(moved, np.int64))
            clone = self._clone(consumer, [x, axes_value, *consumer.inputs[2:]])
        else:
            clone = self._clone(consumer, [x], axes=moved)
        if keepdims:
            after = perm
        else:
            kept = [perm[i] for i in range(rank) if i not in axes]
            order = sorted(kept)
            after = [order.index(a) for a in kept]
        out = clone.outputs[0]
        if after != list(range(len(after))):
            out = self._transpose_after(clone, out, after)
        self._replace(consumer, [out])
        return True

    def _push_pad(self, consumer: ir.Node, x: ir.Value, perm: list[int]) -> bool:
        pads = const_array(consumer.inputs[1]) if len(consumer.inputs) > 1 else None
        rank = len(perm)
        if pads is None or pads.size != 2 * rank or len(consumer.inputs) > 3:
            return False
        begin, end = pads.reshape(2, rank)
        new_pads = np.zeros(2 * rank, np.int64)
        for i, axis in enumerate(perm):
            new_pads[axis], new_pads[rank + axis] = begin[i], end[i]
        name = variables.free_name(self.graph, f"{consumer.name or 'pad'}__pads")
        pads_value = variables.add_initializer(self.graph, name, new_pads)
        clone = self._clone(consumer, [x, pads_value, *consumer.inputs[2:]])
        self._replace(consumer, [self._transpose_after(clone, clone.outputs[0], perm)])
        return True

    def run(self) -> int:
        """Rewrite until nothing moves; returns the number of rewrites."""
        progress = True
        while progress:
            progress = False
            for node in list(self.graph):
                if node.graph is None or _perm(node) is None:
                    continue
                if self.cancel(node):
                    progress = True
                    continue
                for consumer in list(node.outputs[0].consumers()):
                    if consumer.graph is not None and self.push(node, consumer):
                        progress = True
                        break
            RemoveUnusedNodesPass()(self.model)
        variables.save(self.model, self.record)
        return self.changes


def _default_opset(model: onnx.ModelProto) -> int:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


class TransposePass:
    """Push layout transposes down and cancel the pairs that meet."""

    name = "transposes"
    description = (
        "Transpose pushed below layout-free ops (element-wise, Concat, reductions, Softmax, "
        "Pad) and cancelled against its inverse: NHWC<->NCHW pairs around every layer go"
    )

    def apply(self, model: onnx.ModelProto) -> PassResult:
        """Return the rewritten copy of ``model`` and the number of rewrites."""
        if not any(n.op_type == "Transpose" for n in model.graph.node):
            return PassResult(model, 0)
        ir_model = ir.serde.deserialize_model(model)
        changes = _Rewriter(ir_model, _default_opset(model)).run()
        if changes == 0:
            return PassResult(model, 0)
        return PassResult(ir.serde.serialize_model(ir_model), changes)
