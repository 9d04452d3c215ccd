"""Loading a SavedModel that Keras does not load: its ``serving_default`` signature and the
variables it captures, exported with each variable a named parameter
(:mod:`.signature_export`), or frozen where that cannot be done (:mod:`.frozen_export`)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from pipeline.core.errors import BadInputError
from pipeline.core.messages import one_line
from pipeline.core.signature import TensorSpec
from pipeline.core.weight_store import WeightStore
from pipeline.export.worker.frozen_export import export_saved_model_frozen
from pipeline.export.worker.loading import LoadedModel, TfVariable
from pipeline.export.worker.signature_export import export_signature_variables


def _object_paths(root: Any) -> dict[int, str]:
    """Each variable reachable from ``root``'s object graph → its shortest attribute path
    (``dense/kernel``; a breadth-first walk of ``_trackable_children``), by ``id``."""
    import tensorflow as tf

    found: dict[int, str] = {}
    seen = {id(root)}
    level: list[tuple[str, Any]] = [("", root)]
    while level:
        following = []
        for path, obj in level:
            try:
                children = obj._trackable_children()
            except Exception:  # an object that cannot list its children: a leaf here
                continue
            for name, child in children.items():
                if id(child) in seen:
                    continue
                seen.add(id(child))
                child_path = f"{path}/{name}" if path else str(name)
                if isinstance(child, tf.Variable):
                    found.setdefault(id(child), child_path)
                else:
                    following.append((child_path, child))
        level = following
    return found


def saved_model_variables(loaded: Any, signature: Any) -> list[TfVariable]:
    """The variables ``signature`` reads (its captures: a restored ``tf.Module`` lists them
    nowhere else), in the SavedModel's ``variables`` order where it has one (a Keras export).

    Each is named by its TF name (``dense/kernel``) where that is unique, else by its path in
    the SavedModel's object graph (``encoder/w``), numbered where even that repeats."""
    captured = list(signature.variables)
    order = {id(v): k for k, v in enumerate(getattr(loaded, "variables", None) or [])}
    captured.sort(key=lambda v: order.get(id(v), len(order)))
    names = [v.name.removesuffix(":0") for v in captured]
    counts = Counter(names)
    if any(n > 1 for n in counts.values()):
        objects = _object_paths(loaded)
        names = [
            objects.get(id(v), name) if counts[name] > 1 else name
            for v, name in zip(captured, names, strict=True)
        ]
    taken: set[str] = set()
    variables = []
    for v, base in zip(captured, names, strict=True):
        name, n = base, 0
        while name in taken:  # the provenance record keys variables by path
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        variables.append(TfVariable(name, bool(v.trainable), v))
    return variables


def load_saved_model(path: str, override: list[TensorSpec], why: str | None = None) -> LoadedModel:
    """Load the SavedModel at ``path`` for its ``serving_default`` signature (inputs
    ``override`` where given); ``why`` says why it is not loaded as a Keras model, where one
    might expect that (the export route's record says so).  Raises :class:`BadInputError`
    if it cannot be loaded."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(path)
    except Exception as err:
        raise BadInputError(f"cannot load SavedModel {path}: {one_line(err)}") from None
    if "serving_default" not in loaded.signatures:
        raise BadInputError(
            f"SavedModel {path} has no 'serving_default' signature "
            f"(it has: {', '.join(loaded.signatures) or 'none'})"
        )
    signature = loaded.signatures["serving_default"]
    sig_inputs = signature.structured_input_signature[1]
    specs = override or [
        TensorSpec(name, spec.dtype.as_numpy_dtype.__name__, tuple(spec.shape))
        for name, spec in sig_inputs.items()
    ]
    output_names = list(signature.structured_outputs)

    # The closures below must hold `loaded` itself: a signature alone does not keep the
    # SavedModel's variables alive ("Called a function referencing variables which have
    # been deleted").
    def call(tensors: dict[str, Any]) -> list[Any]:
        signature = loaded.signatures["serving_default"]
        result = signature(**{s.name: tensors[s.name] for s in specs})
        return [result[name] for name in output_names]

    variables = saved_model_variables(loaded, signature)
    last_feeds: dict[str, np.ndarray] = {}

    def export(
        specs: list[TensorSpec],
        opset: int,
        fingerprint: bool = True,
        store: WeightStore | None = None,
    ) -> Any:
        last_feeds.clear()
        pairs = [(v.path, v.variable) for v in variables]
        try:
            return export_signature_variables(
                loaded.signatures["serving_default"],
                specs,
                output_names,
                opset,
                pairs,
                feeds=last_feeds,
                note=why,
                fingerprint=fingerprint,
                store=store,
            )
        except Exception as err:  # the frozen route, every unlocated variable said frozen
            failed = one_line(err)
            print(f"exporting with the variables as inputs failed ({failed}); exporting frozen")
            last_feeds.clear()
            return export_saved_model_frozen(
                loaded, specs, output_names, opset, pairs, failed, fingerprint=fingerprint
            )

    def feeds() -> dict[str, np.ndarray]:
        return dict(last_feeds)

    return LoadedModel(
        inputs=specs,
        call=call,
        export=export,
        output_names=output_names,
        description=f"SavedModel {path}",
        variables=variables,
        variable_feeds=feeds,
    )
