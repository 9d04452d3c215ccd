"""Drives :mod:`pipeline.diff.tf_worker` (TensorFlow's intermediates) from the diff process.

This process never imports TensorFlow.  The worker streams the tensors to an ``.npz`` that
is read back one tensor at a time (:meth:`TfIntermediates.get`), so TF's intermediates are
never all in this process's memory at once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.run_dir import write_npz
from pipeline.core.signature import TensorSpec
from pipeline.export.client import run_worker
from pipeline.export.sources import Source

WORKER_LOG = "tf_intermediates.log"
STAGE = "diff"


@dataclass
class TfIntermediates:
    """TF's answer: per ONNX tensor name its status and TF name; values on demand."""

    tensors: dict[str, dict[str, Any]]
    ops: dict[str, dict[str, str]]
    npz_path: Path
    versions: dict[str, str] = field(default_factory=dict)
    _npz: Any = None

    def get(self, onnx_name: str) -> np.ndarray | None:
        """TF's value of ``onnx_name`` (read from disk now), or None when TF has none."""
        entry = self.tensors.get(onnx_name)
        if not entry or entry.get("status") != "ok":
            return None
        return self.read(entry["key"])

    def read(self, key: str) -> np.ndarray:
        """The fetched TF value stored under ``key`` (a tensor's or a candidate's)."""
        if self._npz is None:
            self._npz = np.load(self.npz_path, allow_pickle=False)
        return np.asarray(self._npz[key])

    def close(self) -> None:
        """Close the ``.npz``."""
        if self._npz is not None:
            self._npz.close()
            self._npz = None


def tf_intermediates(
    source: Source,
    work_dir: Path,
    *,
    inputs: Mapping[str, np.ndarray],
    onnx_inputs: Sequence[str],
    onnx_outputs: Sequence[str],
    names: Sequence[str],
    node_names: Sequence[str],
    consumers: Mapping[str, Sequence[str]],
    opset: int,
    aliases: Mapping[str, str] | None = None,
    neighbours: Mapping[str, Sequence[str]] | None = None,
    input_specs: Sequence[TensorSpec] = (),
    custom_objects: str | None = None,
    safe_mode: bool = True,
    timeout: float | None = None,
    log_dir: Path | None = None,
    scale: Mapping[str, Any] | None = None,
) -> TfIntermediates:
    """Run the worker; raises the worker's error class or :class:`WorkerError`."""
    write_npz(work_dir / "tf_inputs.npz", dict(inputs))
    request: dict[str, Any] = {
        "source": {
            "kind": source.kind.value,
            "location": source.location,
            "function": source.function,
        },
        "cwd": os.getcwd(),
        "opset": opset,
        "input_specs": [s.to_json() for s in input_specs],
        "custom_objects": custom_objects,
        "safe_mode": safe_mode,
        # the run's --scale record: TF must replay the same scaled model convert compared
        "scale": dict(scale) if scale else None,
        "inputs_npz": str(work_dir / "tf_inputs.npz"),
        "onnx_inputs": list(onnx_inputs),
        "onnx_outputs": list(onnx_outputs),
        "names": list(names),
        "node_names": list(node_names),
        "consumers": {k: list(v) for k, v in consumers.items()},
        "aliases": dict(aliases or {}),
        "neighbours": {k: list(v) for k, v in (neighbours or {}).items()},
        "out_npz": str(work_dir / "tf_intermediates.npz"),
        "result": str(work_dir / "tf_intermediates.result.json"),
    }
    answer = run_worker(
        "pipeline.diff.tf_worker",
        request,
        work_dir / "tf_intermediates.request.json",
        STAGE,
        (log_dir or work_dir) / WORKER_LOG,
        timeout,
    )
    return TfIntermediates(
        tensors=answer["tensors"],
        ops=answer["ops"],
        npz_path=Path(request["out_npz"]),
        versions=answer.get("versions", {}),
    )
