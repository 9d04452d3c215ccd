"""Drives :mod:`pipeline.tf_intermediates` (TensorFlow's intermediates) from the diff process.

This process never imports TensorFlow.  The worker streams the tensors to an ``.npz`` that
is read back one tensor at a time (:meth:`TfIntermediates.get`), so TF's intermediates are
never all in this process's memory at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ERROR_KINDS, WorkerError
from pipeline.run_dir import write_npz
from pipeline.signature import TensorSpec
from pipeline.sources import Source
from pipeline.tf_client import _death_reason, _log_tail, _worker_env

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
        if self._npz is None:
            self._npz = np.load(self.npz_path, allow_pickle=False)
        return np.asarray(self._npz[entry["key"]])

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
        "out_npz": str(work_dir / "tf_intermediates.npz"),
        "result": str(work_dir / "tf_intermediates.result.json"),
    }
    request_path = work_dir / "tf_intermediates.request.json"
    request_path.write_text(json.dumps(request))
    result_path = Path(request["result"])
    log_path = (log_dir or work_dir) / WORKER_LOG
    with log_path.open("w") as log:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "pipeline.tf_intermediates", str(request_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_worker_env(),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise WorkerError(STAGE, f"TensorFlow worker timed out after {timeout:g} s") from None
    if not result_path.is_file():
        tail = _log_tail(log_path)
        raise WorkerError(
            STAGE,
            f"TensorFlow worker {_death_reason(proc.returncode)}"
            + (f"; last log line: {tail}" if tail else ""),
        )
    answer = json.loads(result_path.read_text())
    if not answer["ok"]:
        kind, message = answer["kind"], answer["message"]
        if kind == "worker_crash":
            raise WorkerError(STAGE, f"TensorFlow worker failed: {message} (see {log_path})")
        raise ERROR_KINDS.get(kind, ERROR_KINDS["error"])(message)
    return TfIntermediates(
        tensors=answer["tensors"],
        ops=answer["ops"],
        npz_path=Path(request["out_npz"]),
        versions=answer.get("versions", {}),
    )
