"""The export worker's request loop: one JSON request in, one JSON answer out."""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core import onnx_io
from pipeline.core.errors import BadInputError, OnnxExportError, Tf2TorchError
from pipeline.core.memory import release as release_memory
from pipeline.core.run_dir import write_npz
from pipeline.core.weight_store import weight_store
from pipeline.export.inputs import check_range_names, draw_inputs, load_inputs
from pipeline.export.worker.loading import one_line
from pipeline.export.worker.onnx_export import rename_outputs
from pipeline.export.worker.reference import VARIABLES_NPZ, write_variables_and_gradients
from pipeline.export.worker.scaling import load_and_scale

EXIT_USER_ERROR = 3
EXIT_CRASH = 4


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = round(time.perf_counter() - start, 3)


def model_names(model: Any) -> dict[str, Any]:
    """The Keras model's name and its layers (nested ones too) as ``{"name", "class"}``, for
    the generated code's class and attribute names; empty for a SavedModel."""
    if model is None:
        return {"model_name": None, "layers": []}
    return {
        "model_name": model.name,
        "layers": [
            {"name": layer.name, "class": type(layer).__name__}
            for layer in model._flatten_layers(include_self=False, recursive=True)
        ],
    }


def refuse_string_inputs(specs: Sequence[Any]) -> None:
    """Raise :class:`BadInputError` naming every input that takes strings: ONNX Runtime and
    torch have no string tensors, so such a model converts only from its numeric part."""
    strings = [s.name for s in specs if s.dtype in ("string", "str", "bytes", "object")]
    if strings:
        raise BadInputError(
            f"input(s) {', '.join(strings)} take strings, which torch has no tensors for: "
            "convert the model that starts after the string lookup (e.g. after "
            "StringLookup/TextVectorization), and do that lookup outside the model"
        )


def handle(request: dict[str, Any]) -> dict[str, Any]:
    """Do the request's work and return the JSON-ready result (see the module docstring)."""
    import tensorflow as tf
    import tf2onnx

    work_dir = Path(request["work_dir"])
    timings: dict[str, float] = {}
    with _timed(timings, "load"):
        loaded = load_and_scale(request)
    weight_bytes = sum(
        int(np.prod(tuple(v.variable.shape), dtype=np.int64))
        * np.dtype(getattr(v.variable.dtype, "name", v.variable.dtype)).itemsize
        for v in loaded.variables
    )
    release_memory(weight_bytes)  # what building the model left free (its initializers' draws)
    specs = loaded.inputs
    refuse_string_inputs(specs)
    ranges = {k: tuple(v) for k, v in request.get("input_ranges", {}).items()}
    check_range_names(ranges, specs)
    if request.get("inputs_npz"):
        arrays = load_inputs(Path(request["inputs_npz"]), specs)
    else:
        arrays = draw_inputs(specs, batch=request["batch"], seed=request["seed"], ranges=ranges)
    write_npz(work_dir / "inputs.npz", arrays)

    # A large model's initializers wait on disk as they are made, not in the graph beside
    # the model (pipeline.core.weight_store); the store goes once the raw graph is saved.
    with _timed(timings, "export"), weight_store(work_dir, weight_bytes) as store:
        try:
            proto = loaded.export(specs, request["opset"], store=store)
        except Exception as err:
            raise OnnxExportError(f"tf2onnx could not export the model: {one_line(err)}") from None
        if loaded.output_names:
            rename_outputs(proto, loaded.output_names)
        output_names = [o.name for o in proto.graph.output]
        # Written with external data past 2 GB; then the graph goes before the reference
        # run and the gradients make theirs.
        onnx_io.save(proto, work_dir / "model.raw.onnx")
        del proto
    release_memory(weight_bytes)

    with _timed(timings, "reference"):
        try:
            outputs = loaded.run(arrays)
        except Exception as err:
            raise BadInputError(
                f"TensorFlow could not run the model on the inputs: {one_line(err)}"
            ) from None
    if len(outputs) != len(output_names):
        raise OnnxExportError(
            f"the TF model returned {len(outputs)} outputs but the ONNX graph has "
            f"{len(output_names)}"
        )
    write_npz(work_dir / "tf_outputs.npz", dict(zip(output_names, outputs, strict=True)))
    with _timed(timings, "gradients"):
        variables, gradient_error, gradient_noise_unmeasured = write_variables_and_gradients(
            loaded,
            arrays,
            dict(zip(output_names, outputs, strict=True)),
            request["seed"],
            work_dir / VARIABLES_NPZ,
        )
    return {
        "inputs": [s.to_json() for s in specs],
        "outputs": output_names,
        **model_names(loaded.keras_model),
        "timings": timings,
        "variables": variables,
        "gradient_error": gradient_error,
        "gradient_noise_unmeasured": gradient_noise_unmeasured,
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
        # The answer carries one line; the log keeps the whole story (TF's multi-line
        # "in user code" message and the traceback of the error behind this one).
        print(f"tf2torch: {err}", file=sys.stderr)
        if err.__context__ is not None:
            traceback.print_exception(err.__context__)
        answer = {"ok": False, "kind": err.kind, "message": str(err)}
        code = EXIT_USER_ERROR
    except Exception as err:
        traceback.print_exc()
        answer = {"ok": False, "kind": "worker_crash", "message": one_line(err)}
        code = EXIT_CRASH
    result_path.write_text(json.dumps(answer, indent=2))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m pipeline.export.worker REQUEST.json``."""
    return serve(handle, argv)
