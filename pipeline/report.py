"""The run report: ``report.json`` for machines, ``report.md`` and a terminal table for people.

``report.json`` keys (schema ``tf2torch.report/1``; other tools read these names):
``schema``, ``created``, ``source``, ``verdict`` (pass/fail/error), ``error``, ``stages``
(name → ``status``, ``seconds``), ``providers`` (``onnxruntime``: the execution provider
that ran, ``torch_device``), ``comparisons`` (see :class:`pipeline.compare.OutputComparison`),
``passes``, ``inputs``, ``tolerances``, ``artifacts`` (name → file in the run directory),
``versions``, ``scaling`` (``--scale``: ``strategy``, ``spec`` and ``layers``, each with its
``factor``; null without ``--scale``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.compare import OutputComparison
from pipeline.errors import Tf2TorchError
from pipeline.run_dir import REPORT_NAME, atomic_write_bytes

REPORT_SCHEMA = "tf2torch.report/1"
REPORT_JSON = REPORT_NAME
REPORT_MD = "report.md"
STAGES = ("export", "fixup", "import", "compare")


class GradientCheck(Protocol):
    """What :func:`verdict_of` needs of a gradient comparison."""

    passed: bool


def verdict_of(
    comparisons: Iterable[OutputComparison],
    gradients: Iterable[GradientCheck] = (),
    parameter_count: Mapping[str, Any] | None = None,
) -> str:
    """``pass`` when there is at least one output comparison, every comparison and gradient
    check passes, and the parameter count check did not fail; else ``fail``."""
    results = list(comparisons)
    ok = bool(results) and all(results) and all(g.passed for g in gradients)
    if parameter_count is not None:
        # "partial" (variables folded away by tf2onnx) is reported, not failed: the outputs
        # are still equivalent and every variable that has a torch tensor is checked.
        ok = ok and parameter_count["status"] != "fail"
    return "pass" if ok else "fail"


@dataclass
class Report:
    """Collects what the stages did; :meth:`write` saves it into a run directory."""

    source: str
    verdict: str = "error"
    error: dict[str, str] | None = None
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    providers: dict[str, str] = field(default_factory=dict)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    passes: list[dict[str, Any]] = field(default_factory=list)
    parameters: list[dict[str, Any]] = field(default_factory=list)
    parameter_count: dict[str, Any] = field(default_factory=dict)
    gradients: list[dict[str, Any]] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    tolerances: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    scaling: dict[str, Any] | None = None
    torch_model: dict[str, Any] | None = None
    """The generated ``torch_model/`` package: class, helper-emitted ops, transpose count."""
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        """Time stage ``name`` and mark it ``ok``, or ``failed`` when it raises (re-raised).

        Only a :class:`Tf2TorchError` is recorded in :attr:`error` (kind, message, stage);
        any other exception (a bug, ``KeyboardInterrupt``) leaves :attr:`error` unchanged.
        """
        entry: dict[str, Any] = {"status": "running", "seconds": 0.0}
        self.stages[name] = entry
        start = time.perf_counter()
        try:
            yield entry
        except Tf2TorchError as err:
            entry["status"] = "failed"
            self.error = {"kind": err.kind, "message": str(err), "stage": name}
            raise
        except BaseException:
            entry["status"] = "failed"
            raise
        else:
            entry["status"] = "ok"
        finally:
            entry["seconds"] = round(time.perf_counter() - start, 3)

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (see the module docstring for the keys)."""
        return {
            "schema": REPORT_SCHEMA,
            "created": self.created,
            "source": self.source,
            "verdict": self.verdict,
            "error": self.error,
            "stages": self.stages,
            "providers": self.providers,
            "comparisons": self.comparisons,
            "passes": self.passes,
            "parameters": self.parameters,
            "parameter_count": self.parameter_count,
            "gradients": self.gradients,
            "inputs": self.inputs,
            "tolerances": self.tolerances,
            "artifacts": self.artifacts,
            "versions": self.versions,
            "scaling": self.scaling,
            "torch_model": self.torch_model,
        }

    def write(self, run_dir: Path) -> None:
        """Write ``report.json`` and ``report.md`` into ``run_dir``, each atomically."""
        data = self.to_json()
        text = json.dumps(data, indent=2, allow_nan=False) + "\n"
        atomic_write_bytes(run_dir / REPORT_JSON, text.encode())
        atomic_write_bytes(run_dir / REPORT_MD, render_markdown(data).encode())


def _fmt(value: float | None, spec: str = ".2e") -> str:
    return "-" if value is None else format(value, spec)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(c: Mapping[str, Any]) -> list[str]:
    mismatch = c["mismatch_fraction"]
    return [
        _md_cell(c["pair"]),
        _md_cell(c["output"]),
        _fmt(c["max_abs"]),
        _fmt(c["max_rel"]),
        "-" if mismatch is None else f"{100 * mismatch:.2f}%",
        _fmt(c["cosine"], ".8f"),
        f"{c['atol']:g}",
        f"{c['rtol']:g}",
        "PASS" if c["pass"] else "FAIL",
        _md_cell(c.get("note") or ""),
    ]


_COLUMNS = (
    "pair",
    "output",
    "max abs",
    "max rel",
    "mismatch",
    "cosine",
    "atol",
    "rtol",
    "verdict",
    "note",
)


def _tol(value: float) -> str:
    """A tolerance in the shortest scientific notation that reads back exactly: ``1e-04``."""
    if value == 0:
        return "0"
    for digits in range(17):
        text = format(value, f".{digits}e")
        if float(text) == value:
            return text
    return repr(value)


def render_table(comparisons: Iterable[Mapping[str, Any]]) -> Table:
    """The comparisons as a compact rich table, PASS green, FAIL red.

    Without notes it fits 80 columns for output names of up to ~13 characters (~8 when some
    atol ≠ rtol).  Max abs/rel show 2 significant digits (report.md has 3).  The tolerance
    column shows ``atol`` when every row has atol = rtol (header ``tol``), else
    ``atol/rtol``.  The note column appears only when some comparison has a note; it wraps
    into the width the other columns leave, which at 80 columns is little or none.
    """
    rows = list(comparisons)
    with_notes = any(c.get("note") for c in rows)
    same_tol = all(c["atol"] == c["rtol"] for c in rows)
    table = Table(
        title="TensorFlow vs ONNX Runtime vs PyTorch",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    tol_header = "tol" if same_tol else "atol/rtol"
    columns = ["pair", "output", "max abs", "max rel", "mismatch", "cosine", tol_header]
    for column in [*columns, "verdict", *(["note"] if with_notes else [])]:
        left = column in ("pair", "output", "note")
        table.add_column(
            column,
            justify="left" if left else "right",
            no_wrap=column != "note",
            overflow="fold" if column in ("output", "note") else "ellipsis",
        )
    for c in rows:
        mismatch = c["mismatch_fraction"]
        tol = _tol(c["atol"]) if same_tol else f"{_tol(c['atol'])}/{_tol(c['rtol'])}"
        cells = [
            c["pair"],
            c["output"],
            _fmt(c["max_abs"], ".1e"),
            _fmt(c["max_rel"], ".1e"),
            "-" if mismatch is None else f"{100 * mismatch:.2f}%",
            _fmt(c["cosine"], ".6f"),
            tol,
        ]
        colour = "green" if c["pass"] else "red"
        verdict = f"[{colour}]{'PASS' if c['pass'] else 'FAIL'}[/]"
        note = [escape(c.get("note") or "")] if with_notes else []
        table.add_row(*(escape(x) for x in cells), verdict, *note)
    return table


def render_markdown(report: Mapping[str, Any]) -> str:
    """``report.md``: the verdict, stages, providers, comparisons, passes and artifacts."""
    lines = [
        f"# tf2torch report: {report['verdict'].upper()}",
        "",
        f"- source: `{report['source']}`",
        f"- created: {report['created']}",
    ]
    if report["providers"]:
        lines.append(
            f"- ONNX Runtime provider: {report['providers'].get('onnxruntime')}; "
            f"torch device: {report['providers'].get('torch_device')}"
        )
    if report.get("error"):
        lines.append(f"- error ({report['error']['stage']}): {report['error']['message']}")
    lines += ["", "## Stages", "", "| stage | status | seconds |", "|---|---|---|"]
    lines += [
        f"| {name} | {s['status']} | {s['seconds']:.2f} |" for name, s in report["stages"].items()
    ]
    lines += [
        "",
        "## Comparisons",
        "",
        "| " + " | ".join(_COLUMNS) + " |",
        "|" + "---|" * len(_COLUMNS),
    ]
    lines += ["| " + " | ".join(_row(c)) + " |" for c in report["comparisons"]]
    if report["passes"]:
        lines += [
            "",
            "## Fixup passes",
            "",
            "| pass | status | check | seconds |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {p.get('name')} | {p.get('status')} | {p.get('check', '')} | {p.get('seconds', 0):.2f} |"
            for p in report["passes"]
        ]
    generated = report.get("torch_model")
    if generated:
        helpers = ", ".join(generated["helper_ops"]) or "none"
        lines += [
            "",
            "## Generated code",
            "",
            f"`{generated['package']}/` with class `{generated['class']}`: "
            f"{generated['transposes']} transpose/permute call(s) in `forward`, "
            f"ops written through helper functions: {helpers}.",
        ]
    lines += ["", "## Artifacts", ""]
    lines += [f"- {name}: `{path}`" for name, path in report["artifacts"].items()]
    return "\n".join(lines) + "\n"


def print_summary(console: Console, report: Mapping[str, Any]) -> None:
    """Print the stage times, the comparison table and the verdict line."""
    stages = "  ".join(f"{name} {s['seconds']:.1f}s" for name, s in report["stages"].items())
    providers = report["providers"]
    console.print(
        f"stages: {stages}   (onnxruntime: {providers.get('onnxruntime')}, "
        f"torch: {providers.get('torch_device')})",
        markup=False,
    )
    console.print(render_table(report["comparisons"]))
    count = report.get("parameter_count") or {}
    if count:
        mark = {
            "full": "ok",
            "fail": "MISMATCH",
            "partial": f"{count['unmapped']} TF variables folded away by tf2onnx (BatchNorm?): "
            "outputs match, those layers will not train like Keras",
        }[count["status"]]
        console.print(
            f"parameters: {len(report['parameters'])} TF variables; trainable elements "
            f"TF {count['tf_trainable']:,} / torch {count['torch_trainable']:,} ({mark})",
            markup=False,
        )
    gradients = report.get("gradients") or []
    if gradients:
        checked = [g for g in gradients if g.get("checked", True)]
        bad = [g["tf_name"] for g in checked if not g["pass"]]
        worst = max((g["max_abs"] or 0.0) for g in checked) if checked else 0.0
        console.print(
            f"gradients: {len(checked) - len(bad)}/{len(checked)} agree (worst abs {worst:.1e})"
            + (f"; differ: {', '.join(bad[:5])}" + (" ..." if len(bad) > 5 else "") if bad else ""),
            markup=False,
        )
    verdict = report["verdict"]
    colour = "green" if verdict == "pass" else "red"
    failing = sum(1 for c in report["comparisons"] if not c["pass"])
    partial = (report.get("parameter_count") or {}).get("status") == "partial"
    detail = (
        "all pairs and the checked gradients agree; some variables were folded (see above)"
        if verdict == "pass" and partial
        else "all pairs, parameters and gradients agree"
        if verdict == "pass"
        else f"{failing} comparison(s) out of tolerance"
        if failing
        else "outputs agree; the parameter count or gradients do not"
    )
    console.print(f"[bold {colour}]{verdict.upper()}[/]: {detail}")
