"""The run report: ``report.json`` for machines, ``report.md`` and a terminal table for people.

``report.json`` keys (schema ``tf2torch.report/1.1``; other tools read these names):
``schema``, ``created``, ``source``, ``verdict`` (pass/fail/error), ``error``, ``stages``
(name → ``status``, ``seconds``), ``providers`` (``onnxruntime``: the execution provider
that ran, ``torch_device``), ``comparisons`` (see :class:`pipeline.core.compare.OutputComparison`),
``passes``, ``inputs``, ``tolerances``, ``artifacts`` (name → file in the run directory),
``versions``, ``gradients`` (one row per trainable variable), ``gradient_check``
(``status`` checked/skipped, ``reason`` when skipped, the ``outputs`` the loss sums and the
integer/boolean ``excluded_outputs``), ``scaling`` (``--scale``: ``strategy``, ``spec``
and ``layers``, each with its ``factor``; null without ``--scale``).

Schema 1.1 adds, keeping every 1.0 key: ``tolerances.noise_floor`` (output → ``noise``,
``scale``, ``dtype``, ``atol``: the measured float32 noise floor, see
:class:`pipeline.core.compare.Noise`), ``tolerances.noise_model`` (its rule and factors),
``tolerances.noise_unmeasured`` (why there is no floor, else null) and each comparison's
``noise_floor`` (the floor that set its ``atol``; null for user or default tolerances).
Within 1.1, added later: each gradient row's ``noise_floor_tf`` (TF's own float32 floor of
that gradient, from its float64 twin; null when unmeasured) and
``gradient_check.tf_noise_unmeasured`` (why TF's floor was not measured or not trusted);
``tolerances.noise_own`` (framework → output → that framework's own float32 floor where
measured above ``noise_floor``'s), ``tolerances.noise_own_unmeasured`` (framework → why
not) and each comparison's ``noise_floor_other`` (the pair's first side's floor where it
differs from ``noise_floor``, the second side's).
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

from pipeline.core.compare import OutputComparison
from pipeline.core.errors import Tf2TorchError
from pipeline.core.run_dir import REPORT_NAME, atomic_write_bytes

REPORT_SCHEMA = "tf2torch.report/1.1"
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
    check passes, and the parameter check passes (every trainable Keras variable is exactly
    one trainable torch parameter, see :func:`pipeline.to_torch.parameters.count_trainable`);
    else ``fail``.  ``parameter_count.pass: false`` never goes with a pass."""
    results = list(comparisons)
    ok = bool(results) and all(results) and all(g.passed for g in gradients)
    if parameter_count is not None:
        ok = ok and bool(parameter_count.get("pass")) and parameter_count.get("status") != "fail"
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
    inference_only: bool = False
    gradients: list[dict[str, Any]] = field(default_factory=list)
    gradient_check: dict[str, Any] | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    tolerances: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    scaling: dict[str, Any] | None = None
    static_dims: list[dict[str, Any]] = field(default_factory=list)
    """Input axes the model leaves dynamic that ``model.pt2`` had to fix, with the reason."""
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
            "inference_only": self.inference_only,
            "gradients": self.gradients,
            "gradient_check": self.gradient_check,
            "inputs": self.inputs,
            "tolerances": self.tolerances,
            "artifacts": self.artifacts,
            "versions": self.versions,
            "scaling": self.scaling,
            "static_dims": self.static_dims,
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
    atol_only = not same_tol and all(c["rtol"] == 0 for c in rows)
    table = Table(
        title="TensorFlow vs ONNX Runtime vs PyTorch",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    tol_header = "tol" if same_tol else "atol" if atol_only else "atol/rtol"
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
        one = same_tol or atol_only
        tol = _tol(c["atol"]) if one else f"{_tol(c['atol'])}/{_tol(c['rtol'])}"
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
    lines += _noise_lines(report.get("tolerances") or {})
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
    scope = report.get("gradient_check") or {}
    if scope.get("status") == "skipped":
        lines += ["", f"Gradient check skipped: {scope.get('reason')}"]
    for p in unchecked_passes(report["passes"]):
        lines += ["", f"Pass {p['name']} not checked numerically: {p.get('note') or p['check']}"]
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


def _noise_lines(tolerances: Mapping[str, Any]) -> list[str]:
    floors = tolerances.get("noise_floor") or {}
    if not floors and not tolerances.get("noise_unmeasured"):
        return []
    lines = ["", "## Float32 noise floor", ""]
    if tolerances.get("noise_unmeasured"):
        lines.append(f"Not measured ({tolerances['noise_unmeasured']}): fixed tolerances apply.")
    if floors:
        model = tolerances.get("noise_model") or {}
        lines += [
            f"max \\|float32 - float64\\| per output; a pair passes within "
            f"`{model.get('rule', '')}` (k = {model.get('k')}, f = {model.get('f')}) "
            "unless --atol/--rtol/--output-tol set the tolerance.",
            "",
            "| output | noise | scale | atol |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {_md_cell(name)} | {_fmt(n.get('noise'))} | {_fmt(n.get('scale'))} "
            f"| {_fmt(n.get('atol'))} |"
            for name, n in floors.items()
        ]
        lines += ["", *_own_noise_lines(tolerances)]
    return lines


def _own_noise_lines(tolerances: Mapping[str, Any]) -> list[str]:
    """The table's floors are torch's; one line per framework whose own floor was measured
    above them (it replaces torch's on that framework's side of a pair), or not measured."""
    own = tolerances.get("noise_own") or {}
    names = {"tf": "TensorFlow", "ort": "ONNX Runtime"}
    lines = [
        f"{names.get(framework, framework)}'s own floor (its float32 run against its float64 "
        "run), used for its side of each pair: "
        + ", ".join(f"{_md_cell(name)} {_fmt(value)}" for name, value in floors.items())
        for framework, floors in own.items()
    ]
    lines += [
        f"{names.get(framework, framework)}'s own floor not measured ({why}): torch's stands in."
        for framework, why in (tolerances.get("noise_own_unmeasured") or {}).items()
    ]
    return lines


def _noise_summary(tolerances: Mapping[str, Any]) -> str | None:
    floors = tolerances.get("noise_floor") or {}
    if tolerances.get("noise_unmeasured"):
        return f"float32 noise floor not measured ({tolerances['noise_unmeasured']})"
    if not floors:
        return None
    shown = [f"{name} {n['noise']:.1e}" for name, n in list(floors.items())[:4]]
    more = " ..." if len(floors) > 4 else ""
    own = [
        f"{framework} {', '.join(f'{v:.1e}' for v in list(values.values())[:4])}"
        for framework, values in (tolerances.get("noise_own") or {}).items()
    ]
    return (
        "float32 noise floor (max |float32 - float64|): "
        + ", ".join(shown)
        + more
        + (f"; own floors above it: {'; '.join(own)}" if own else "")
    )


def unchecked_passes(passes: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The passes that changed the graph but whose outputs could not be compared before and
    after with ONNX Runtime (``check`` is ``validity`` or ``none``)."""
    return [p for p in passes if p.get("status") == "applied" and p.get("check") != "numeric"]


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
    noise = _noise_summary(report.get("tolerances") or {})
    if noise:
        console.print(noise, markup=False)
    for fixed in report.get("static_dims") or []:
        console.print(
            f"note: input {fixed['input']!r} axis {fixed['axis']} is dynamic in Keras but fixed to "
            f"{fixed['size']} in model.pt2: {fixed['reason']}",
            markup=False,
        )
    count = report.get("parameter_count") or {}
    if count:
        problems = count.get("problems") or []
        mark = {
            "full": "ok",
            "inference-only": f"{count.get('folded', 0)} variables folded for inference: "
            "the module is inference-only",
        }.get(count["status"], "MISMATCH")
        console.print(
            f"parameters: {len(report['parameters'])} rows; trainable elements "
            f"TF {count['tf_trainable']:,} / torch {count['torch_trainable']:,} ({mark})",
            markup=False,
        )
        for problem in problems[:10]:
            console.print(f"  {problem['name']}: {problem['reason']}", markup=False)
        if len(problems) > 10:
            console.print(f"  ... and {len(problems) - 10} more (report.json)", markup=False)
    gradients = report.get("gradients") or []
    scope = report.get("gradient_check") or {}
    excluded = scope.get("excluded_outputs") or {}
    left_out = (
        f" (integer/boolean outputs left out of the loss: {', '.join(excluded)})"
        if excluded
        else ""
    )
    if scope.get("status") == "skipped":
        console.print(f"gradients: not checked: {scope.get('reason')}", markup=False)
    elif gradients:
        checked = [g for g in gradients if g.get("checked", True)]
        bad = [g["tf_name"] for g in checked if not g["pass"]]
        worst = max((g["max_abs"] or 0.0) for g in checked) if checked else 0.0
        console.print(
            f"gradients: {len(checked) - len(bad)}/{len(checked)} agree (worst abs {worst:.1e})"
            + (f"; differ: {', '.join(bad[:5])}" + (" ..." if len(bad) > 5 else "") if bad else "")
            + left_out,
            markup=False,
        )
        if scope.get("tf_noise_unmeasured"):
            console.print(
                f"gradients: TF's own float32 floor not measured ({scope['tf_noise_unmeasured']});"
                " torch's stands for both sides",
                markup=False,
            )
    unchecked = unchecked_passes(report.get("passes") or [])
    if unchecked:
        console.print(
            f"fixup: {len(unchecked)} pass(es) not checked numerically: "
            + "; ".join(f"{p['name']} ({p.get('note') or p['check']})" for p in unchecked),
            markup=False,
        )
    verdict = report["verdict"]
    colour = "green" if verdict == "pass" else "red"
    failing = sum(1 for c in report["comparisons"] if not c["pass"])
    folded = (report.get("parameter_count") or {}).get("status") == "inference-only"
    skipped = scope.get("status") == "skipped"
    detail = (
        "all pairs and the checked gradients agree; inference-only: variables were folded"
        if verdict == "pass" and folded
        else "all pairs and parameters agree; gradients not checked (see above)"
        if verdict == "pass" and skipped
        else "all pairs, parameters and gradients agree"
        if verdict == "pass"
        else f"{failing} comparison(s) out of tolerance"
        if failing
        else "outputs agree; the parameters or gradients do not (see above)"
    )
    console.print(f"[bold {colour}]{verdict.upper()}[/]: {detail}")


def quiet_line(report: Mapping[str, Any], run_dir: str) -> str:
    """The one line ``convert -q`` prints: verdict, the worst comparison (its max abs error,
    pair, output and share of its tolerance) and the seconds the stages took; on a fail,
    the first thing that failed instead of the worst comparison."""
    seconds = sum(float(s.get("seconds") or 0.0) for s in (report.get("stages") or {}).values())
    comparisons = report.get("comparisons") or []
    verdict = str(report.get("verdict", "error")).upper()
    if report.get("verdict") == "pass":
        if not comparisons:
            return f"{verdict} {run_dir}: {seconds:.1f} s"

        def share(c: Mapping[str, Any]) -> float:
            bound = (c.get("atol") or 0.0) + (c.get("rtol") or 0.0) * abs(c.get("worst_ref") or 0.0)
            return (c.get("max_abs") or 0.0) / bound if bound else 0.0

        worst = max(comparisons, key=share)
        return (
            f"{verdict} {run_dir}: worst {worst['pair']} {worst['output']} "
            f"{_fmt(worst.get('max_abs'))} ({share(worst):.2f} of its tolerance), {seconds:.1f} s"
        )
    failing = [c for c in comparisons if not c.get("pass")]
    if failing:
        c = failing[0]
        what = (
            f"{len(failing)} comparison(s) out of tolerance, first {c['pair']} {c['output']}: "
            f"max abs {_fmt(c.get('max_abs'))} > {_tol(c.get('atol') or 0.0)}"
        )
    else:
        problems = (report.get("parameter_count") or {}).get("problems") or []
        bad = [g["tf_name"] for g in report.get("gradients") or [] if not g.get("pass", True)]
        what = (
            f"parameters: {problems[0]['name']}: {problems[0]['reason']}"
            if problems
            else f"{len(bad)} gradient(s) differ, first {bad[0]}"
            if bad
            else "see report.md"
        )
    return f"{verdict} {run_dir}: {what}, {seconds:.1f} s"
