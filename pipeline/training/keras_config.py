"""Read a :class:`~pipeline.training.config.TrainingConfig` from live Keras objects.

TF-worker side only (imports Keras).  The configuration is read from the objects Keras
will train with, not from their serialised form: ``keras.losses.Huber(delta=0.5)`` forgets
its ``delta`` in ``get_config()`` (Keras 3.15), but the live loss keeps it in ``_fn_kwargs``.

A description file (:func:`pipeline.training.config.read_description`) is first turned into
Keras objects with Keras's own ``get`` functions (so a bare ``"adam"`` gets Keras's defaults,
epsilon 1e-7 and all) and then read back the same way as a compiled model.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.training.config import (
    LossTerm,
    OptimizerConfig,
    Regularizer,
    Schedule,
    TrainingConfig,
    TrainingConfigError,
)


def _json_safe(value: Any) -> Any:
    return json.loads(
        json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    )


def _one_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _is_keras_own(obj: Any) -> bool:
    module = obj.__module__ if inspect.isfunction(obj) else type(obj).__module__
    return str(module).startswith("keras.")


def describe_learning_rate(optimizer: Any) -> float | Schedule:
    """The optimizer's learning rate: a float (as stored, float32) or a :class:`Schedule`."""
    import keras
    import numpy as np

    lr = optimizer._learning_rate
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        name = type(lr).__name__ if _is_keras_own(lr) else f"{type(lr).__name__} (custom class)"
        return Schedule(name, _json_safe(lr.get_config()))
    if callable(lr) and not isinstance(lr, keras.Variable):
        raise TrainingConfigError(
            "the learning rate is a plain callable (config key 'optimizer.learning_rate'); "
            "use a keras.optimizers.schedules class"
        )
    return float(np.asarray(lr))


def describe_optimizer(optimizer: Any, variables: Sequence[Any]) -> OptimizerConfig:
    """The optimizer's class, learning rate and the rest of ``get_config()``; which of
    ``variables`` (the trainable ones) ``exclude_from_weight_decay`` took out."""
    name = (
        type(optimizer).__name__
        if _is_keras_own(optimizer)
        else f"{type(optimizer).__name__} (custom class)"
    )
    config = _json_safe(optimizer.get_config())
    config.pop("name", None)
    config.pop("learning_rate", None)
    excluded: tuple[str, ...] = ()
    if getattr(optimizer, "weight_decay", None):
        excluded = tuple(v.path for v in variables if not optimizer._use_weight_decay(v))
    return OptimizerConfig(name, describe_learning_rate(optimizer), config, excluded)


def resolve_loss(identifier: Any) -> Any:
    """A compile() loss entry (string, function, Loss object or dict) as a Keras object."""
    import keras

    if isinstance(identifier, str) and identifier.lower() in ("crossentropy", "ce"):
        raise TrainingConfigError(
            f"loss {identifier!r} (config key 'loss') lets Keras guess the cross-entropy "
            "from the targets; name it (binary_, categorical_ or sparse_categorical_crossentropy)"
        )
    try:
        return keras.losses.get(identifier)
    except (ValueError, TypeError) as err:
        raise TrainingConfigError(
            f"loss {identifier!r} (config key 'loss'): {_one_line(err)}"
        ) from None


def describe_loss(loss: Any) -> tuple[str, dict[str, Any]]:
    """(Keras loss function name, its arguments + ``reduction``) of a resolved loss."""
    import keras
    from keras.src.losses.losses import LossFunctionWrapper  # not exported by keras.losses

    if isinstance(loss, LossFunctionWrapper):
        fn, kwargs, reduction = loss.fn, dict(loss._fn_kwargs), loss.reduction
    elif isinstance(loss, keras.losses.Loss):
        name = type(loss).__name__ if _is_keras_own(loss) else f"{type(loss).__name__}"
        return name, _json_safe({**loss.get_config(), "custom": not _is_keras_own(loss)})
    elif callable(loss):
        fn, kwargs, reduction = loss, {}, "sum_over_batch_size"
    else:
        raise TrainingConfigError(f"loss {loss!r} (config key 'loss') is not a Keras loss")
    defaults = {
        p.name: p.default
        for p in list(inspect.signature(fn).parameters.values())[2:]
        if p.default is not inspect.Parameter.empty
    }
    config = {**defaults, **kwargs, "reduction": reduction}
    if not _is_keras_own(fn):
        config["custom"] = True
    return fn.__name__, _json_safe(config)


def per_output_losses(
    loss: Any, loss_weights: Any, output_names: Sequence[str]
) -> list[tuple[int, str, Any, float | None]]:
    """(index, output name, resolved loss, weight) per output, as Keras's CompileLoss pairs
    them: one loss for every output, a list in output order, or a dict by output name."""
    n = len(output_names)
    if isinstance(loss, Mapping) and "class_name" not in loss:
        unknown = sorted(set(loss) - set(output_names))
        if unknown:
            raise TrainingConfigError(
                f"loss names output(s) {', '.join(unknown)} the model lacks "
                f"(config key 'loss'; outputs: {', '.join(output_names)})"
            )
        losses = [loss.get(name) for name in output_names]
    elif isinstance(loss, list | tuple):
        if len(loss) != n:
            raise TrainingConfigError(
                f"loss lists {len(loss)} losses for {n} model outputs (config key 'loss')"
            )
        losses = list(loss)
    else:
        losses = [loss] * n
    if loss_weights is None:
        weights: list[Any] = [None] * n
    elif isinstance(loss_weights, Mapping):
        weights = [loss_weights.get(name) for name in output_names]
    elif isinstance(loss_weights, list | tuple):
        if len(loss_weights) != n:
            raise TrainingConfigError(
                f"loss_weights has {len(loss_weights)} entries for {n} outputs "
                "(config key 'loss_weights')"
            )
        weights = list(loss_weights)
    else:
        weights = [loss_weights] * n
    found = []
    for index, (name, entry, weight) in enumerate(zip(output_names, losses, weights, strict=True)):
        if entry is None:
            raise TrainingConfigError(
                f"output {name} has no loss (config key 'loss'): train-check needs one per output"
            )
        found.append((index, name, resolve_loss(entry), None if weight is None else float(weight)))
    return found


def describe_regularizers(model: Any) -> list[Regularizer]:
    """The regularizer of every trainable variable that has one (``variable.regularizer``,
    set by ``add_weight(regularizer=...)``, i.e. ``kernel_regularizer`` and friends)."""
    found = []
    for v in model.trainable_weights:
        reg = getattr(v, "regularizer", None)
        if reg is None:
            continue
        name = type(reg).__name__ if _is_keras_own(reg) else f"{type(reg).__name__} (custom class)"
        config = _json_safe(reg.get_config()) if hasattr(reg, "get_config") else {}
        found.append(Regularizer(v.path, name, config))
    return found


def describe_activity_regularizers(model: Any) -> list[dict[str, Any]]:
    """Layers with an ``activity_regularizer``: ``layer``, ``class_name``, ``config``."""
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        reg = getattr(layer, "activity_regularizer", None)
        if reg is not None:
            found.append(
                {
                    "layer": layer.name,
                    "class_name": type(reg).__name__,
                    "config": _json_safe(reg.get_config()) if hasattr(reg, "get_config") else {},
                }
            )
    return found


def attach_regularizers(model: Any, regularizers: Mapping[str, Any]) -> None:
    """Give the model's variables the description's ``regularizers`` (path → regularizer),
    so Keras trains with them too."""
    import keras

    by_path = {v.path: v for v in model.trainable_weights}
    for path, spec in regularizers.items():
        if path not in by_path:
            raise TrainingConfigError(
                f"regularizers names variable {path!r} (config key 'regularizers[{path}]'), "
                f"which is not a trainable variable of the model ({', '.join(by_path)})"
            )
        try:
            by_path[path].regularizer = keras.regularizers.get(spec)
        except (ValueError, TypeError) as err:
            raise TrainingConfigError(
                f"regularizer {spec!r} (config key 'regularizers[{path}]'): {_one_line(err)}"
            ) from None


def _loss_objects(loss: Any) -> Any:
    """A description's ``loss`` with every entry a Keras object: ``compile()`` would read a
    serialised ``{"class_name", "config"}`` table as a dict keyed by output name."""
    if isinstance(loss, Mapping) and "class_name" not in loss:
        return {
            name: None if entry is None else resolve_loss(entry) for name, entry in loss.items()
        }
    if isinstance(loss, list | tuple):
        return [None if entry is None else resolve_loss(entry) for entry in loss]
    return resolve_loss(loss)


def compile_arguments(description: Mapping[str, Any]) -> dict[str, Any]:
    """``compile()`` keyword arguments built from a description's entries."""
    import keras

    spec = description["optimizer"]
    if isinstance(spec, Mapping) and isinstance(
        spec.get("config", {}).get("learning_rate"), Mapping
    ):
        # A nested schedule without Keras's "module" key is not found by the optimizer's
        # from_config; deserialize it as a schedule first.
        lr = spec["config"]["learning_rate"]
        try:
            schedule = keras.optimizers.schedules.deserialize(dict(lr))
        except (ValueError, TypeError) as err:
            raise TrainingConfigError(
                f"learning-rate schedule {lr.get('class_name')!r} (config key "
                f"'optimizer.learning_rate'): {_one_line(err)}"
            ) from None
        spec = {**spec, "config": {**spec["config"], "learning_rate": schedule}}
    try:
        optimizer = keras.optimizers.get(spec)
    except (ValueError, TypeError) as err:
        raise TrainingConfigError(
            f"optimizer {description['optimizer']!r} (config key 'optimizer'): {_one_line(err)}"
        ) from None
    return {
        "optimizer": optimizer,
        "loss": _loss_objects(description["loss"]),
        "loss_weights": description.get("loss_weights"),
        "metrics": description.get("metrics"),
    }


def _metrics_json(metrics: Any) -> Any:
    """compile()'s ``metrics`` as JSON: names stay, metric objects are Keras-serialised."""
    import keras

    if isinstance(metrics, Mapping):
        return {str(k): _metrics_json(v) for k, v in metrics.items()}
    if isinstance(metrics, list | tuple):
        return [_metrics_json(m) for m in metrics]
    if isinstance(metrics, str) or metrics is None:
        return metrics
    if inspect.isfunction(metrics):
        return metrics.__name__
    return _json_safe(keras.saving.serialize_keras_object(metrics))


def read_training_config(
    model: Any, arguments: Mapping[str, Any], output_names: Sequence[str], origin: str
) -> TrainingConfig:
    """The :class:`TrainingConfig` of ``model`` trained with ``compile(**arguments)``."""
    import keras

    terms = []
    for index, name, loss, weight in per_output_losses(
        arguments.get("loss"), arguments.get("loss_weights"), output_names
    ):
        loss_name, config = describe_loss(loss)
        terms.append(LossTerm(name, index, loss_name, config, weight))
    return TrainingConfig(
        optimizer=describe_optimizer(arguments["optimizer"], model.trainable_weights),
        losses=tuple(terms),
        metrics=_metrics_json(arguments.get("metrics") or []),
        regularizers=tuple(describe_regularizers(model)),
        epsilon=float(keras.config.epsilon()),
        origin=origin,
        activity_regularizers=tuple(describe_activity_regularizers(model)),
    )


def describe_compiled_metrics(model: Any, output_names: Sequence[str]) -> list[dict[str, Any]]:
    """The metrics Keras built for the compiled model (after a first ``evaluate``/train
    step), each with the ``key`` its logs use, its ``output`` and ``index``, its
    ``class_name`` and, for function-backed metrics (``MeanMetricWrapper``: accuracies, MSE,
    MAE, ...), the function name ``fn`` and its arguments ``config``."""
    from keras.src.metrics.reduction_metrics import MeanMetricWrapper

    compiled = getattr(model, "_compile_metrics", None)
    if compiled is None or not getattr(compiled, "built", False):
        return []
    found: list[dict[str, Any]] = []
    counters: dict[str, int] = {}
    for index, metrics in enumerate(compiled._flat_metrics):
        if not metrics:
            continue
        for metric in metrics.metrics:
            key = f"{metrics.output_name}_{metric.name}" if metrics.output_name else metric.name
            if key in counters:  # Keras's own de-duplication of result names
                counters[key] += 1
                key = f"{key}_{counters[key] - 1}"
            else:
                counters[key] = 1
            entry: dict[str, Any] = {
                "key": key,
                "output": output_names[index],
                "index": index,
                "class_name": type(metric).__name__,
            }
            if isinstance(metric, MeanMetricWrapper):
                fn = metric._fn
                entry["fn"] = getattr(fn, "__name__", type(fn).__name__)
                entry["config"] = _json_safe(dict(metric._fn_kwargs))
            found.append(entry)
    return found
