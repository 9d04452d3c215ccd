"""Export through tf2onnx's frozen-graph route, with variables located by fingerprint.

A SavedModel has no Keras layers to call statelessly: its ``serving_default`` signature reads
the variables, and tf2onnx freezes them into constants (``from_function``), where grappler
and tf2onnx may fold them into other constants.  The same holds for a Keras model whose
``stateless_call`` cannot be traced (the fallback of :mod:`.stateless_export`, exported with
``from_keras``).  So each variable is *assigned* a fingerprint
(:mod:`pipeline.core.fingerprint`) for the trace: every constant of the exported graph that
still holds a variable's fingerprints says exactly which variable it is and in which layout,
and the real values are put back in its place (and into the variables).  A variable whose
fingerprints vanished was folded (or is unused): it is recorded as lost, so the report names
it and the verdict fails -- it is never matched by value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipeline.core import provenance
from pipeline.core.fingerprint import fingerprints_for
from pipeline.core.signature import TensorSpec
from pipeline.export.worker.onnx_export import export_keras, export_saved_model
from pipeline.export.worker.stateless_export import decode_fingerprints

FROZEN_ROUTE = "frozen+fingerprints"


def _fingerprinted(
    export: Callable[[], Any], variables: Sequence[tuple[str, Any]], route: str
) -> Any:
    """Run ``export`` with every float variable holding its fingerprint, then decode."""
    real = [np.asarray(v.numpy()) for _, v in variables]
    prints = fingerprints_for(real)
    marked = [k for k, value in enumerate(real) if value.dtype.kind == "f" and prints.supported(k)]
    try:
        for k in marked:
            variables[k][1].assign(prints.value(k))
        proto = export()
    finally:
        for k in marked:
            variables[k][1].assign(real[k])
    record = provenance.Provenance(route=route)
    decode_fingerprints(proto, prints, [path for path, _ in variables], real, record)
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
