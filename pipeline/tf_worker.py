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


def _keras_model(model: Any, description: str, override: list[TensorSpec]) -> LoadedModel:
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
        variables=_keras_variables(model),
    )


def _keras_variables(model: Any) -> list[TfVariable]:
    import keras

    batchnorm: dict[int, dict[str, float]] = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            config = {"epsilon": float(layer.epsilon), "momentum": float(layer.momentum)}
            for v in layer.weights:
                batchnorm[id(v)] = config
    return [
        TfVariable(v.path, bool(v.trainable), v.value, batchnorm.get(id(v))) for v in model.weights
    ]


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
    """Load the request's model and read its signature.  Raises :class:`BadInputError`."""
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
        return _keras_model(model, source.location, override)
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
    return _keras_model(model, str(source), override)


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
            }
        )
    write_npz(path, npz)
    return meta


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
        "timings": timings,
        "variables": variables,
        "versions": {
            "tensorflow": tf.__version__,
            "keras": __import__("keras").__version__,
            "tf2onnx": tf2onnx.__version__,
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: read the request, answer with the result JSON, return the exit code."""
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


if __name__ == "__main__":
    sys.exit(main())
