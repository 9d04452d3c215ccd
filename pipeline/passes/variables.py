"""Passes and TF variables: which initializers are variables, and recording a variable's move.

The provenance record (:mod:`pipeline.core.provenance`) travels inside the model.  A pass that
gives a variable a new initializer (folds a Transpose into it, reshapes BatchNorm's
``(1, C, 1, 1)`` gamma to ``(C,)``, copies it for a second user) records the move here, with
the exact transform, so the import stage knows where every variable is without comparing
values.  A graph without a record (built by hand, or from another tool) has no variables.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from pipeline.core import provenance


def record_of(model: ir.Model) -> provenance.Provenance:
    """The model's record (an empty one when it has none)."""
    return provenance.read(model) or provenance.Provenance()


def save(model: ir.Model, record: provenance.Provenance) -> None:
    """Store ``record`` in ``model``, keeping only the initializers it still has."""
    record.prune(model.graph.initializers.keys())
    provenance.write(model, record)


def variable_of(record: provenance.Provenance, value: ir.Value | None) -> str | None:
    """The TF variable path an initializer *is* (one whole variable, in some layout), else None."""
    if value is None or not value.is_initializer() or value.is_graph_input() or not value.name:
        return None
    part = record.whole(value.name)
    return None if part is None else part.variable


def free_name(graph: ir.Graph, base: str) -> str:
    """``base``, or ``base_1``, ``base_2``, ... whichever no value of ``graph`` is named."""
    taken = (
        set(graph.initializers)
        | {v.name for v in graph.inputs}
        | {o.name for n in graph for o in n.outputs}
    )
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """Register a new initializer ``name`` (must be free) holding ``array``."""
    tensor = ir.tensor(np.ascontiguousarray(array), name=name)
    value = ir.Value(
        name=name, type=ir.TensorType(tensor.dtype), shape=ir.Shape(array.shape), const_value=tensor
    )
    graph.register_initializer(value)
    return value


def derived(
    graph: ir.Graph,
    record: provenance.Provenance,
    source: ir.Value,
    array: np.ndarray,
    step: str,
    name: str | None = None,
) -> ir.Value:
    """A new initializer holding ``array`` = ``source`` moved by ``step`` (a transform label
    of :mod:`pipeline.core.transforms`), recorded as the same variable when ``source`` is one.
    Named ``name`` or after ``source``."""
    new = add_initializer(graph, free_name(graph, name or str(source.name)), array)
    assert source.const_value is not None
    shape: Sequence[int] = tuple(source.const_value.shape.numpy())
    record.derive(str(new.name), str(source.name), step, shape)
    return new
