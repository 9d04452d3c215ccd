"""The TF reference: outputs on the comparison inputs, and every variable's value and
gradient of the fixed loss that the gradient check compares."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.memory import groups_within
from pipeline.core.run_dir import LazyNpz, write_npz
from pipeline.export.worker.loading import LoadedModel, one_line

VARIABLES_NPZ = "tf_variables.npz"
FLOORS_NPZ = "tf_floors.npz"
"""TF's gradient floors (``grad_noise/<i>``) and float64 twin outputs (``output64/<name>``),
written after :data:`VARIABLES_NPZ` so the float32 gradients are on disk, not in memory,
while the twin runs."""
LOSS_SEED_OFFSET = 7919


def loss_weights(outputs: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Fixed random weights per floating output: the gradient check's loss is
    ``sum over outputs of sum(output * weight)``, so d(loss)/d(output) = weight exactly."""
    rng = np.random.default_rng(seed + LOSS_SEED_OFFSET)
    return {
        name: rng.standard_normal(value.shape).astype(value.dtype)
        for name, value in outputs.items()
        if np.issubdtype(value.dtype, np.floating)
    }


def _loss(
    results: list[Any], outputs: dict[str, np.ndarray], weights: dict[str, np.ndarray]
) -> Any:
    """The fixed loss ``sum over weighted outputs of sum(output * weight)`` in float64."""
    import tensorflow as tf

    return tf.add_n(
        [
            tf.reduce_sum(tf.cast(r, tf.float64) * tf.constant(weights[name], tf.float64))
            for name, r in zip(outputs, results, strict=True)
            if name in weights
        ]
        or [tf.constant(0.0, tf.float64)]
    )


def check_twin_configs(model: Any) -> None:
    """Read every layer's config, as :func:`float64_twin` will: raises where one cannot be
    read (keras-hub's LlamaTransformerDecoder), before anything is built or released."""
    for layer in model._flatten_layers(include_self=False):
        layer.get_config()


def float64_twin(model: Any, values: Sequence[np.ndarray] | None = None) -> tuple[Any, list[Any]]:
    """A float64 copy of the Keras ``model``: every layer rebuilt from its config with
    ``dtype="float64"`` and every variable's value copied (floating ones widened), and the
    twin's variables in the order of ``model.weights``.  ``values`` (in that order) are the
    values to copy when the model's own were released (:func:`release_variables`).  Raises
    where that cannot be done faithfully (a subclassed model, a layer that ignores the
    dtype or whose config does not rebuild it, variables that do not line up)."""
    import keras

    def widen(layer: Any) -> Any:
        if not isinstance(layer, keras.layers.Layer):
            # A bare operation in a functional graph (MobileNetV3's ``x + 3.0``) has no dtype
            # of its own: it computes in its inputs', float64 in the twin.
            return layer.__class__.from_config(layer.get_config())
        return layer.__class__.from_config(_float64_config(layer.get_config()))

    # Every config read first, before anything is built: a layer whose config cannot be
    # read (keras-hub's LlamaTransformerDecoder) would otherwise fail the clone after most
    # of the model was already built in float64 -- twice its weights, wasted.
    check_twin_configs(model)
    twin = keras.models.clone_model(model, clone_function=widen, recursive=True)
    src, dst = list(model.weights), list(twin.weights)
    if len(src) != len(dst):
        raise ValueError(f"the twin has {len(dst)} variables, the model {len(src)}")
    # The clone may list its variables in another order (BART's token embedding, shared by
    # encoder and decoder, moves the decoder's variables): pair them by their unique paths
    # where both sides name the same set, else by position.
    src_keys, dst_keys = _variable_keys(model), _variable_keys(twin)
    if src_keys != dst_keys and sorted(src_keys) == sorted(dst_keys):
        by_key = dict(zip(dst_keys, dst, strict=True))
        dst = [by_key[k] for k in src_keys]
    for k, (a, b) in enumerate(zip(src, dst, strict=True)):
        value = np.asarray(a.value if values is None else values[k])
        if tuple(value.shape) != tuple(b.shape):
            raise ValueError(f"{a.path}: twin variable {b.path} has shape {tuple(b.shape)}")
        if value.dtype.kind == "f":
            if np.dtype(b.dtype) != np.float64:
                raise ValueError(f"{a.path}: twin variable {b.path} is {b.dtype}, not float64")
            b.assign(value.astype(np.float64))
        else:
            b.assign(value.astype(np.dtype(b.dtype)))
        del value
    return twin, dst


class _Released:
    """What a released variable holds instead of its storage: any use says so."""

    def __init__(self, path: str) -> None:
        self._path = path

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(
            f"{self._path}: the float32 model's variables were released for its float64 twin"
        )


def release_variables(loaded: LoadedModel) -> None:
    """Free the storage of the Keras model's variables, in place: every Keras variable and
    :attr:`LoadedModel.variables` entry then holds a :class:`_Released` that refuses any
    use.  For the worker's last step, once every value is on disk: the float64 twin is
    twice the model's weights, and the float32 model beside it would make three."""
    import dataclasses

    model = loaded.keras_model
    for variable in model.weights:
        variable._value = _Released(variable.path)
    loaded.variables = [
        dataclasses.replace(v, variable=_Released(v.path)) for v in loaded.variables
    ]


def _float64_config(config: dict[str, Any]) -> dict[str, Any]:
    """A layer config with ``dtype`` float64, and so the configs of the layers a wrapper
    builds from its own (``Bidirectional``'s ``layer``, an ``RNN``'s ``cell``), which would
    otherwise keep their float32 policy."""
    out = {**config, "dtype": "float64"}
    for key in ("layer", "backward_layer", "cell"):
        inner = out.get(key)
        if isinstance(inner, dict) and isinstance(inner.get("config"), dict):
            out[key] = {**inner, "config": _float64_config(inner["config"])}
    return out


def _variable_keys(model: Any) -> list[str]:
    """``model.weights``' paths made unique as :class:`LoadedModel` lists them."""
    from pipeline.export.worker.loading import top_level_owners, unique_paths

    weights = list(model.weights)
    outer = top_level_owners(model)
    return unique_paths([v.path for v in weights], [outer.get(id(v)) for v in weights])


GRADIENT_CHUNK_FRACTION = 0.25
"""The float64 twin's gradients are taken a group of variables at a time, each group at most
this fraction of the model's float32 bytes (or one variable), from one recorded tape: at LLM
scale all of them at once would be two more copies of the model."""


def _float64_floors(
    loaded: LoadedModel,
    arrays: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    weights: dict[str, np.ndarray],
    keys: dict[int, str],
    low: LazyNpz,
) -> tuple[dict[int, np.ndarray], dict[str, np.ndarray]]:
    """TF's own gradient floor per trainable variable (by index into ``loaded.variables``):
    :func:`_gradient_floor` of its float32 gradient (``low[keys[i]]``, read from the file
    when needed) against the same gradient
    through the model's float64 twin (:func:`float64_twin`), and the twin's floating outputs
    by name.  The twin's gradients are taken in groups (:data:`GRADIENT_CHUNK_FRACTION`)
    and each dropped once its floor is known."""
    import tensorflow as tf

    from pipeline.export.worker.stateless_export import flat_outputs, pack_inputs

    if loaded.keras_model is None:
        raise ValueError("a SavedModel has no Keras layers to rebuild in float64")
    check_twin_configs(loaded.keras_model)
    trainable = [i for i, v in enumerate(loaded.variables) if v.trainable and i in keys]
    sizes = [(i, loaded.variables[i].variable.shape.num_elements() or 1) for i in trainable]
    # The float32 values (and gradients) are on disk: the twin copies them from there, and
    # the float32 model's storage goes first, so float32 and float64 are never side by side.
    release_variables(loaded)
    twin, twin_variables = float64_twin(
        loaded.keras_model, low.sequence([f"value/{i}" for i in range(len(loaded.variables))])
    )
    tensors = {
        k: tf.constant(v.astype(np.float64) if v.dtype.kind == "f" else v)
        for k, v in arrays.items()
    }
    args = [tensors[s.name] for s in loaded.inputs]
    with tf.GradientTape(persistent=len(trainable) > 1) as tape:
        results = flat_outputs(twin(pack_inputs(twin, args), training=False))
        if len(results) != len(outputs):
            raise ValueError(f"the twin has {len(results)} outputs, the model {len(outputs)}")
        loss = _loss(results, outputs, weights)
    floors: dict[int, np.ndarray] = {}
    for group in groups_within(sizes, GRADIENT_CHUNK_FRACTION):
        grads = tape.gradient(loss, [twin_variables[i] for i in group])
        for i, g in zip(group, grads, strict=True):
            if g is None:
                continue
            floor = _gradient_floor(low[keys[i]], np.asarray(tf.convert_to_tensor(g)))
            if floor is not None:
                floors[i] = floor
        del grads
    del tape
    out64 = {
        name: np.asarray(r) for name, r in zip(outputs, results, strict=True) if name in weights
    }
    return floors, out64


def _float32_gradients(
    loaded: LoadedModel,
    arrays: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    weights: dict[str, np.ndarray],
) -> tuple[dict[int, Any], str | None]:
    """Every trainable variable's gradient of the fixed loss, by ``id`` of its
    :class:`TfVariable`, and why TF could not differentiate the model (None when it could).
    Its own function so that the tape and the outputs are gone when it returns."""
    import tensorflow as tf

    trainable = [v for v in loaded.variables if v.trainable]
    try:
        with tf.GradientTape() as tape:
            results = loaded.call({k: tf.constant(v) for k, v in arrays.items()})
            loss = _loss(results, outputs, weights)
        if not trainable:
            return {}, None
        gradients = tape.gradient(loss, [v.variable for v in trainable])
        return dict(zip((id(v) for v in trainable), gradients, strict=True)), None
    except (LookupError, ValueError, TypeError, tf.errors.OpError) as err:
        # An op without a registered gradient (LookupError) or one TF cannot trace under a
        # tape: the outputs were already compared; the gradient check is skipped, saying why.
        return {}, one_line(err)


def write_variables_and_gradients(
    loaded: LoadedModel,
    arrays: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    seed: int,
    path: Path,
) -> tuple[list[dict[str, Any]], str | None, str | None]:
    """Write every variable's value and every trainable one's gradient of the fixed loss to
    ``path`` (keys ``value/<i>``, ``grad/<i>``, ``loss_weight/<output>``) and TF's floors
    beside it (:data:`FLOORS_NPZ`); return the
    variables' metadata in the same order, why TF could not differentiate the model (None
    when it could; then no variable has a gradient), and why TF's own gradient noise floor
    was not measured (None when it was).

    TF's floor: the same loss differentiated through a float64 twin of the Keras model
    (:func:`float64_twin`); ``grad_noise/<i>`` = ``[max |g32 - g64|, max |g64|]`` per
    gradient, and ``output64/<output>`` the twin's outputs, which the verify stage holds
    against torch's float64 copy before it trusts the floor."""
    import tensorflow as tf

    weights = loss_weights(outputs, seed)
    grads, error = _float32_gradients(loaded, arrays, outputs, weights)
    meta: list[dict[str, Any]] = []
    has_grad: list[int] = []

    def items() -> Iterator[tuple[str, np.ndarray]]:
        # One variable's value and gradient at a time, streamed to the file: never a second
        # copy of all of them (the tape's tensors go as they are written).
        yield from ((f"loss_weight/{k}", w) for k, w in weights.items())
        for i, v in enumerate(loaded.variables):
            value = np.asarray(v.variable)
            yield f"value/{i}", value
            grad = grads.pop(id(v), None)
            if grad is not None:
                yield f"grad/{i}", np.asarray(tf.convert_to_tensor(grad))
                has_grad.append(i)
            meta.append(
                {
                    "path": v.path,
                    "shape": list(value.shape),
                    "dtype": value.dtype.name,
                    "trainable": v.trainable,
                    "has_grad": grad is not None,
                    **({"batchnorm": v.batchnorm} if v.batchnorm is not None else {}),
                    **(v.info or {}),
                }
            )

    write_npz(path, items())
    grads.clear()
    noise_unmeasured = None
    floors_path = path.with_name(FLOORS_NPZ)
    if error is None and has_grad:
        try:
            low = LazyNpz(path)
            floors, out64 = _float64_floors(
                loaded, arrays, outputs, weights, {i: f"grad/{i}" for i in has_grad}, low
            )
            low.close()
            write_npz(
                floors_path,
                {f"grad_noise/{i}": f for i, f in floors.items()}
                | {f"output64/{k}": v for k, v in out64.items()},
            )
        except Exception as err:  # no twin: the check keeps torch's floor alone, saying why
            noise_unmeasured = f"TF's float64 twin failed: {one_line(err)}"
    if noise_unmeasured is not None or not floors_path.exists():
        write_npz(floors_path, {})
    return meta, error, noise_unmeasured


def _gradient_floor(low: np.ndarray, high: np.ndarray | None) -> np.ndarray | None:
    """TF's own float32 noise floor of one gradient: ``[max |low - high|, max |high|]``
    over the elements finite on both sides (float64), or None without a twin gradient."""
    if high is None or low.shape != high.shape or low.dtype.kind != "f":
        return None
    low64, high64 = low.astype(np.float64), high.astype(np.float64)
    finite = np.isfinite(low64) & np.isfinite(high64)
    if not finite.any():
        return None
    return np.array(
        [np.max(np.abs(low64 - high64)[finite]), np.max(np.abs(high64[finite]))], np.float64
    )
