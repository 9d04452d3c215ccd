"""A directory that holds a large graph's weights while the graph is worked on.

The fixup passes, the fingerprinted import and the comparisons copy, shape-infer, check and
run a graph many times.  With its weights inside, each of those is a copy of every weight
(and past protobuf's 2 GB, shape inference and the checker cannot take the graph at all).
:meth:`WeightStore.offload` moves each large initializer's bytes to the store's data file
and leaves in the graph an ONNX external-data reference with that file's *absolute* path:
the graph becomes a skeleton of a few megabytes.  Then

- a copy, shape inference and ``onnx_ir`` round trips hold no weights (``onnx_ir`` reads a
  stored tensor, memory-mapped, where a pass asks for its values);
- our own code reads one with :func:`pipeline.core.onnx_io.array`, and onnx2torch through
  the same function (``OnnxTensor.to_numpy``, replaced in :mod:`pipeline.to_torch.importer`);
- ONNX Runtime and the checker accept only relative locations, so they get the data file
  hard-linked beside the graph written for them, in a scratch directory inside the store
  (:func:`pipeline.core.onnx_io.with_external_weights`);
- :func:`pipeline.core.onnx_io.save` writes the bytes back into the run's artifact.

The data file only grows (a tensor a pass replaces keeps its old bytes): it is disk, not
memory, and the store is deleted with everything in it when the conversion ends.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto

from pipeline.core import onnx_io
from pipeline.core.run_dir import LazyNpz, write_npz

if TYPE_CHECKING:  # the TF worker keeps its weights in a store too, and never imports torch
    import torch

DATA_NAME = "weights.data"
STORE_ENV = "TF2TORCH_STORE_BYTES"
"""Overrides :data:`pipeline.core.onnx_io.LARGE_WEIGHTS_BYTES` as the weights from which a
conversion uses a store (tests run the store's path on small models with it)."""


def store_threshold() -> int:
    """Weights (bytes) from which a conversion keeps its graphs' weights in a store."""
    value = os.environ.get(STORE_ENV)
    return int(value) if value else onnx_io.LARGE_WEIGHTS_BYTES


class WeightStore:
    """Large initializers' bytes in one append-only file, ``directory/weights.data``."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory.resolve()
        self.data = self.directory / DATA_NAME
        self.data.touch()

    @classmethod
    def holding(cls, model: onnx.ModelProto) -> WeightStore | None:
        """The store that holds ``model``'s stored weights (a graph derived from a stored
        one keeps its own weights there too), or None when it has none."""
        parent = onnx_io.scratch_parent(model)
        return None if parent is None else cls(parent)

    def offload(
        self, tensors: Iterable[TensorProto], min_bytes: int = onnx_io.SKELETON_MIN_BYTES
    ) -> int:
        """Move each of ``tensors`` (a graph's initializers, or the one just made) into the
        store, in place, unless it is there already: those of at least ``min_bytes`` whose
        data is in the graph, and stored ones whose file is another (a raw graph's external
        data: ONNX Runtime and the checker must find every file beside the graph written for
        them); return the bytes moved."""
        return self.offload_tensors(
            t
            for t in tensors
            if (t.data_location != TensorProto.EXTERNAL and onnx_io.tensor_bytes(t) >= min_bytes)
            or onnx_io.stored_file(t) not in (None, self.data)
        )

    def offload_tensors(self, tensors: Iterable[TensorProto]) -> int:
        """Move each tensor's data into the store, in place (each becomes a reference to its
        bytes in the data file); return the bytes moved.

        Offload a tensor made for a graph *before* it joins the graph: protobuf keeps bytes
        set inside a message tree in that tree's arena, and clearing them there frees
        nothing until the whole graph goes (one more copy of the model, measured)."""
        moved = 0
        with open(self.data, "ab") as data:
            offset = data.tell()
            for tensor in tensors:
                raw = onnx_io.raw_bytes(tensor)
                padding = -offset % onnx_io.ALIGNMENT  # aligned: ONNX Runtime may map it
                data.write(b"\0" * padding)
                offset += padding
                data.write(raw)
                onnx_io.make_external(tensor, str(self.data), offset, len(raw))
                offset += len(raw)
                moved += len(raw)
                del raw
        return moved

    @contextmanager
    def parked(self, module: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """``module`` with its parameters' and buffers' data written to the store and their
        memory freed for the duration of the block, then read back bit for bit into the
        same tensor objects (for a step that needs memory for the graph's float64 copies,
        not the module).  Tensors that shared storage come back with storages of their own.
        """
        import torch

        path = self.directory / f"parked-{os.getpid()}-{id(module)}.bin"
        spans: list[tuple[torch.Tensor, int, int, torch.dtype, torch.Size, torch.device]] = []
        seen: set[int] = set()
        try:
            with open(path, "wb") as handle, torch.no_grad():
                for tensor in itertools.chain(module.parameters(), module.buffers()):
                    if id(tensor) in seen:
                        continue
                    seen.add(id(tensor))
                    data = tensor.detach().to("cpu").contiguous()
                    raw = data.reshape(-1).view(torch.uint8).numpy()
                    spans.append(
                        (tensor, handle.tell(), raw.size, data.dtype, data.shape, tensor.device)
                    )
                    raw.tofile(handle)
                    del data, raw
                    tensor.data = torch.empty(0, dtype=tensor.dtype, device=tensor.device)
            yield module
        finally:
            with torch.no_grad():
                for tensor, offset, size, dtype, shape, device in spans:
                    raw = np.fromfile(path, dtype=np.uint8, count=size, offset=offset)
                    back = torch.from_numpy(raw).view(dtype).reshape(shape)
                    tensor.data = back.to(device)
            path.unlink(missing_ok=True)

    def spill(self, arrays: Mapping[str, np.ndarray], name: str) -> LazyNpz:
        """``arrays`` written to ``name`` in the store and read back one at a time when asked
        for (what ``arrays`` held is the caller's to drop)."""
        path = self.directory / name
        write_npz(path, arrays.items())
        return LazyNpz(path)

    def close(self) -> None:
        """Delete the store and everything in it."""
        shutil.rmtree(self.directory, ignore_errors=True)


@contextmanager
def weight_store(parent: Path, weight_bytes: int) -> Iterator[WeightStore | None]:
    """A store in a new directory under ``parent`` (on its file system, with the run's
    artifacts) for a model of ``weight_bytes`` past :func:`store_threshold`, deleted on exit;
    None for a smaller model (its graphs keep their weights in memory, which is faster)."""
    if weight_bytes < store_threshold():
        yield None
        return
    parent.mkdir(parents=True, exist_ok=True)
    store = WeightStore(Path(tempfile.mkdtemp(prefix=".tf2torch-weights-", dir=parent)))
    try:
        yield store
    finally:
        store.close()
