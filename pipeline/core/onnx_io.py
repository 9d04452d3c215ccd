"""ONNX models at any size: saving past protobuf's 2 GB limit, copying, checking, and a
weightless *skeleton* of a graph for ONNX Runtime.

A protobuf message cannot be serialized past 2 GB, so an LLM's graph can be neither saved
in one file, nor handed to ONNX Runtime or the checker as bytes, nor copied through
``SerializeToString``.  Here:

- :func:`save` writes a model whose weights pass :func:`external_data_threshold` with ONNX
  external data (``<name>.data`` beside it); ``onnx.load`` reads it back as is.
- :func:`copy` copies a model without serializing it.
- :func:`skeleton` writes the graph with every large initializer as an external reference to
  a sparse file (no bytes on disk) and returns the initializers as numpy arrays, which ONNX
  Runtime then uses in place (:class:`pipeline.core.ort_runner.OrtRunner`): one copy of the
  weights instead of the graph's, the serialized bytes' and the session's.
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
"""Initializers smaller than this stay inside a skeleton (shapes, axes, scalars: what shape
inference and ONNX Runtime's constant folding read)."""
SKELETON_DATA = "weights.sparse"


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


def skeleton(
    model: onnx.ModelProto,
    directory: Path,
    min_bytes: int = SKELETON_MIN_BYTES,
    max_ir_version: int | None = None,
) -> tuple[Path, dict[str, np.ndarray]]:
    """Write ``model`` to ``directory/model.onnx`` with each main-graph initializer of at
    least ``min_bytes`` as an external reference into a sparse file (its size on disk is
    zero); return that path and those initializers' values by name.  ``max_ir_version``
    clamps the skeleton's IR version (for a reader that knows no newer one).

    The graph is built field by field, so the weights are never copied into a second proto:
    the returned arrays are the only copy made."""
    sk = onnx.ModelProto()
    _copy_fields(model, sk, skip="graph")
    _copy_fields(model.graph, sk.graph, skip="initializer")
    graph = model.graph
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in graph.initializer:
        size = tensor_bytes(tensor)
        if size < min_bytes or tensor.data_location == TensorProto.EXTERNAL:
            sk.graph.initializer.add().CopyFrom(tensor)
            continue
        array = np.ascontiguousarray(numpy_helper.to_array(tensor))
        arrays[tensor.name] = array
        ref = sk.graph.initializer.add()
        ref.name = tensor.name
        ref.data_type = tensor.data_type
        ref.dims.extend(tensor.dims)
        ref.data_location = TensorProto.EXTERNAL
        for key, value in (
            ("location", SKELETON_DATA),
            ("offset", str(offset)),
            ("length", str(array.nbytes)),
        ):
            entry = ref.external_data.add()
            entry.key, entry.value = key, value
        offset += array.nbytes
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / SKELETON_DATA, "wb") as handle:
        handle.truncate(offset)  # sparse: validates the references, holds no bytes
    if max_ir_version is not None:
        sk.ir_version = min(sk.ir_version, max_ir_version)
    path = directory / "model.onnx"
    onnx.save(sk, str(path))
    return path, arrays
