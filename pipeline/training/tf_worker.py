"""TensorFlow worker for ``train-check``: K training steps with Keras's own ``train_step``.

Run as ``python -m pipeline.training.tf_worker REQUEST.json`` (never imported next to torch;
built on :func:`pipeline.export.worker.serve.serve` and :func:`pipeline.export.worker.loading.load_model`, like
:mod:`pipeline.diff.tf_worker`).  The model is loaded once (``compile=True`` for
``.keras``/``.h5`` files, so a file saved after ``compile`` brings its optimizer and loss);
then each **job** of the request, in order:

1. resets the model's weights to the loaded values;
2. takes ``compile()``'s arguments from the job's ``description`` (a description file's
   contents) or from the compiled model, reads the :class:`TrainingConfig` from those live
   objects and validates it (:func:`~pipeline.training.config.check_supported`): anything
   torch cannot reproduce stops the job here, before it trains;
3. compiles the model with a **fresh** optimizer of the same class and config (iteration 0,
   empty slots, as after ``compile()``), draws or reads the batches
   (:mod:`pipeline.training.data`) and runs ``model.train_on_batch`` (Keras's
   ``train_step`` + ``optimizer.apply``, BatchNorm in training mode) once per batch,
   recording the loss, the learning rate and every variable after each step;
4. unless the job's ``float64`` is false, trains the model's float64 twin the same way
   (:func:`train_float64_twin`): train-check's measure of TF's own float32 drift.

Dropout-like layers (``Dropout``, ``SpatialDropout*``, ``GaussianDropout``, ``AlphaDropout``,
``GaussianNoise``) are switched off (rate 0) for every job: the converted module comes from
an inference graph and has none, so the report lists them as the one known difference.

Request keys: those :func:`pipeline.export.worker.loading.load_model` reads, ``cwd``, ``result``,
``registered`` (user-registered optimizer/loss names) and ``jobs``, each with ``name``,
``description`` (or null), ``origin``, ``steps``, ``batch``, ``seed``, ``input_ranges``,
``data`` (an ``.npz`` path or null), ``float64`` (default true) and ``out_npz``.

Answer: ``outputs`` (Keras output names), ``inputs`` (the signature), ``variables`` (path,
shape, trainable, in ``model.weights`` order), ``dropout`` and per job ``name`` and either
``error`` (``kind``, ``message``) or ``config`` (:meth:`TrainingConfig.to_json`), ``losses``
and ``learning_rates`` per step, ``losses64`` (the twin's) and ``float64_error`` (why the twin
did not train, or null).  The job's ``out_npz`` holds the batches
(:func:`~pipeline.training.data.save_batches`), ``value/<step>/<i>`` for step 0 (before
training) to K and the twin's ``value64/<step>/<i>``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import BadInputError, Tf2TorchError
from pipeline.core.run_dir import write_npz
from pipeline.core.signature import TensorSpec
from pipeline.export.worker.loading import LoadedModel, one_line
from pipeline.export.worker.scaling import load_and_scale
from pipeline.export.worker.serve import serve
from pipeline.training.config import (
    TrainingConfig,
    TrainingConfigError,
    check_supported,
)
from pipeline.training.data import (
    Batch,
    draw_batches,
    load_batches,
    load_dataset,
    save_batches,
    target_for,
)
from pipeline.training.keras_config import (
    attach_regularizers,
    compile_arguments,
    describe_compiled_metrics,
    read_training_config,
)

_DROPOUT_ATTRIBUTES = {
    "Dropout": "rate",
    "SpatialDropout1D": "rate",
    "SpatialDropout2D": "rate",
    "SpatialDropout3D": "rate",
    "GaussianDropout": "rate",
    "AlphaDropout": "rate",
    "GaussianNoise": "stddev",
}


def disable_dropout(model: Any) -> list[dict[str, Any]]:
    """Set every dropout-like layer's rate (``GaussianNoise``: stddev) to 0; return
    ``layer``, ``class_name`` and the original value for each."""
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        for cls in type(layer).__mro__:
            attribute = _DROPOUT_ATTRIBUTES.get(cls.__name__)
            if attribute and str(cls.__module__).startswith("keras."):
                value = float(getattr(layer, attribute))
                if value > 0:
                    setattr(layer, attribute, 0.0)
                    found.append(
                        {"layer": layer.name, "class_name": type(layer).__name__, attribute: value}
                    )
                break
    return found


def _output_shapes(model: Any, specs: Sequence[TensorSpec]) -> list[tuple[int, ...]]:
    """Each output's shape without the batch dimension (from the symbolic outputs, or from a
    call on zeros when those leave a dimension open)."""
    try:
        shapes = [tuple(t.shape[1:]) for t in model.outputs]
    except (AttributeError, ValueError):
        shapes = []
    if not shapes or any(d is None for s in shapes for d in s):
        zeros = [np.zeros(s.concrete_shape(2), s.dtype) for s in specs]
        result = model(zeros[0] if len(zeros) == 1 else zeros, training=False)
        result = list(result.values()) if isinstance(result, dict) else result
        result = result if isinstance(result, list | tuple) else [result]
        shapes = [tuple(int(d) for d in np.shape(r)[1:]) for r in result]
    return [tuple(int(d) for d in s) for s in shapes]


def _fresh_optimizer(optimizer: Any) -> Any:
    """A new optimizer of the same class and config (iteration 0, no slots), keeping its
    ``exclude_from_weight_decay`` choices."""
    fresh = type(optimizer).from_config(optimizer.get_config())
    for attribute in ("_exclude_from_weight_decay", "_exclude_from_weight_decay_pattern"):
        if hasattr(optimizer, attribute):
            setattr(fresh, attribute, getattr(optimizer, attribute))
    return fresh


def _check_loss_pairing(
    model: Any, config: TrainingConfig, batch: Batch, specs: Sequence[TensorSpec]
) -> None:
    """Build Keras's CompileLoss on one batch and check it pairs the same loss functions with
    the outputs as ``config`` says (the config is read independently of Keras's pairing)."""
    from keras.src.losses.losses import LossFunctionWrapper

    x = [batch.inputs[s.name] for s in specs]
    y = [batch.targets[t.output] for t in config.losses]
    pred = model(x[0] if len(x) == 1 else x, training=False)
    model.compute_loss(x=None, y=y[0] if len(y) == 1 else y, y_pred=pred)
    flat = getattr(model._compile_loss, "_flat_losses", None)
    if flat is None:
        return
    names = []
    for entry in flat:
        loss = entry[1]
        fn = loss.fn if isinstance(loss, LossFunctionWrapper) else loss
        names.append(getattr(fn, "__name__", type(fn).__name__))
    expected = [t.name for t in config.losses]
    if names != expected:
        raise TrainingConfigError(
            f"Keras pairs the outputs with losses {names}, tf2torch read {expected} "
            "(config key 'loss'): give one loss per output, in output order or by output name"
        )


def run_job(
    loaded: LoadedModel,
    job: dict[str, Any],
    compiled: dict[str, Any] | None,
    initial: list[np.ndarray],
    own_regularizers: dict[str, Any],
    registered: dict[str, list[str]],
) -> dict[str, Any]:
    """Run one job of the request (module docstring) and return its answer entry."""
    model = loaded.keras_model
    policy = getattr(model, "dtype_policy", None)
    if policy is not None and getattr(policy, "name", "float32") != "float32":
        raise TrainingConfigError(
            f"the model trains with the {policy.name} dtype policy; train-check reproduces "
            "float32 training only"
        )
    model.set_weights(initial)
    for v in model.trainable_weights:
        v.regularizer = own_regularizers.get(v.path)
    output_names = list(model.output_names)
    if job.get("description") is not None:
        arguments = compile_arguments(job["description"])
        attach_regularizers(model, job["description"].get("regularizers") or {})
        origin = str(job.get("origin") or "description")
    elif compiled is not None:
        arguments = compiled
        origin = "compiled model"
    else:
        raise TrainingConfigError(
            f"{loaded.description} is not compiled: give the training configuration with "
            "--training-config FILE (JSON or TOML, compile()'s arguments)"
        )
    config = read_training_config(model, arguments, output_names, origin)
    check_supported(config, registered)

    specs = loaded.inputs
    shapes = _output_shapes(model, specs)
    targets = [target_for(t.output, t.name, shapes[t.index]) for t in config.losses]
    steps, batch = int(job["steps"]), int(job["batch"])
    if job.get("evaluate"):
        if not job.get("data"):
            raise BadInputError("evaluate needs the data to evaluate on (--data FILE.npz)")
        batches = [load_dataset(Path(job["data"]), specs, targets)]
    elif job.get("data"):
        batches = load_batches(Path(job["data"]), specs, targets, steps=steps, batch=batch)
    else:
        ranges = {k: (int(v[0]), int(v[1])) for k, v in (job.get("input_ranges") or {}).items()}
        batches = draw_batches(
            specs,
            targets,
            {t.output: int(shapes[t.index][-1]) for t in config.losses if shapes[t.index]},
            steps=steps,
            batch=batch,
            seed=int(job["seed"]),
            ranges=ranges,
        )

    started = time.perf_counter()
    # compile() keeps the previous job's metrics when given none
    model._compile_metrics = None
    model.compile(
        optimizer=_fresh_optimizer(arguments["optimizer"]),
        loss=arguments.get("loss"),
        loss_weights=arguments.get("loss_weights"),
        metrics=arguments.get("metrics"),
        jit_compile=False,  # plain TF ops: XLA (on GPU) would fuse and round differently
        run_eagerly=bool(job.get("eager", False)),
    )
    _check_loss_pairing(model, config, batches[0], specs)
    timings = {"prepare": time.perf_counter() - started}
    if job.get("evaluate"):
        return _evaluate(model, job, config, batches[0], specs, started)
    values: dict[str, np.ndarray] = {
        f"value/0/{i}": np.asarray(v.numpy()) for i, v in enumerate(model.weights)
    }
    losses, rates = [], []
    for step, b in enumerate(batches, start=1):
        x = [b.inputs[s.name] for s in specs]
        y = [b.targets[t.output] for t in config.losses]
        rates.append(float(np.asarray(model.optimizer.learning_rate)))
        try:
            logs = model.train_on_batch(
                x[0] if len(x) == 1 else x, y[0] if len(y) == 1 else y, return_dict=True
            )
        except Exception as err:
            raise BadInputError(f"Keras could not train on the batches: {one_line(err)}") from None
        losses.append(float(logs["loss"]))
        timings.setdefault("first_step", time.perf_counter() - started - timings["prepare"])
        values.update(
            {f"value/{step}/{i}": np.asarray(v.numpy()) for i, v in enumerate(model.weights)}
        )
    losses64: list[float] = []
    float64_error = "not asked for"
    if job.get("float64", True):
        started64 = time.perf_counter()
        model.set_weights(initial)
        try:
            losses64, values64 = train_float64_twin(
                model, arguments, config, batches, specs, eager=bool(job.get("eager", False))
            )
            values.update(values64)
            float64_error = ""
        except Exception as err:  # no twin: train-check says why and uses torch's floor alone
            float64_error = f"TF's float64 twin could not train: {one_line(err)}"
        timings["float64"] = time.perf_counter() - started64
    out = Path(job["out_npz"])
    save_batches(out.with_name(out.stem + ".batches.npz"), batches)
    write_npz(out, values)
    return {
        "name": job["name"],
        "config": config.to_json(),
        "losses": losses,
        "losses64": losses64,
        "float64_error": float64_error or None,
        "learning_rates": rates,
        "batches_npz": str(out.with_name(out.stem + ".batches.npz")),
        "timings": {k: round(v, 3) for k, v in timings.items()}
        | {"total": round(time.perf_counter() - started, 3)},
    }


def _float64_loss(loss: Any) -> Any:
    """A compile() ``loss`` entry that computes in float64: a ``Loss`` object is copied
    with its dtype made float64 (a copy, not ``from_config``: Keras's ``Huber`` forgets its
    ``delta`` there); names and functions take the dtype of the compiled loss."""
    import copy

    import keras
    from keras.src import dtype_policies

    if isinstance(loss, Mapping):
        return {k: _float64_loss(v) for k, v in loss.items()}
    if isinstance(loss, list | tuple):
        return [_float64_loss(v) for v in loss]
    if isinstance(loss, keras.losses.Loss):
        wide = copy.copy(loss)
        wide._dtype_policy = dtype_policies.get("float64")
        wide._dtype = "float64"
        return wide
    return loss


def train_float64_twin(
    model: Any,
    arguments: Mapping[str, Any],
    config: TrainingConfig,
    batches: Sequence[Batch],
    specs: Sequence[TensorSpec],
    *,
    eager: bool = False,
) -> tuple[list[float], dict[str, np.ndarray]]:
    """The same training in float64: the model's float64 twin
    (:func:`pipeline.export.worker.reference.float64_twin`, built from ``model``'s current
    values) with a fresh optimizer of the same config, the same loss computed in float64
    (``floatx`` float64 while it compiles and trains) and the same regularizers, on the
    same batches widened to float64.  Returns the loss of each step and ``value64/<step>/<i>``
    (``i`` in ``model.weights`` order) for step 0 to K.  Raises where the twin cannot be
    built or trained (a layer that ignores the dtype, an op without a float64 kernel)."""
    import keras

    from pipeline.export.worker.reference import float64_twin

    twin, variables = float64_twin(model)
    for source, target in zip(model.weights, variables, strict=True):
        if hasattr(source, "regularizer"):  # the description's ones are not in the config
            target.regularizer = source.regularizer
    previous = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        twin.compile(
            optimizer=_fresh_optimizer(arguments["optimizer"]),
            loss=_float64_loss(arguments.get("loss")),
            loss_weights=arguments.get("loss_weights"),
            jit_compile=False,
            run_eagerly=eager,
        )
        values = {f"value64/0/{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
        losses = []
        for step, b in enumerate(batches, start=1):
            x = [_wide(b.inputs[s.name]) for s in specs]
            y = [_wide(b.targets[t.output]) for t in config.losses]
            logs = twin.train_on_batch(
                x[0] if len(x) == 1 else x, y[0] if len(y) == 1 else y, return_dict=True
            )
            losses.append(float(logs["loss"]))
            values.update(
                {f"value64/{step}/{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
            )
    finally:
        keras.config.set_floatx(previous)
    for key, value in values.items():
        if value.dtype.kind == "f" and value.dtype != np.float64:
            raise ValueError(f"the twin's variable {key.split('/')[-1]} is {value.dtype}")
    return losses, values


def _wide(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float64) if array.dtype.kind == "f" else array


def _evaluate(
    model: Any,
    job: dict[str, Any],
    config: TrainingConfig,
    data: Batch,
    specs: Sequence[TensorSpec],
    started: float,
) -> dict[str, Any]:
    """Keras's ``evaluate`` on the whole data set, batch by batch; the logs and the metrics
    Keras built (:func:`~pipeline.training.keras_config.describe_compiled_metrics`)."""
    x = [data.inputs[s.name] for s in specs]
    y = [data.targets[t.output] for t in config.losses]
    try:
        logs = model.evaluate(
            x[0] if len(x) == 1 else x,
            y[0] if len(y) == 1 else y,
            batch_size=int(job["batch"]),
            verbose=0,
            return_dict=True,
        )
    except Exception as err:
        raise BadInputError(f"Keras could not evaluate on the data: {one_line(err)}") from None
    out = Path(job["out_npz"])
    batches_npz = out.with_name(out.stem + ".batches.npz")
    save_batches(batches_npz, [data])
    write_npz(out, {f"value/0/{i}": np.asarray(v.numpy()) for i, v in enumerate(model.weights)})
    return {
        "name": job["name"],
        "config": config.to_json(),
        "losses": [],
        "learning_rates": [],
        "batches_npz": str(batches_npz),
        "evaluation": {
            "logs": {k: float(v) for k, v in logs.items()},
            "metrics": describe_compiled_metrics(model, list(model.output_names)),
        },
        "timings": {"total": round(time.perf_counter() - started, 3)},
    }


def handle(request: dict[str, Any]) -> dict[str, Any]:
    """Do the request's work and return the JSON-ready answer (see the module docstring)."""
    import keras
    import tensorflow as tf

    loaded = load_and_scale({**request, "compile": True})
    model = loaded.keras_model
    if model is None:
        raise BadInputError(
            f"train-check needs a Keras model (.keras, .h5 or a factory); {loaded.description} "
            "is a SavedModel, whose training step Keras cannot run"
        )
    compile_config = getattr(model, "_compile_config", None)
    compiled = dict(compile_config.config) if compile_config is not None else None
    if compiled is not None and compiled.get("optimizer") is None:
        compiled = None
    if compiled is not None and isinstance(compiled["optimizer"], str | dict):
        compiled["optimizer"] = keras.optimizers.get(compiled["optimizer"])
    dropout = disable_dropout(model)
    initial = model.get_weights()
    own_regularizers = {
        v.path: v.regularizer for v in model.trainable_weights if getattr(v, "regularizer", None)
    }
    jobs = []
    for job in request["jobs"]:
        try:
            jobs.append(
                run_job(
                    loaded, job, compiled, initial, own_regularizers, request.get("registered", {})
                )
            )
        except Tf2TorchError as err:
            jobs.append({"name": job["name"], "error": {"kind": err.kind, "message": str(err)}})
    return {
        "inputs": [s.to_json() for s in loaded.inputs],
        "outputs": list(model.output_names),
        "variables": [
            {"path": v.path, "shape": list(v.shape), "trainable": bool(v.trainable)}
            for v in model.weights
        ],
        "dropout": dropout,
        "jobs": jobs,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m pipeline.training.tf_worker REQUEST.json``."""
    return serve(handle, argv)


if __name__ == "__main__":
    sys.exit(main())
