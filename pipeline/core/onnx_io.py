"""ONNX models at any size: saving past protobuf's 2 GB limit, copying, checking, and a
weightless *skeleton* of a graph for ONNX Runtime.

A protobuf message cannot be serialized past 2 GB, so an LLM's graph can be neither saved
in one file, nor handed to ONNX Runtime or the checker as bytes, nor copied through
``SerializeToString``.  Here:

- :func:`save` writes a model whose weights pass :func:`external_data_threshold` with ONNX
  external data (``<name>.data`` beside it); ``onnx.load`` reads it back as is.
- :func:`copy` copies a model without serializing it.
- :func:`with_external_weights` writes a graph with its large weights as external data
  without a second copy in memory: what ONNX Runtime and the checker read a large model from
  (:class:`pipeline.core.ort_runner.OrtRunner`), instead of serialized bytes (one more copy
  of the weights, and none at all past 2 GB).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import Message
from onnx import TensorProto, numpy_helper

PROTOBUF_LIMIT = 2**31
EXTERNAL_DATA_BYTES = PROTOBUF_LIMIT - 2**27
"""Initializer bytes from which :func:`save` writes external data: 2 GB less a margin for
the graph itself (128 MB)."""
THRESHOLD_ENV = "TF2TORCH_EXTERNAL_DATA_BYTES"
SKELETON_MIN_BYTES = 1024
"""Initializers smaller than this stay inside the graph written by
:func:`with_external_weights` (shapes, axes, scalars: what shape inference reads)."""
WEIGHTS_DATA = "model.onnx.data"
_ALIGNMENT = 4096


def external_data_threshold() -> int:
    """Initializer bytes from which a model is saved with external data:
    :data:`EXTERNAL_DATA_BYTES`, or ``$TF2TORCH_EXTERNAL_DATA_BYTES`` (tests use it to run
    the external-data path on small models)."""
    value = os.environ.get(THRESHOLD_ENV)
    return int(value) if value else EXTERNAL_DATA_BYTES


def tensor_bytes(tensor: TensorProto) -> int:
    """Bytes of one tensor's data, wherever the proto keeps it."""
    if tensor.data_location == TensorProto.EXTERNAL:
        length = {e.key: e.value for e in tensor.external_data}.get("length")
        return int(length) if length else 0
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    count = int(np.prod(tensor.dims, dtype=np.int64)) if tensor.dims else 1
    return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the main graph's initializers."""
    return sum(tensor_bytes(t) for t in model.graph.initializer)


def needs_external_data(model: onnx.ModelProto) -> bool:
    """Whether :func:`save` writes ``model`` with external data."""
    return weight_bytes(model) >= external_data_threshold()


def save(model: onnx.ModelProto, path: Path, *, keep: bool = True) -> None:
    """Save ``model`` to ``path``: one file, or with its weights in ``<path name>.data``
    beside it once they pass :func:`external_data_threshold`.  Writing external data moves
    each weight out of ``model``; with ``keep`` they are read back afterwards, so ``model``
    is whole again (without, the caller promises not to read its weights any more)."""
    path = Path(path)
    data = path.with_name(f"{path.name}.data")
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    if not needs_external_data(model):
        onnx.save(model, str(path))
        return
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data.name,
        size_threshold=SKELETON_MIN_BYTES,
    )
    if keep:
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))


def copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy of ``model`` (never through bytes: a graph past 2 GB has none)."""
    copied = onnx.ModelProto()
    copied.CopyFrom(model)
    return copied


def _copy_fields(source: Message, target: Message, skip: str) -> None:
    """Copy every set field of ``source`` but ``skip`` into ``target``."""
    for field, value in source.ListFields():
        if field.name == skip:
            continue
        if field.is_repeated:
            getattr(target, field.name).extend(value)
        elif field.message_type is not None:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)


def with_external_weights(
    model: onnx.ModelProto,
    directory: Path,
    min_bytes: int = SKELETON_MIN_BYTES,
    max_ir_version: int | None = None,
) -> Path:
    """Write ``model`` to ``directory/model.onnx`` with each main-graph initializer of at
    least ``min_bytes`` in the external data file beside it, and return that path (what
    ONNX Runtime and the checker take for a graph that bytes cannot hold).

    The graph is built field by field and each weight written straight from ``model``'s
    tensor to the file, so no second copy of the weights is ever in memory (``onnx.save``
    with external data would first copy the whole model).  ``max_ir_version`` clamps the
    written IR version (for a reader that knows no newer one)."""
    sk = onnx.ModelProto()
    _copy_fields(model, sk, skip="graph")
    _copy_fields(model.graph, sk.graph, skip="initializer")
    directory.mkdir(parents=True, exist_ok=True)
    offset = 0
    with open(directory / WEIGHTS_DATA, "wb") as data:
        for tensor in model.graph.initializer:
            if tensor_bytes(tensor) < min_bytes or tensor.data_location == TensorProto.EXTERNAL:
                sk.graph.initializer.add().CopyFrom(tensor)
                continue
            raw = (
                tensor.raw_data
                if tensor.HasField("raw_data")
                else numpy_helper.to_array(tensor).tobytes()
            )
            padding = -offset % _ALIGNMENT  # aligned, so ONNX Runtime may map it in place
            data.write(b"\0" * padding)
            offset += padding
            data.write(raw)
            ref = sk.graph.initializer.add()
            ref.name = tensor.name
            ref.data_type = tensor.data_type
            ref.dims.extend(tensor.dims)
            ref.data_location = TensorProto.EXTERNAL
            for key, value in (
                ("location", WEIGHTS_DATA),
                ("offset", str(offset)),
                ("length", str(len(raw))),
            ):
                entry = ref.external_data.add()
                entry.key, entry.value = key, value
            offset += len(raw)
            del raw
    if max_ir_version is not None:
        sk.ir_version = min(sk.ir_version, max_ir_version)
    path = directory / "model.onnx"
    onnx.save(sk, str(path))
    return path
