"""JUnit XML of a migration (``migrate --junit``, ``migrate-merge``): one test case per model.

Built from a ``summary.json`` (a migration's, or the one ``migrate-merge`` joined), so every
way of running a manifest reports the same way.  One ``<testsuite>`` named
``tf2torch migrate <manifest>``; a ``<testcase>`` per model (``classname`` ``tf2torch.migrate``,
``name`` the model, ``time`` its seconds).  ``fail`` is a ``<failure>`` naming the worst error
per pair; ``error`` and ``timeout`` are an ``<error>`` with the one-line reason.  Written
atomically with ``junitparser``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from junitparser import Error, Failure, JUnitXml, TestCase, TestSuite

from pipeline.core.run_dir import atomic_write_bytes


def _case(model: Mapping[str, Any]) -> TestCase:
    case = TestCase(model["name"], "tf2torch.migrate", float(model.get("seconds") or 0.0))
    verdict = model["verdict"]
    if verdict == "fail":
        worst = ", ".join(
            f"{pair} {value:.1e}" if value is not None else f"{pair} n/a"
            for pair, value in (model.get("worst") or {}).items()
        )
        failure = Failure(f"not equivalent (worst max |a-b|: {worst})", "NotEquivalent")
        failure.text = f"see {model['run_dir']}/report.md"
        case.result = [failure]
    elif verdict in ("error", "timeout"):
        error = model.get("error") or {}
        case.result = [Error(error.get("message") or verdict, error.get("kind") or verdict)]
    return case


def summary_to_suite(summary: Mapping[str, Any]) -> TestSuite:
    """The JUnit test suite of a migration summary."""
    suite = TestSuite(f"tf2torch migrate {Path(summary['manifest']).name}")
    if summary.get("created"):
        suite.timestamp = str(summary["created"])
    suite.add_property("manifest", summary["manifest"])
    suite.add_property("complete", str(summary["complete"]).lower())
    for model in summary["models"]:
        suite.add_testcase(_case(model))
    suite.time = float(summary.get("seconds") or 0.0)
    return suite


def write_junit(summary_path: str | Path, junit_path: str | Path) -> None:
    """Write the JUnit XML of the summary at ``summary_path`` to ``junit_path``."""
    summary = json.loads(Path(summary_path).read_text())
    xml = JUnitXml()
    xml.add_testsuite(summary_to_suite(summary))
    buffer = io.BytesIO()
    xml.write(buffer)
    target = Path(junit_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, buffer.getvalue())
