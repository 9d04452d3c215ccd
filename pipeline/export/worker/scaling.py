"""The TF half of ``--scale``: scale the loaded Keras model's Conv/Dense weights before export,
so TensorFlow, ONNX Runtime and torch are all compared on the scaled model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import BadInputError
from pipeline.export.inputs import load_inputs
from pipeline.export.scale_spec import ACTIVATION, activation_factor, parse_scale
from pipeline.export.worker.initializers import layer_kind
from pipeline.export.worker.loading import LoadedModel, load_model, one_line


def _scalable_layers(model: Any, keys: dict[int, str]) -> list[tuple[str, Any, str, list[Any]]]:
    """(layer path, layer, kind, its own float variables) of every Conv/Dense layer; a
    layer's path is that of its variables' keys (``keys``: ``id`` of the variable's value →
    its path in ``LoadedModel.variables``, unique where Keras paths repeat)."""
    found, seen = [], set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        kind = layer_kind(layer)
        if kind is None or id(layer) in seen:
            continue
        seen.add(id(layer))
        own = [
            v
            for v in [*layer._trainable_variables, *layer._non_trainable_variables]
            if "float" in str(v.dtype)
        ]
        if own:
            found.append((_key(own[0], keys).rpartition("/")[0], layer, kind, own))
    return found


def _key(variable: Any, keys: dict[int, str]) -> str:
    """``variable``'s path as :class:`LoadedModel` lists it."""
    return keys.get(id(variable.value), variable.path)


def _mean_abs_outputs(
    loaded: LoadedModel, layers: Sequence[Any], arrays: dict[str, np.ndarray], chunk: int = 64
) -> dict[int, tuple[float, int]]:
    """Mean |output| of each layer (after its activation) over the calibration inputs, from
    inference-mode calls of the whole model; layers are observed by wrapping their ``call``."""
    import tensorflow as tf

    sums: dict[int, list[float]] = {id(layer): [0.0, 0.0] for layer in layers}

    def observing(original: Callable[..., Any], key: int) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            sums[key][0] += float(tf.reduce_sum(tf.abs(tf.cast(out, tf.float64))))
            sums[key][1] += float(tf.size(out))
            return out

        return call

    for layer in layers:
        object.__setattr__(layer, "call", observing(layer.call, id(layer)))
    try:
        size = len(next(iter(arrays.values())))
        for start in range(0, size, chunk):
            loaded.run({k: v[start : start + chunk] for k, v in arrays.items()})
    finally:
        for layer in layers:
            object.__delattr__(layer, "call")
    return {
        key: (total / count if count else float("nan"), int(count))
        for key, (total, count) in sums.items()
    }


def apply_scaling(loaded: LoadedModel, scale: dict[str, Any] | None) -> dict[str, Any] | None:
    """Apply a ``--scale`` request to the loaded Keras model's variables, in place, and return
    the report's ``scaling`` record (None without one).

    ``scale`` is ``{"spec": "global=0.5", "calibration": path or None}``, or ``{"layers":
    [{"layer": path, "factor": f}, ...]}`` to replay recorded factors exactly (e.g. a check
    rerunning a scaled run's source).  Every float variable of a scaled layer is multiplied in
    float64 and cast back to its dtype.
    """
    if not scale:
        return None
    model = loaded.keras_model
    if model is None:
        raise BadInputError(
            "--scale needs a Keras model (.keras, .h5 or a factory): a SavedModel's variables "
            "carry no layer types"
        )
    keys = {id(v.variable): v.path for v in loaded.variables}
    layers = _scalable_layers(model, keys)
    record: dict[str, Any]
    means: dict[int, tuple[float, int]] = {}
    if "layers" in scale:
        replay = {str(entry["layer"]): float(entry["factor"]) for entry in scale["layers"]}
        record = {"strategy": scale.get("strategy", "replay"), "spec": scale.get("spec", "")}
        unknown = sorted(set(replay) - {path for path, *_ in layers})
        if unknown:
            raise BadInputError(f"--scale replay names layers the model lacks: {unknown}")
    else:
        spec = parse_scale(str(scale["spec"]))
        record = {"strategy": spec.strategy, "spec": spec.text}
        if spec.strategy == ACTIVATION:
            calibration = Path(str(scale["calibration"]))
            arrays = load_inputs(calibration, loaded.inputs)
            record["calibration"] = str(scale["calibration"])
            record["calibration_samples"] = len(next(iter(arrays.values())))
            try:
                means = _mean_abs_outputs(loaded, [layer for _, layer, _, _ in layers], arrays)
            except Exception as err:
                raise BadInputError(
                    f"TensorFlow could not run the model on the calibration data: {one_line(err)}"
                ) from None
    scaled = []
    for path, layer, kind, own in layers:
        note, mean = "", None
        if "layers" in scale:
            factor: float | None = replay.get(path)
        elif record["strategy"] == ACTIVATION:
            mean, count = means[id(layer)]
            factor, note = activation_factor(mean)
            if count == 0:
                factor, note = 1.0, "not called on the calibration data: left unscaled"
        else:
            factor = spec.factor_for(kind)
        if factor is None:
            continue
        for v in own:
            value = np.asarray(v.value)
            v.assign((value.astype(np.float64) * factor).astype(value.dtype))
        entry: dict[str, Any] = {
            "layer": path,
            "layer_class": type(layer).__name__,
            "kind": kind,
            "factor": float(factor),
            "variables": [_key(v, keys) for v in own],
        }
        if record["strategy"] == ACTIVATION:
            entry["mean_abs_activation"] = None if mean is None or not np.isfinite(mean) else mean
        if note:
            entry["note"] = note
        scaled.append(entry)
    record["layers"] = scaled
    return record


def load_and_scale(request: dict[str, Any]) -> LoadedModel:
    """Load the request's model (:func:`~pipeline.export.worker.loading.load_model`), then
    apply its ``scale`` (``--scale``; see :func:`apply_scaling`), so that every later step
    (export, reference run, gradients, intermediates) sees the scaled model."""
    loaded = load_model(request)
    loaded.scaling = apply_scaling(loaded, request.get("scale"))
    return loaded
