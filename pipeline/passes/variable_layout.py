"""Layout ops on a TF variable become the variable's own initializer, the move recorded.

With every variable an initializer of its own (the stateless export), tf2onnx leaves the
layout changes TF made on the way to the op in the graph: a Conv kernel arrives as
``Transpose(kernel, perm=[3, 2, 0, 1])`` (HWIO → OIHW), a Conv bias as
``Squeeze(Reshape(bias, [1, 1, 1, C]))``, MultiHeadAttention's ``(32, 4, 8)`` EinsumDense kernel
as ``Reshape(kernel, [32, 32])``.  This pass folds each such op into a new initializer named
after the variable and records the transform (``permute(3,2,0,1)``, ``reshape``) in the
provenance record, so the Conv reads its weight directly (onnx2torch then makes it an
``nn.Conv2d`` weight) and the import stage knows exactly which layout it holds.

Folded: ``Transpose``, ``Reshape`` (constant shape), ``Squeeze``/``Unsqueeze`` (constant axes),
``Flatten`` and ``Identity`` whose data input is a whole-variable initializer; only pure data
movement, never arithmetic.  When the variable's initializer has no other user it is replaced
(and keeps its name); otherwise the folded copy is a second holder of the variable, which the
import stage ties to the first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from pipeline.core.transforms import permutation_label
from pipeline.passes import variables
from pipeline.passes.base import PassResult
from pipeline.passes.custom_ops import const_array

_LAYOUT_OPS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"}


def _axes(node: ir.Node, rank: int) -> list[int] | None:
    """Squeeze/Unsqueeze axes (input 1 from opset 13, else the attribute), non-negative for
    ``rank``; None when not constant."""
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        found = const_array(node.inputs[1])
        if found is None:
            return None
        axes = [int(a) for a in found.reshape(-1)]
    else:
        attr = node.attributes.get("axes")
        if attr is None:
            return []
        axes = list(attr.as_ints())
    return [a + rank if a < 0 else a for a in axes]


def _reshape_target(node: ir.Node, shape: Sequence[int]) -> tuple[int, ...] | None:
    target = const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if target is None:
        return None
    allowzero = node.attributes.get("allowzero")
    dims = [int(d) for d in target.reshape(-1)]
    if not (allowzero is not None and allowzero.as_int() == 1):
        dims = [shape[i] if d == 0 and i < len(shape) else d for i, d in enumerate(dims)]
    size = int(np.prod(shape))
    if dims.count(-1) == 1:
        known = int(np.prod([d for d in dims if d != -1]))
        if known == 0 or size % known:
            return None
        dims[dims.index(-1)] = size // known
    return tuple(dims) if int(np.prod(dims)) == size else None


def _moved(node: ir.Node, array: np.ndarray) -> tuple[np.ndarray, str] | None:
    """The op's output for a constant data input, and the step label; None if not foldable."""
    op = node.op_type
    if op == "Identity":
        return array, "identity"
    if op == "Transpose":
        attr = node.attributes.get("perm")
        perm = list(attr.as_ints()) if attr is not None else list(reversed(range(array.ndim)))
        return np.transpose(array, perm), permutation_label(perm)
    if op == "Reshape":
        target = _reshape_target(node, array.shape)
        return None if target is None else (array.reshape(target), "reshape")
    if op == "Flatten":
        attr = node.attributes.get("axis")
        axis = attr.as_int() if attr is not None else 1
        axis = axis + array.ndim if axis < 0 else axis
        outer = int(np.prod(array.shape[:axis]))
        return array.reshape(outer, -1 if array.size else 0), "reshape"
    if op == "Squeeze":
        axes = _axes(node, array.ndim)
        if axes is None:
            return None
        axes = axes or [i for i, d in enumerate(array.shape) if d == 1]
        if any(array.shape[a] != 1 for a in axes):
            return None
        return np.squeeze(array, axis=tuple(axes)), "reshape"
    if op == "Unsqueeze":
        return _unsqueezed(node, array)
    return None


def _unsqueezed(node: ir.Node, array: np.ndarray) -> tuple[np.ndarray, str] | None:
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        found = const_array(node.inputs[1])
        if found is None:
            return None
        axes = [int(a) for a in found.reshape(-1)]
    else:
        attr = node.attributes.get("axes")
        axes = list(attr.as_ints()) if attr is not None else []
    rank = array.ndim + len(axes)
    out = array
    for axis in sorted(a + rank if a < 0 else a for a in axes):
        out = np.expand_dims(out, axis)
    return out, "reshape"


def fold_layout_ops(model: ir.Model) -> int:
    """Fold every foldable layout op on a variable initializer (repeatedly, so chains fold
    whole); returns how many were folded.  Edits ``model`` and its provenance record."""
    graph = model.graph
    record = variables.record_of(model)
    folded = 0
    changed = True
    while changed:
        changed = False
        for node in list(graph):
            if node.op_type not in _LAYOUT_OPS or node.domain not in ("", "ai.onnx"):
                continue
            source = node.inputs[0] if node.inputs else None
            if variables.variable_of(record, source) is None or node.outputs[0].is_graph_output():
                continue
            assert source is not None and source.const_value is not None
            result = _moved(node, source.const_value.numpy())
            if result is None:
                continue
            array, step = result
            shape = source.const_value.shape.numpy()
            if len(source.uses()) == 1:
                # The only user: the variable's initializer is replaced and keeps its name.
                name = str(source.name)
                graph.initializers.pop(name)
                new = variables.add_initializer(graph, name, array)
                record.derive(name, name, step, shape)
            else:
                new = variables.derived(
                    graph, record, source, array, step, f"{source.name}/{node.op_type.lower()}"
                )
            node.outputs[0].replace_all_uses_with(new)
            graph.remove(node, safe=True)
            folded += 1
            changed = True
    if folded:
        RemoveUnusedNodesPass()(model)
        variables.save(model, record)
    return folded


class VariableLayoutPass:
    """Fold Transpose/Reshape/Squeeze/Unsqueeze of a TF variable into its initializer."""

    name = "variable_layout"
    description = (
        "Transpose/Reshape/Squeeze/Unsqueeze of a TF variable -> the variable's own "
        "initializer in that layout (the transform recorded in the provenance record)"
    )

    def apply(self, model: onnx.ModelProto) -> PassResult:
        """Return the rewritten copy of ``model`` and the number of ops folded."""
        ir_model = ir.serde.deserialize_model(model)
        changes = fold_layout_ops(ir_model)
        if changes == 0:
            return PassResult(model, 0)
        return PassResult(ir.serde.serialize_model(ir_model), changes)
