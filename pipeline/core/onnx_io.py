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

import onnx
from google.protobuf.message import Message
from onnx import TensorProto, numpy_helper

PROTOBUF_LIMIT = 2**31
EXTERNAL_DATA_BYTES = PROTOBUF_LIMIT - 2**27
"""Initializer bytes from which :func:`save` writes external data: 2 GB less a margin for
the graph itself (128 MB)."""
THRESHOLD_ENV = "TF2TORCH_EXTERNAL_DATA_BYTES"
LARGE_WEIGHTS_BYTES = 64 * 2**20
"""Weights from which ONNX Runtime and the checker read a model from a file written with
:func:`with_external_weights` rather than from its serialized bytes (one more copy of the
weights, and none at all past 2 GB)."""
SKELETON_MIN_BYTES = 1024
"""Initializers smaller than this stay inside the graph written by
:func:`with_external_weights` (shapes, axes, scalars: what shape inference reads)."""
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
    # The message's own size: reading ``raw_data`` would copy the bytes out of protobuf.
    return int(tensor.ByteSize())


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the main graph's initializers."""
    return sum(tensor_bytes(t) for t in model.graph.initializer)


def needs_external_data(model: onnx.ModelProto) -> bool:
    """Whether :func:`save` writes ``model`` with external data."""
    return weight_bytes(model) >= external_data_threshold()


def save(model: onnx.ModelProto, path: Path) -> None:
    """Save ``model`` to ``path``: one file, or with its weights in ``<path name>.data``
    beside it once they pass :func:`external_data_threshold` (written one tensor at a time
    from ``model``, which is left as it was)."""
    path = Path(path)
    data = path.with_name(f"{path.name}.data")
    data.unlink(missing_ok=True)
    if not needs_external_data(model):
        _write_streamed(model, path)
        return
    _write_external(model, path)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(field: int, size: int) -> bytes:
    """A protobuf tag (wire type 2) and length prefix for ``size`` bytes of field ``field``."""
    return _varint(field << 3 | 2) + _varint(size)


_GRAPH_FIELD = onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number
_INITIALIZER_FIELD = onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number


def _write_streamed(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model`` as one protobuf file, one initializer at a time: the graph's other
    fields, then each initializer serialized on its own (``SerializeToString`` of the whole
    model would hold a second copy of every weight).  Protobuf reads fields in any order and
    concatenates a repeated field's occurrences, so the file loads as the same model."""
    head = onnx.ModelProto()
    _copy_fields(model, head, skip="graph")
    graph = onnx.GraphProto()
    _copy_fields(model.graph, graph, skip="initializer")
    graph_bytes = graph.SerializeToString()
    sizes = [t.ByteSize() for t in model.graph.initializer]
    graph_size = len(graph_bytes) + sum(
        len(_length_delimited(_INITIALIZER_FIELD, size)) + size for size in sizes
    )
    with open(path, "wb") as handle:
        handle.write(head.SerializeToString())
        handle.write(_length_delimited(_GRAPH_FIELD, graph_size))
        handle.write(graph_bytes)
        for tensor, size in zip(model.graph.initializer, sizes, strict=True):
            handle.write(_length_delimited(_INITIALIZER_FIELD, size))
            handle.write(tensor.SerializeToString())


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
    ``max_ir_version`` clamps the written IR version (for a reader that knows no newer one)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.onnx"
    _write_external(model, path, min_bytes, max_ir_version)
    return path


def _write_external(
    model: onnx.ModelProto,
    path: Path,
    min_bytes: int = SKELETON_MIN_BYTES,
    max_ir_version: int | None = None,
) -> None:
    """Write ``model`` to ``path`` with its large initializers in ``<path name>.data``.

    The graph is built field by field and each weight written straight from ``model``'s
    tensor to the file, so no second copy of the weights is ever in memory (``onnx.save``
    with external data first copies the whole model), and ``model`` is not changed."""
    data_name = f"{path.name}.data"
    sk = onnx.ModelProto()
    _copy_fields(model, sk, skip="graph")
    _copy_fields(model.graph, sk.graph, skip="initializer")
    offset = 0
    with open(path.with_name(data_name), "wb") as data:
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
                ("location", data_name),
                ("offset", str(offset)),
                ("length", str(len(raw))),
            ):
                entry = ref.external_data.add()
                entry.key, entry.value = key, value
            offset += len(raw)
            del raw
    if max_ir_version is not None:
        sk.ir_version = min(sk.ir_version, max_ir_version)
    onnx.save(sk, str(path))
