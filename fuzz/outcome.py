"""Classify what ``tf2torch convert --json`` did with one fuzz model.

Every model must end in one of two ways:

- **pass**: exit 0 with all three pairs (``tf-ort``, ``tf-torch``, ``ort-torch``) for every
  output, every trainable variable mapped to a torch tensor and every gradient checked; a
  gradient check skipped with its reason stated (no trainable variable, integer outputs
  only, TF cannot differentiate) is a pass of kind ``gradients skipped``;
- **loud**: a classified failure: exit 1 with the failing pairs, gradients or parameter
  count named in the report, or exit 2 with one ``tf2torch: error: ...`` line, whose message
  gives the kind (unsupported op, export error, ...).

Anything else is **silent**: a pass that lost a variable or left a gradient unchecked, a
traceback, exit 1 without a named reason, a hang past the timeout, a crash by signal.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

PASS, LOUD, SILENT = "pass", "loud", "silent"
PAIRS = ("tf-ort", "tf-torch", "ort-torch")


class Outcome(NamedTuple):
    """How one model ended: ``status`` pass/loud/silent, a short ``kind`` for the tally and
    the ``detail`` (error line, failing pairs, what was lost)."""

    status: str
    kind: str
    detail: str = ""


_ERROR_KINDS = (
    (re.compile(r"unsupported op type\(s\): (.*?)\. Add a patch"), "unsupported op"),
    (re.compile(r"tf2onnx could not export"), "onnx export error"),
    (re.compile(r"TensorFlow worker (timed out|failed|was killed|exited)"), "tf worker"),
    (re.compile(r"pass '([^']+)'"), "fixup pass"),
    (re.compile(r"torch\.export"), "torch export error"),
    (re.compile(r"TensorFlow could not run"), "tf cannot run the model"),
    (re.compile(r"raised (\w+)"), "factory raised"),
)


def error_kind(line: str) -> str:
    """The kind of a one-line ``tf2torch: error: ...`` or ``tf2torch: internal error ...``."""
    internal = re.match(r"tf2torch: internal error in ([^:]+): (\w+)", line)
    if internal:
        return f"internal error ({internal.group(1)}: {internal.group(2)})"
    message = line.removeprefix("tf2torch: error: ")
    for pattern, kind in _ERROR_KINDS:
        found = pattern.search(message)
        if found is None:
            continue
        if kind == "unsupported op":
            ops = sorted({part.split(" x")[0].strip() for part in found.group(1).split(";")})
            return f"unsupported op ({', '.join(ops)})"
        if kind == "fixup pass":
            return f"fixup pass ({found.group(1)})"
        return kind
    stage = re.match(r"(\w[\w ]*?): ", message)
    return f"error in {stage.group(1)}" if stage else "error"


def _pass_problems(report: dict[str, Any]) -> list[str]:
    """What keeps an exit-0 report from being a full pass (empty: a full pass)."""
    problems = []
    outputs = {c["output"] for c in report.get("comparisons") or []}
    pairs = {(c["pair"], c["output"]) for c in report.get("comparisons") or []}
    missing = [f"{p} {o}" for o in sorted(outputs) for p in PAIRS if (p, o) not in pairs]
    if not outputs:
        problems.append("no comparisons")
    if missing:
        problems.append(f"missing pairs: {', '.join(missing)}")
    lost = [
        p["tf_name"]
        for p in report.get("parameters") or []
        if p.get("tf_name") and p.get("trainable") and not p.get("torch_name")
    ]
    if lost:
        problems.append(f"trainable variable(s) without a torch tensor: {', '.join(lost)}")
    count = report.get("parameter_count") or {}
    if count and count.get("status") != "full":
        problems.append(f"parameter count {count.get('status')}")
    unchecked = [g["tf_name"] for g in report.get("gradients") or [] if not g.get("checked", True)]
    if unchecked:
        problems.append(f"gradient(s) not checked: {', '.join(unchecked)}")
    return problems


def _named_failures(report: dict[str, Any]) -> tuple[str, str]:
    """The kind and detail of an exit-1 report: what it names as failing ('' if nothing)."""
    bad_pairs = sorted({c["pair"] for c in report.get("comparisons") or [] if not c["pass"]})
    bad_grads = [g["tf_name"] for g in report.get("gradients") or [] if not g["pass"]]
    count = report.get("parameter_count") or {}
    if bad_pairs:
        failing = [f"{c['pair']} {c['output']}" for c in report["comparisons"] if not c["pass"]]
        return f"outputs differ ({', '.join(bad_pairs)})", ", ".join(failing)
    if bad_grads:
        return "gradients differ", ", ".join(bad_grads)
    if count.get("status") == "fail":
        return "parameter count differs", json.dumps(count)
    return "", ""


def classify(returncode: int | None, stdout: str, stderr: str) -> Outcome:
    """Classify one ``convert --json -q`` run; ``returncode`` None means it timed out."""
    if returncode is None:
        return Outcome(SILENT, "hang", "killed after the timeout")
    if "Traceback (most recent call last)" in stderr:
        last = [ln for ln in stderr.splitlines() if ln.strip()][-1]
        return Outcome(SILENT, "traceback", last.strip())
    if returncode == 2:
        lines = [ln for ln in stderr.splitlines() if ln.startswith("tf2torch: ")]
        if len(lines) != 1:
            return Outcome(SILENT, "exit 2 without one error line", stderr.strip()[-300:])
        return Outcome(LOUD, error_kind(lines[0]), lines[0])
    if returncode not in (0, 1):
        return Outcome(SILENT, f"exit {returncode}", stderr.strip()[-300:])
    try:
        report = json.loads(stdout)
    except ValueError:
        return Outcome(SILENT, f"exit {returncode} without a report", stdout.strip()[-300:])
    if returncode == 1:
        kind, detail = _named_failures(report)
        if not kind:
            return Outcome(SILENT, "exit 1 without a named reason", report.get("verdict", ""))
        return Outcome(LOUD, kind, detail)
    problems = _pass_problems(report)
    if problems:
        return Outcome(SILENT, "pass with " + problems[0].split(":")[0], "; ".join(problems))
    scope = report.get("gradient_check") or {}
    if scope.get("status") == "skipped":
        return Outcome(PASS, "gradients skipped", scope.get("reason") or "")
    return Outcome(PASS, "full pass")
