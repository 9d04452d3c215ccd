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
- A tensor may be *stored*: external data at an absolute location, the form
  :class:`pipeline.core.weight_store.WeightStore` leaves in a graph.  :func:`array` and
  :func:`raw_bytes` read it, :func:`save` writes its bytes into the artifact, and
  :func:`with_external_weights` links its file beside the graph it writes (ONNX's readers
  accept only relative locations).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import Message
from onnx import TensorProto, helper, numpy_helper

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
ALIGNMENT = 4096
"""Offset alignment of each tensor in a data file we write (ONNX Runtime may map it)."""


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


def _external(tensor: TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in tensor.external_data}


def stored_file(tensor: TensorProto) -> Path | None:
    """The data file of a stored tensor (external data at an absolute location), else None."""
    if tensor.data_location != TensorProto.EXTERNAL:
        return None
    location = _external(tensor).get("location", "")
    return Path(location) if os.path.isabs(location) else None


def make_external(tensor: TensorProto, location: str, offset: int, length: int) -> None:
    """Make ``tensor`` (in place) a reference to ``length`` bytes at ``offset`` of
    ``location``, keeping its name, type and dims and dropping its data."""
    ref = _data_free(tensor)
    ref.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = ref.external_data.add()
        entry.key, entry.value = key, value
    tensor.CopyFrom(ref)


def _stored_span(tensor: TensorProto) -> tuple[Path, int, int]:
    info = _external(tensor)
    return Path(info["location"]), int(info.get("offset", 0)), int(info["length"])


def raw_bytes(tensor: TensorProto) -> bytes:
    """``tensor``'s data as raw little-endian bytes (read from its file when stored)."""
    if stored_file(tensor) is not None:
        path, offset, length = _stored_span(tensor)
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(length)
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    return numpy_helper.to_array(tensor).tobytes()


def array(tensor: TensorProto) -> np.ndarray:
    """``tensor``'s value as a writable array, read from its file when stored
    (``numpy_helper.to_array`` refuses an absolute location)."""
    if stored_file(tensor) is None:
        return np.array(numpy_helper.to_array(tensor))
    path, offset, length = _stored_span(tensor)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    values = np.fromfile(path, dtype=dtype, count=length // dtype.itemsize, offset=offset)
    return values.reshape(tuple(tensor.dims))


class InitializerArrays(Mapping[str, np.ndarray]):
    """A graph's initializers by name, each read (with :func:`array`) when first asked for:
    a pass that looks at a few of them never holds all of them."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self._tensors = {t.name: t for t in graph.initializer}
        self._read: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._read:
            self._read[name] = array(self._tensors[name])
        return self._read[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


def reads_from_file(model: onnx.ModelProto, large: int = LARGE_WEIGHTS_BYTES) -> bool:
    """Whether ONNX Runtime and the checker take ``model`` as a file with external data
    (:func:`readable_file`) rather than as serialized bytes: from ``large`` bytes of
    weights, or with stored tensors (bytes cannot hold their references)."""
    return weight_bytes(model) >= large or scratch_parent(model) is not None


def scratch_parent(model: onnx.ModelProto) -> Path | None:
    """The directory of ``model``'s stored tensors' data (its store), where a graph written
    for a reader can name that data by a relative location; None when it has none."""
    for tensor in model.graph.initializer:
        path = stored_file(tensor)
        if path is not None:
            return path.parent
    return None


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
    sizes = [_serialized_size(t) for t in model.graph.initializer]
    graph_size = len(graph_bytes) + sum(
        len(_length_delimited(_INITIALIZER_FIELD, size)) + size for size in sizes
    )
    with open(path, "wb") as handle:
        handle.write(head.SerializeToString())
        handle.write(_length_delimited(_GRAPH_FIELD, graph_size))
        handle.write(graph_bytes)
        for tensor, size in zip(model.graph.initializer, sizes, strict=True):
            handle.write(_length_delimited(_INITIALIZER_FIELD, size))
            if stored_file(tensor) is None:
                handle.write(tensor.SerializeToString())  # one tensor's bytes at a time
                continue
            # stored: everything but its data, then its raw-data field copied from its file
            handle.write(_data_free(tensor).SerializeToString())
            handle.write(_length_delimited(_RAW_DATA_FIELD, _stored_span(tensor)[2]))
            _copy_span(tensor, handle)


_RAW_DATA_FIELD = TensorProto.DESCRIPTOR.fields_by_name["raw_data"].number


def _data_free(tensor: TensorProto) -> TensorProto:
    """``tensor``'s name, type, dims and doc string, without its data or its location."""
    head = TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims)
    if tensor.HasField("doc_string"):
        head.doc_string = tensor.doc_string
    return head


def _serialized_size(tensor: TensorProto) -> int:
    """Bytes of ``tensor`` serialized; a stored one as its data will be written (raw data)."""
    if stored_file(tensor) is None:
        return int(tensor.ByteSize())
    length = _stored_span(tensor)[2]
    return _data_free(tensor).ByteSize() + len(_length_delimited(_RAW_DATA_FIELD, length)) + length


def _copy_span(tensor: TensorProto, target: object, chunk: int = 64 * 2**20) -> None:
    """Copy a stored tensor's bytes to the open file ``target``, a chunk at a time."""
    path, offset, length = _stored_span(tensor)
    with open(path, "rb") as source:
        source.seek(offset)
        while length > 0:
            block = source.read(min(chunk, length))
            if not block:
                raise OSError(f"{path} ends before tensor {tensor.name!r}'s data")
            target.write(block)  # type: ignore[attr-defined]
            length -= len(block)


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
    _write_external(model, path, min_bytes, max_ir_version, link_stored=True)
    return path


def _write_external(
    model: onnx.ModelProto,
    path: Path,
    min_bytes: int = SKELETON_MIN_BYTES,
    max_ir_version: int | None = None,
    link_stored: bool = False,
    links: dict[Path, str] | None = None,
) -> None:
    """Write ``model`` to ``path`` with its large initializers in ``<path name>.data``.

    The graph is built field by field and each weight written straight from ``model``'s
    tensor to the file, so no second copy of the weights is ever in memory (``onnx.save``
    with external data first copies the whole model), and ``model`` is not changed.  A stored
    tensor's bytes are copied from its file; with ``link_stored`` (a scratch graph for a
    reader, deleted before the store is) its file is hard-linked beside ``path`` instead,
    and the reference made relative to it; ``links`` (stored file -> link name) collects the
    links made, for the caller to delete with the graph."""
    data_name = f"{path.name}.data"
    sk = onnx.ModelProto()
    _copy_fields(model, sk, skip="graph")
    _copy_fields(model.graph, sk.graph, skip="initializer")
    links = {} if links is None else links
    offset = 0
    with open(path.with_name(data_name), "wb") as data:
        for tensor in model.graph.initializer:
            stored = stored_file(tensor)
            if stored is not None and link_stored:
                _, at, length = _stored_span(tensor)
                ref = sk.graph.initializer.add()
                ref.CopyFrom(tensor)
                make_external(ref, _linked(stored, path.parent, links), at, length)
                continue
            if stored is None and (
                tensor_bytes(tensor) < min_bytes or tensor.data_location == TensorProto.EXTERNAL
            ):
                sk.graph.initializer.add().CopyFrom(tensor)
                continue
            padding = -offset % ALIGNMENT  # aligned, so ONNX Runtime may map it in place
            data.write(b"\0" * padding)
            offset += padding
            if stored is not None:
                _, _, length = _stored_span(tensor)
                _copy_span(tensor, data)
            else:
                raw = raw_bytes(tensor)
                length = len(raw)
                data.write(raw)
                del raw
            ref = sk.graph.initializer.add()
            ref.CopyFrom(_data_free(tensor))
            make_external(ref, data_name, offset, length)
            offset += length
    if max_ir_version is not None:
        sk.ir_version = min(sk.ir_version, max_ir_version)
    onnx.save(sk, str(path))


def _linked(stored: Path, directory: Path, links: dict[Path, str]) -> str:
    """The name, relative to ``directory``, of ``stored``: its own name when it is there,
    else a hard link made there (once per file; the checker refuses a hard-linked file, so
    :func:`readable_file` writes beside the store instead)."""
    if stored.parent == directory.resolve():
        return stored.name
    if stored not in links:
        name = f"link-{id(links)}-{len(links)}.data"  # this writer's links only
        try:
            os.link(stored, directory / name)
        except OSError:  # another file system, or no hard links: a copy, still correct
            shutil.copyfile(stored, directory / name)
        links[stored] = name
    return links[stored]


@contextmanager
def readable_file(model: onnx.ModelProto, max_ir_version: int | None = None) -> Iterator[Path]:
    """``model`` written to a file with its large weights as external data, for a reader that
    takes a path (ONNX Runtime, the checker), and deleted on exit.  A model with stored
    tensors is written inside its store, whose data file it then names by a relative
    location (ONNX's readers accept no other); any other into a temporary directory."""
    parent = scratch_parent(model)
    if parent is None:
        with tempfile.TemporaryDirectory(prefix="tf2torch-onnx-") as tmp:
            yield with_external_weights(model, Path(tmp), max_ir_version=max_ir_version)
        return
    fd, name = tempfile.mkstemp(prefix="scratch-", suffix=".onnx", dir=parent)
    os.close(fd)
    path = Path(name)
    links: dict[Path, str] = {}
    try:
        _write_external(model, path, SKELETON_MIN_BYTES, max_ir_version, True, links)
        yield path
    finally:
        path.unlink(missing_ok=True)
        path.with_name(f"{path.name}.data").unlink(missing_ok=True)
        for link in links.values():
            (parent / link).unlink(missing_ok=True)


def load(path: Path) -> onnx.ModelProto:
    """Load the model at ``path`` with any external data of it left where it is, referenced
    at its absolute location (stored; see the module docstring), not read into memory."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL and stored_file(tensor) is None:
            info = _external(tensor)
            location = str((Path(path).parent / info["location"]).resolve())
            make_external(tensor, location, int(info.get("offset", 0)), int(info["length"]))
    return model
