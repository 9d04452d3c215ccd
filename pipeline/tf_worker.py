"""The TensorFlow worker: every piece of TensorFlow work runs here, in its own process.

Run as ``python -m pipeline.tf_worker REQUEST.json``.  TensorFlow may not share a process
with torch (importing torchvision after TensorFlow segfaults with the pinned versions, and on
a GPU TensorFlow takes all device memory), so the orchestrator writes a JSON request, this
process loads the model, reads its signature, prepares the inputs, exports ONNX with tf2onnx
and runs the TF reference, and answers with a JSON result beside the ``.npz`` artifacts.

A failure the user can act on is answered as ``{"ok": false, "kind": ..., "message": ...}``
with exit code 3; anything unexpected gets the same shape with kind ``worker_crash`` and the
traceback goes to stderr, which the orchestrator keeps in ``tf_worker.log``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from pipeline.errors import BadInputError, OnnxExportError, Tf2TorchError
from pipeline.inputs import check_range_names, draw_inputs, load_inputs
from pipeline.run_dir import write_npz
from pipeline.scaling import ACTIVATION, CONV, DENSE, activation_factor, parse_scale
from pipeline.signature import TensorSpec
from pipeline.sources import Source, SourceKind

EXIT_USER_ERROR = 3
EXIT_CRASH = 4


@dataclass(frozen=True)
class TfVariable:
    """One variable of the model: its path (``layer/sublayer/name``), trainability and value."""

    path: str
    trainable: bool
    variable: Any  # tf.Variable
    batchnorm: dict[str, float] | None = None  # epsilon, momentum of its BatchNormalization
    info: dict[str, Any] | None = None
    """Keras models only: ``layer`` (path), ``layer_class``, ``layer_kind`` (``conv``,
    ``dense`` or None, see :mod:`pipeline.scaling`) and ``initializer`` (``class_name``,
    ``config``; see :func:`_describe_initializer`)."""


@dataclass
class LoadedModel:
    """A loaded TF model behind one interface, whatever its source format.

    ``call`` takes TF tensors keyed by input name and returns the output tensors in output
    order (inference mode); it is what both the reference run and the gradients use.
    """

    inputs: list[TensorSpec]
    call: Callable[[dict[str, Any]], list[Any]]
    export: Callable[[list[TensorSpec], int], Any]  # -> onnx.ModelProto
    output_names: list[str] | None = None
    description: str = ""
    variables: list[TfVariable] = field(default_factory=list)
    keras_model: Any = None  # the keras.Model, when the source is a Keras model
    scaling: dict[str, Any] | None = None  # what --scale did (report.json's ``scaling``)

    def run(self, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs for numpy inputs, as numpy arrays."""
        import tensorflow as tf

        return [np.asarray(t) for t in self.call({k: tf.constant(v) for k, v in arrays.items()})]


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def _import_user_module(location: str) -> ModuleType:
    """Import ``path/to/file.py`` or ``package.module`` (the current directory is importable)."""
    if location.endswith(".py"):
        path = Path(location)
        if not path.is_file():
            raise BadInputError(f"module file not found: {location}")
        name = f"_tf2torch_user_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        # The user's file may import siblings next to it.
        sys.path.insert(0, str(path.parent))
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(location)


@contextmanager
def _grouped_convolutions_without_xla() -> Iterator[None]:
    """While tracing for export, run Keras 3 grouped convolutions as plain TF ops.

    On CPU, Keras 3's TensorFlow backend runs grouped convolutions (ConvNeXt's depthwise
    ``Conv2D(groups=C)``) inside ``tf.function(jit_compile=True)``; tf2onnx cannot see into
    that and leaves an unconverted ``StatefulPartitionedCall``.  Export only traces, so the
    plain ``tf.nn.convolution`` it wraps is what we hand to tf2onnx.  The TF reference run
    still uses Keras's own code path.
    """
    try:
        import keras
        import tensorflow as tf
        from keras.src.backend.tensorflow import nn as tf_nn
    except ImportError:  # another Keras layout: nothing to patch
        yield
        return
    original = tf_nn.conv

    def conv(
        inputs: Any,
        kernel: Any,
        strides: Any = 1,
        padding: str = "valid",
        data_format: str | None = None,
        dilation_rate: Any = 1,
    ) -> Any:
        data_format = data_format or keras.config.image_data_format()
        return tf.nn.convolution(
            inputs,
            kernel,
            strides,
            padding.upper(),
            data_format=tf_nn._convert_data_format(data_format, len(inputs.shape)),
            dilations=dilation_rate,
        )

    tf_nn.conv = conv
    try:
        yield
    finally:
        tf_nn.conv = original


def _tf_specs(specs: Sequence[TensorSpec]) -> list[Any]:
    import tensorflow as tf

    return [tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=s.name) for s in specs]


def _keras_model(
    model: Any,
    description: str,
    override: list[TensorSpec],
    recorded: dict[int, tuple[Any, Any, Any]] | None = None,
) -> LoadedModel:
    import keras
    import tf2onnx

    if not isinstance(model, keras.Model):
        raise BadInputError(f"{description} is a {type(model).__name__}, not a Keras model")
    if override:
        specs = override
    else:
        try:
            keras_inputs = model.inputs
        except (AttributeError, ValueError):
            keras_inputs = None
        if not keras_inputs:
            raise BadInputError(
                f"{description} has no input signature (a subclassed model that was never "
                "built?); give one with --input-spec NAME=DTYPE[None,...]"
            )
        specs = [TensorSpec(t.name, np.dtype(t.dtype).name, tuple(t.shape)) for t in keras_inputs]

    def call(tensors: dict[str, Any]) -> list[Any]:
        args = [tensors[s.name] for s in specs]
        result = model(args[0] if len(args) == 1 else args, training=False)
        if isinstance(result, dict):
            result = list(result.values())
        if not isinstance(result, list | tuple):
            result = [result]
        return list(result)

    def export(specs: list[TensorSpec], opset: int) -> Any:
        with _grouped_convolutions_without_xla():
            proto, _ = tf2onnx.convert.from_keras(
                model, input_signature=_tf_specs(specs), opset=opset
            )
        return proto

    return LoadedModel(
        inputs=specs,
        call=call,
        export=export,
        description=description,
        variables=_keras_variables(model, recorded or {}),
        keras_model=model,
    )


def _keras_variables(model: Any, recorded: dict[int, tuple[Any, Any, Any]]) -> list[TfVariable]:
    import keras

    batchnorm: dict[int, dict[str, float]] = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            config = {"epsilon": float(layer.epsilon), "momentum": float(layer.momentum)}
            for v in layer.weights:
                batchnorm[id(v)] = config
    owners = _variable_owners(model)
    found = []
    for v in model.weights:
        _, layer, initializer = recorded.get(id(v), (None, owners.get(id(v)), None))
        info = {
            "layer": v.path.rpartition("/")[0],
            "layer_class": type(layer).__name__ if layer is not None else None,
            "layer_kind": _layer_kind(layer),
            "initializer": _describe_initializer(initializer, layer, v)
            if id(v) in recorded
            else None,
        }
        found.append(TfVariable(v.path, bool(v.trainable), v.value, batchnorm.get(id(v)), info))
    return found


# ------------------------------------------------ initializers and layer kinds (Keras)


@contextmanager
def _recording_initializers() -> Iterator[dict[int, tuple[Any, Any, Any]]]:
    """While the model is built, record every ``Layer.add_weight``: variable id →
    (variable, layer, the initializer argument).  Keras variables forget their initializer
    once initialised, and custom layers (``add_weight(initializer=...)``) have no
    ``*_initializer`` attribute, so this is the one place every initializer is seen."""
    try:
        from keras.src.layers.layer import Layer
    except ImportError:  # another Keras layout: no initializers recorded
        yield {}
        return
    recorded: dict[int, tuple[Any, Any, Any]] = {}
    original = Layer.add_weight

    def add_weight(self: Any, *args: Any, **kwargs: Any) -> Any:
        variable = original(self, *args, **kwargs)
        initializer = kwargs.get("initializer", args[1] if len(args) > 1 else None)
        recorded[id(variable)] = (variable, self, initializer)  # keeps the id valid
        return variable

    Layer.add_weight = add_weight
    try:
        yield recorded
    finally:
        Layer.add_weight = original


def _json_safe(value: Any) -> Any:
    return json.loads(
        json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    )


def _initializer_json(initializer: Any) -> dict[str, Any] | None:
    import keras

    if isinstance(initializer, str | dict):
        try:
            initializer = keras.initializers.get(initializer)
        except (ValueError, TypeError):
            return None
    if not isinstance(initializer, keras.initializers.Initializer):
        return None
    config = dict(initializer.get_config())
    if isinstance(initializer, keras.initializers.VarianceScaling):
        # Subclasses (HeNormal, GlorotUniform, ...) leave these out of their config.
        config.update(
            scale=float(initializer.scale),
            mode=str(initializer.mode),
            distribution=str(initializer.distribution),
        )
    return {"class_name": type(initializer).__name__, "config": _json_safe(config)}


def _describe_initializer(initializer: Any, layer: Any, variable: Any) -> dict[str, Any]:
    """``{"class_name", "config"}`` of the initializer a variable was created with (Keras's
    default when none was given); LSTM's ``unit_forget_bias`` closure becomes its
    ``bias_initializer`` plus ``"unit_forget_bias": true``; anything else that is not a
    ``keras.initializers.Initializer`` is ``{"class_name": <name>, "unsupported": why}``."""
    if initializer is None:  # Layer.add_weight's own default
        initializer = "glorot_uniform" if "float" in str(variable.dtype) else "zeros"
    described = _initializer_json(initializer)
    if described is not None:
        return described
    if variable.name == "bias" and getattr(layer, "unit_forget_bias", False):
        base = _initializer_json(getattr(layer, "bias_initializer", None))
        if base is not None:
            return {**base, "unit_forget_bias": True}
    return {
        "class_name": getattr(initializer, "__name__", type(initializer).__name__),
        "config": {},
        "unsupported": "a plain function, not a keras.initializers.Initializer",
    }


def _variable_owners(model: Any) -> dict[int, Any]:
    owners: dict[int, Any] = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for v in [*layer._trainable_variables, *layer._non_trainable_variables]:
            owners.setdefault(id(v), layer)
    return owners


_CONV_CLASSES = (
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
    "DepthwiseConv1D",
    "DepthwiseConv2D",
    "SeparableConv1D",
    "SeparableConv2D",
)


def _layer_kind(layer: Any) -> str | None:
    """``conv``, ``dense`` or None (see :mod:`pipeline.scaling`), by ``isinstance``."""
    if layer is None:
        return None
    import keras

    conv = tuple(
        getattr(keras.layers, name) for name in _CONV_CLASSES if hasattr(keras.layers, name)
    )
    if isinstance(layer, conv):
        return CONV
    if isinstance(layer, keras.layers.Dense):
        return DENSE
    return None


# ----------------------------------------------------------------------- --scale


def _scalable_layers(model: Any) -> list[tuple[str, Any, str, list[Any]]]:
    """(layer path, layer, kind, its own float variables) of every Conv/Dense layer."""
    found, seen = [], set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        kind = _layer_kind(layer)
        if kind is None or id(layer) in seen:
            continue
        seen.add(id(layer))
        own = [
            v
            for v in [*layer._trainable_variables, *layer._non_trainable_variables]
            if "float" in str(v.dtype)
        ]
        if own:
            found.append((own[0].path.rpartition("/")[0], layer, kind, own))
    return found


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
    layers = _scalable_layers(model)
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
                    f"TensorFlow could not run the model on the calibration data: {_one_line(err)}"
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
            "variables": [v.path for v in own],
        }
        if record["strategy"] == ACTIVATION:
            entry["mean_abs_activation"] = None if mean is None or not np.isfinite(mean) else mean
        if note:
            entry["note"] = note
        scaled.append(entry)
    record["layers"] = scaled
    return record


def _saved_model(path: str, override: list[TensorSpec]) -> LoadedModel:
    import tensorflow as tf
    import tf2onnx

    try:
        loaded = tf.saved_model.load(path)
    except Exception as err:
        raise BadInputError(f"cannot load SavedModel {path}: {_one_line(err)}") from None
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

    def export(specs: list[TensorSpec], opset: int) -> Any:
        tf_specs = _tf_specs(specs)

        # Signatures take keyword arguments; tf2onnx wants positional ones.  The outputs
        # get the signature's names through Identity ops that `rename_outputs` resolves.
        @tf.function(input_signature=tf_specs)
        def positional(*args: Any) -> list[Any]:
            signature = loaded.signatures["serving_default"]
            result = signature(**{s.name: a for s, a in zip(specs, args, strict=True)})
            return [result[name] for name in output_names]

        proto, _ = tf2onnx.convert.from_function(positional, input_signature=tf_specs, opset=opset)
        return proto

    return LoadedModel(
        inputs=specs,
        call=call,
        export=export,
        output_names=output_names,
        description=f"SavedModel {path}",
        variables=[
            TfVariable(v.name.removesuffix(":0"), bool(v.trainable), v)
            for v in getattr(loaded, "variables", [])
        ],
    )


def load_model(request: dict[str, Any]) -> LoadedModel:
    """Load the request's model and read its signature, then apply the request's ``scale``
    (``--scale``; see :func:`apply_scaling`), so that every later step (export, reference
    run, gradients) sees the scaled model.  Raises :class:`BadInputError`."""
    with _recording_initializers() as recorded:
        loaded = _load_model(request, recorded)
    loaded.scaling = apply_scaling(loaded, request.get("scale"))
    return loaded


def _load_model(request: dict[str, Any], recorded: dict[int, tuple[Any, Any, Any]]) -> LoadedModel:
    import keras

    source = Source(
        SourceKind(request["source"]["kind"]),
        request["source"]["location"],
        request["source"].get("function"),
    )
    override = [TensorSpec.from_json(d) for d in request.get("input_specs", [])]
    custom_objects: dict[str, Any] = {}
    if request.get("custom_objects"):
        try:
            module = _import_user_module(request["custom_objects"])
        except BadInputError:
            raise
        except Exception as err:
            raise BadInputError(
                f"--custom-objects {request['custom_objects']} failed to import: {_one_line(err)}"
            ) from None
        custom_objects = dict(getattr(module, "CUSTOM_OBJECTS", {}))

    if source.kind is SourceKind.SAVED_MODEL:
        return _saved_model(source.location, override)
    if source.kind in (SourceKind.KERAS, SourceKind.H5):
        try:
            model = keras.models.load_model(
                source.location,
                compile=False,
                safe_mode=request.get("safe_mode", True),
                custom_objects=custom_objects or None,
            )
        except Exception as err:
            hint = ""
            if "safe_mode" in str(err):
                hint = " (the file holds code; pass --unsafe only if you trust it)"
            raise BadInputError(f"cannot load {source.location}: {_one_line(err)}{hint}") from None
        return _keras_model(model, source.location, override, recorded)
    try:
        module = _import_user_module(source.location)
    except BadInputError:
        raise
    except Exception as err:
        raise BadInputError(f"cannot import {source.location}: {_one_line(err)}") from None
    factory = getattr(module, source.function or "", None)
    if not callable(factory):
        raise BadInputError(f"{source.location} has no function {source.function!r}")
    try:
        model = factory()
    except Exception as err:
        raise BadInputError(f"factory {source} raised {_one_line(err)}") from None
    return _keras_model(model, str(source), override, recorded)


def rename_outputs(proto: Any, names: Sequence[str]) -> None:
    """Give the ONNX graph outputs the TF signature's output names, in place."""
    graph = proto.graph
    if len(names) != len(graph.output):
        return
    renames = {o.name: new for o, new in zip(graph.output, names, strict=True) if o.name != new}
    if not renames:
        return
    for node in graph.node:
        for i, name in enumerate(node.output):
            node.output[i] = renames.get(name, name)
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
    for value in graph.output:
        value.name = renames.get(value.name, value.name)


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = round(time.perf_counter() - start, 3)


VARIABLES_NPZ = "tf_variables.npz"
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


def _write_variables_and_gradients(
    loaded: LoadedModel,
    arrays: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    seed: int,
    path: Path,
) -> list[dict[str, Any]]:
    """Write every variable's value and every trainable one's gradient of the fixed loss to
    ``path`` (keys ``value/<i>``, ``grad/<i>``, ``loss_weight/<output>``); return the
    variables' metadata in the same order."""
    import tensorflow as tf

    weights = loss_weights(outputs, seed)
    trainable = [v for v in loaded.variables if v.trainable]
    with tf.GradientTape() as tape:
        results = loaded.call({k: tf.constant(v) for k, v in arrays.items()})
        loss = tf.add_n(
            [
                tf.reduce_sum(tf.cast(r, tf.float64) * tf.constant(weights[name], tf.float64))
                for name, r in zip(outputs, results, strict=True)
                if name in weights
            ]
            or [tf.constant(0.0, tf.float64)]
        )
    grads = dict(
        zip(
            (id(v) for v in trainable),
            tape.gradient(loss, [v.variable for v in trainable]),
            strict=True,
        )
    )
    npz: dict[str, np.ndarray] = {f"loss_weight/{k}": w for k, w in weights.items()}
    meta = []
    for i, v in enumerate(loaded.variables):
        value = np.asarray(v.variable)
        npz[f"value/{i}"] = value
        grad = grads.get(id(v))
        if grad is not None:
            npz[f"grad/{i}"] = np.asarray(tf.convert_to_tensor(grad))
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
    write_npz(path, npz)
    return meta


def _model_names(model: Any) -> dict[str, Any]:
    """The Keras model's name and its layers (nested ones too) as ``{"name", "class"}``, for
    the generated code's class and variable names; empty for a SavedModel."""
    if model is None:
        return {"model_name": None, "layers": []}
    return {
        "model_name": model.name,
        "layers": [
            {"name": layer.name, "class": type(layer).__name__}
            for layer in model._flatten_layers(include_self=False, recursive=True)
        ],
    }


def handle(request: dict[str, Any]) -> dict[str, Any]:
    """Do the request's work and return the JSON-ready result (see the module docstring)."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    work_dir = Path(request["work_dir"])
    timings: dict[str, float] = {}
    with _timed(timings, "load"):
        loaded = load_model(request)
    specs = loaded.inputs
    ranges = {k: tuple(v) for k, v in request.get("input_ranges", {}).items()}
    check_range_names(ranges, specs)
    if request.get("inputs_npz"):
        arrays = load_inputs(Path(request["inputs_npz"]), specs)
    else:
        arrays = draw_inputs(specs, batch=request["batch"], seed=request["seed"], ranges=ranges)
    write_npz(work_dir / "inputs.npz", arrays)

    with _timed(timings, "export"):
        try:
            proto = loaded.export(specs, request["opset"])
        except Exception as err:
            raise OnnxExportError(f"tf2onnx could not export the model: {_one_line(err)}") from None
        if loaded.output_names:
            rename_outputs(proto, loaded.output_names)
        onnx.save(proto, work_dir / "model.raw.onnx")
    output_names = [o.name for o in proto.graph.output]

    with _timed(timings, "reference"):
        try:
            outputs = loaded.run(arrays)
        except Exception as err:
            raise BadInputError(
                f"TensorFlow could not run the model on the inputs: {_one_line(err)}"
            ) from None
    if len(outputs) != len(output_names):
        raise OnnxExportError(
            f"the TF model returned {len(outputs)} outputs but the ONNX graph has "
            f"{len(output_names)}"
        )
    write_npz(work_dir / "tf_outputs.npz", dict(zip(output_names, outputs, strict=True)))
    with _timed(timings, "gradients"):
        variables = _write_variables_and_gradients(
            loaded,
            arrays,
            dict(zip(output_names, outputs, strict=True)),
            request["seed"],
            work_dir / VARIABLES_NPZ,
        )
    return {
        "inputs": [s.to_json() for s in specs],
        "outputs": output_names,
        **_model_names(loaded.keras_model),
        "timings": timings,
        "variables": variables,
        "scaling": loaded.scaling,
        "versions": {
            "tensorflow": tf.__version__,
            "keras": __import__("keras").__version__,
            "tf2onnx": tf2onnx.__version__,
        },
    }


def serve(handle: Callable[[dict[str, Any]], dict[str, Any]], argv: Sequence[str] | None) -> int:
    """Run a worker: read the JSON request named in ``argv``, call ``handle`` on it, write its
    answer (or the error as ``{"ok": false, "kind", "message"}``) to the request's ``result``
    path and return the exit code (0, or 3 for a user error, 4 for a crash)."""
    args = list(sys.argv[1:] if argv is None else argv)
    request = json.loads(Path(args[0]).read_text())
    sys.path.insert(0, request.get("cwd", os.getcwd()))
    result_path = Path(request["result"])
    try:
        answer: dict[str, Any] = {"ok": True, **handle(request)}
        code = 0
    except Tf2TorchError as err:
        answer = {"ok": False, "kind": err.kind, "message": str(err)}
        code = EXIT_USER_ERROR
    except Exception as err:
        traceback.print_exc()
        answer = {"ok": False, "kind": "worker_crash", "message": _one_line(err)}
        code = EXIT_CRASH
    result_path.write_text(json.dumps(answer, indent=2))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m pipeline.tf_worker REQUEST.json``."""
    return serve(handle, argv)


if __name__ == "__main__":
    sys.exit(main())
