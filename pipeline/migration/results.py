"""What a migration produces: one result per model, the summary, and resumable runs."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.migration.manifest import PAIRS, REPORT_NAME, STATE_JSON, VERDICTS, ModelSpec

# --------------------------------------------------------------------------- results


@dataclass
class ModelResult:
    """How one model of the migration ended."""

    name: str
    source: str
    verdict: str
    """``pass``, ``fail`` (converted, but a pair, gradient or parameter check disagrees),
    ``error`` (could not be converted) or ``timeout`` (killed after the timeout)."""
    run_dir: Path
    """``ROOT/<name>``; it holds this model's run when the verdict is pass or fail."""
    seconds: float
    error_kind: str | None = None
    """The :class:`~pipeline.core.errors.Tf2TorchError` kind, ``timeout``, ``worker_crash``
    (the conversion process died) or ``internal`` (a bug: see the log)."""
    error_message: str | None = None
    worst: dict[str, float | None] = field(default_factory=dict)
    """Per pair, the largest ``max_abs`` over the outputs (None: no value, e.g. NaN)."""
    resumed: bool = False
    """Skipped by ``resume``: an unchanged, complete run was already there."""
    log: Path | None = None
    host: str | None = None
    """The machine the conversion ran on (a Ray node's hostname; None when resumed)."""
    attempts: int = 1
    """How many times it was started: more than 1 when Ray retried it after a lost worker."""

    def __bool__(self) -> bool:
        return self.verdict == "pass"

    def to_json(self) -> dict[str, Any]:
        """The model's entry in ``summary.json``."""
        return {
            "name": self.name,
            "source": self.source,
            "verdict": self.verdict,
            "error": None
            if self.error_kind is None
            else {"kind": self.error_kind, "message": self.error_message},
            "run_dir": str(self.run_dir),
            "seconds": round(self.seconds, 2),
            "worst": self.worst,
            "resumed": self.resumed,
            "log": str(self.log) if self.log else None,
            "host": self.host,
            "attempts": self.attempts,
        }


@dataclass
class MigrationResult:
    """What :func:`migrate` returns.  Truth-tests as "every model passed"."""

    models: list[ModelResult]
    root: Path
    summary_path: Path
    seconds: float

    def __bool__(self) -> bool:
        return all(self.models)

    @property
    def exit_code(self) -> int:
        """The CLI's exit code: 0 every model passed, 1 otherwise."""
        return 0 if self else 1

    def counts(self) -> dict[str, int]:
        """How many models ended with each verdict."""
        return {v: sum(m.verdict == v for m in self.models) for v in VERDICTS}


@dataclass(frozen=True)
class MigrationEvent:
    """Progress of one model, for displays: ``stage`` is ``queued``, one of :data:`STAGES`,
    ``resumed`` or ``done`` (then ``result`` is set)."""

    name: str
    stage: str
    result: ModelResult | None = None


EventCallback = Callable[[MigrationEvent], None]


def worst_per_pair(report: Mapping[str, Any]) -> dict[str, float | None]:
    """The largest ``max_abs`` per pair over a report's comparisons."""
    worst: dict[str, float | None] = {}
    for pair in PAIRS:
        values = [c.get("max_abs") for c in report.get("comparisons", []) if c["pair"] == pair]
        worst[pair] = None if not values or None in values else max(values)
    return worst


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    from pipeline.core.run_dir import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def _resumable(spec: ModelSpec, run_dir: Path, expected: str) -> ModelResult | None:
    report = _read_json(run_dir / REPORT_NAME)
    state = _read_json(run_dir / STATE_JSON)
    if not report or not state or report.get("verdict") not in ("pass", "fail"):
        return None
    if state.get("fingerprint") != expected:
        return None
    return ModelResult(
        name=spec.name,
        source=spec.source,
        verdict=report["verdict"],
        run_dir=run_dir,
        seconds=float(state.get("seconds", 0.0)),
        worst=worst_per_pair(report),
        resumed=True,
    )
