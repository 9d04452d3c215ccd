"""Export through tf2onnx's frozen-graph route, with variables located by fingerprint.

A SavedModel has no Keras layers to call statelessly: its ``serving_default`` signature reads
the variables, and tf2onnx freezes them into constants (``from_function``), where grappler
and tf2onnx may fold them into other constants.  The same holds for a Keras model whose
``stateless_call`` cannot be traced (the fallback of :mod:`.stateless_export`, exported with
``from_keras``).  So each variable is *assigned* a fingerprint
(:mod:`pipeline.core.fingerprint`) for the trace: every constant of the exported graph that
still holds a variable's fingerprints says exactly which variable it is and in which layout.
The graph kept is a second export with the real values (a constant folded from fingerprints
is no use), which must have the very same structure -- same nodes, same initializer names and
shapes -- for the record to carry over; grappler simplifies some values away (an all-zero
bias), and then every variable is recorded as lost rather than guessed.  A variable whose
fingerprints vanished was folded (or is unused): it is recorded as lost, so the report names
it and the verdict fails -- it is never matched by value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipeline.core import provenance
from pipeline.core.fingerprint import fingerprints_for
from pipeline.core.onnx_graph import all_nodes
from pipeline.core.signature import TensorSpec
from pipeline.export.worker.onnx_export import export_keras, export_saved_model
from pipeline.export.worker.stateless_export import decode_fingerprints

FROZEN_ROUTE = "frozen+fingerprints"


def _canonical(proto: Any) -> tuple[list[Any], list[str]]:
    """The graph with every tensor named by order of first appearance (tf2onnx numbers the
    names it makes across conversions, so two exports of one graph differ in names only),
    and the original names in that order."""
    ids: dict[str, int] = {}

    def ident(name: str) -> int:
        return ids.setdefault(name, len(ids)) if name else -1

    shapes = {t.name: (tuple(t.dims), t.data_type) for t in proto.graph.initializer}
    for value in proto.graph.input:
        ident(value.name)
    shape = [
        (
            n.op_type,
            tuple(ident(i) for i in n.input),
            tuple(ident(o) for o in n.output),
            tuple(shapes.get(i) for i in n.input),
        )
        for n in all_nodes(proto.graph)
    ]
    return shape, list(ids)


def _correspondence(traced: Any, real: Any) -> dict[str, str] | None:
    """Initializer name in ``traced`` → the same tensor's name in ``real``, when the two
    exports are the same graph (same ops, wiring and initializer shapes); else None."""
    traced_shape, traced_names = _canonical(traced)
    real_shape, real_names = _canonical(real)
    if traced_shape != real_shape:
        return None
    return dict(zip(traced_names, real_names, strict=True))


def _fingerprinted(
    export: Callable[[], Any], variables: Sequence[tuple[str, Any]], route: str
) -> Any:
    """The real-valued export, with the provenance a fingerprinted export of the same graph
    gives (see the module docstring)."""
    proto = export()
    real = [np.asarray(v.numpy()) for _, v in variables]
    prints = fingerprints_for(real)
    marked = [k for k, value in enumerate(real) if value.dtype.kind == "f" and prints.supported(k)]
    try:
        for k in marked:
            variables[k][1].assign(prints.value(k))
        traced = export()
    finally:
        for k in marked:
            variables[k][1].assign(real[k])
    record = provenance.Provenance(route=route)
    paths = [path for path, _ in variables]
    decode_fingerprints(traced, prints, paths, real, record)
    names = _correspondence(traced, proto)
    if names is None:
        why = (
            "TF's optimisers simplified the graph differently for its values (e.g. dropped "
            "an all-zero bias): its provenance cannot be established"
        )
        record = provenance.Provenance(route=route, lost=dict.fromkeys(paths, why))
    else:
        record.initializers = {names[k]: v for k, v in record.initializers.items()}
    for path, why in list(record.lost.items()):
        if why.startswith("tf2onnx computed"):
            record.lost[path] = (
                "not found in the exported graph: folded into another constant by TF's or "
                "tf2onnx's optimisers (or unused)"
            )
    provenance.write(proto, record)
    return proto


def export_saved_model_traced(
    loaded: Any,
    specs: list[TensorSpec],
    output_names: list[str],
    opset: int,
    variables: Sequence[tuple[str, Any]],
    *,
    fingerprint: bool = True,
) -> Any:
    """Export ``loaded``'s ``serving_default`` with the provenance of ``variables`` (path,
    ``tf.Variable``) recorded; ``fingerprint=False`` exports TF's own graph, unrecorded."""
    if not fingerprint:
        return export_saved_model(loaded, specs, output_names, opset)
    return _fingerprinted(
        lambda: export_saved_model(loaded, specs, output_names, opset), variables, FROZEN_ROUTE
    )


def export_keras_frozen(
    model: Any,
    specs: list[TensorSpec],
    opset: int,
    paths: Sequence[str],
    *,
    fingerprint: bool = True,
) -> Any:
    """Export a Keras model with ``from_keras`` (frozen), its variables (``model.weights``,
    named ``paths``) located by fingerprint."""
    if not fingerprint:
        return export_keras(model, specs, opset)
    variables = list(zip(paths, model.weights, strict=True))
    return _fingerprinted(lambda: export_keras(model, specs, opset), variables, FROZEN_ROUTE)


FROZEN_SAVED_MODEL_ROUTE = "frozen"
"""The route of a SavedModel whose variables could not be made graph inputs: what the
fingerprints did not locate is recorded as frozen, and the run is inference-only."""


def export_saved_model_frozen(
    loaded: Any,
    specs: list[TensorSpec],
    output_names: list[str],
    opset: int,
    variables: Sequence[tuple[str, Any]],
    why: str,
    *,
    fingerprint: bool = True,
) -> Any:
    """The fallback of a SavedModel's export (``why``: what stopped the variables-as-inputs
    route): the frozen graph, where each variable the fingerprints still locate keeps its
    parameter and every other one is recorded as *frozen* (``folded`` into the graph's
    constants), never as absent; route :data:`FROZEN_SAVED_MODEL_ROUTE`."""
    proto = export_saved_model_traced(
        loaded, specs, output_names, opset, variables, fingerprint=fingerprint
    )
    record = provenance.read(proto)
    if record is None:
        return proto
    record.route = FROZEN_SAVED_MODEL_ROUTE
    for path, reason in record.lost.items():
        record.folded[path] = (
            f"the frozen SavedModel graph (the variables could not be graph inputs: {why}; "
            f"{reason})"
        )
    record.lost.clear()
    provenance.write(proto, record)
    return proto
