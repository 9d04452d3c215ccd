"""The conformance driver: every ONNX node test case through import and codegen, tallied per op.

``python -m conformance [--ops A,B] [-j N] [--out DIR] [--strict-ops A,B]`` (also
``make conformance``) collects ONNX's node test cases (:mod:`conformance.cases`), runs each
(:mod:`conformance.check`), prints a tally per op and writes ``conformance.md`` and
``conformance.json`` to ``--out`` (default ``docs/results``, :mod:`conformance.report`).

With ``-j 1`` the cases run in this process, each under a ``signal.alarm`` time limit.  With
``-j N`` (N > 1) they run in N worker processes (spawned, one torch thread each), one case at
a time each; a worker that dies or overruns its case's limit is killed, the case is recorded
as failed in the step it was in, and a fresh worker takes over, so no case ends the run.

Exit code 0 when the run completed (the tally is the result), 1 when an op named by
``--strict-ops`` has a failing case, 2 on a bad option.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import multiprocessing
import multiprocessing.connection
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.cases import PIPELINE_OPSET, Case, collect
from conformance.check import (
    DEFAULT_TIMEOUT,
    FAIL_IMPORT,
    FAILURES,
    OUTCOMES,
    PASS,
    REFUSED,
    CaseResult,
    run_case,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs" / "results"
_GRACE = 30.0
"""Seconds past a case's own time limit before its worker is killed from outside."""


@dataclass
class OpTally:
    """One op's cases by outcome, with the first reason seen for each outcome but a pass."""

    op: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    first_reason: dict[str, str] = field(default_factory=dict)

    @property
    def cases(self) -> int:
        """How many cases count for the op."""
        return sum(self.counts.values())

    @property
    def run(self) -> int:
        """How many of them were run (not refused)."""
        return self.cases - self.counts[REFUSED]

    @property
    def failed(self) -> int:
        """How many of them failed, of any kind."""
        return sum(self.counts[k] for k in FAILURES)

    def to_json(self) -> dict[str, Any]:
        """The op's entry in ``conformance.json``."""
        return {"counts": self.counts, "first_reason": self.first_reason}


def tally(results: Iterable[CaseResult]) -> dict[str, OpTally]:
    """Per op (sorted by name): counts by outcome and the first reason of each kind."""
    ops: dict[str, OpTally] = {}
    for r in results:
        t = ops.setdefault(r.op, OpTally(r.op))
        t.counts[r.outcome] += 1
        if r.outcome != PASS:
            t.first_reason.setdefault(r.outcome, f"{r.name}: {r.reason}")
    return dict(sorted(ops.items()))


# -- worker processes -------------------------------------------------------------------


def _worker_main(conn: multiprocessing.connection.Connection) -> None:
    """A worker: receive ``(case, timeout, opset)``, send ``("stage", text)`` as it goes and
    ``("done", result)`` at the end; ``None`` ends it."""
    import torch

    torch.set_num_threads(1)
    import pipeline.to_torch.codegen
    import pipeline.to_torch.importer  # noqa: F401 -- imported before the first case's clock

    conn.send(("ready", None))
    while True:
        task = conn.recv()
        if task is None:
            return
        case, timeout, opset = task
        result = run_case(case, timeout, lambda s: conn.send(("stage", s)), opset)
        conn.send(("done", result))


@dataclass
class _Worker:
    process: Any
    conn: multiprocessing.connection.Connection
    ready: bool = False
    index: int | None = None
    started: float = 0.0
    stage: str = f"{FAIL_IMPORT}: starting"


def _start_worker(ctx: Any) -> _Worker:
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_worker_main, args=(child,), daemon=True)
    process.start()
    child.close()
    return _Worker(process, parent)


def _stop(worker: _Worker) -> None:
    if worker.process.is_alive():
        worker.process.kill()
    worker.process.join(5)
    worker.conn.close()


def _lost(case: Case, worker: _Worker, why: str, opset: int) -> CaseResult:
    outcome, _, where = worker.stage.partition(": ")
    return CaseResult(
        case.name, case.op, outcome, f"{where}: {why}", round(time.perf_counter() - worker.started, 3), opset=opset
    )


def _run_in_workers(
    cases: Sequence[Case],
    jobs: int,
    timeout: float,
    opset: int,
    on_result: Callable[[CaseResult], None],
) -> list[CaseResult]:
    ctx = multiprocessing.get_context("spawn")
    results: list[CaseResult | None] = [None] * len(cases)
    pending = collections.deque(range(len(cases)))
    workers = [_start_worker(ctx) for _ in range(min(jobs, len(cases)))]
    try:
        while pending or any(w.index is not None for w in workers):
            for w in workers:
                if w.ready and w.index is None and pending:
                    w.index = pending.popleft()
                    w.started = time.perf_counter()
                    w.stage = f"{FAIL_IMPORT}: sending"
                    w.conn.send((cases[w.index], timeout, opset))
            ready = multiprocessing.connection.wait([w.conn for w in workers], timeout=1.0)
            for i, w in enumerate(list(workers)):
                lost = ""
                if w.conn in ready:
                    try:
                        kind, payload = w.conn.recv()
                    except (EOFError, OSError):
                        w.process.join(5)
                        lost = f"worker process died (exit code {w.process.exitcode})"
                    else:
                        if kind == "ready":
                            w.ready = True
                        elif kind == "stage":
                            w.stage = payload
                        elif kind == "done" and w.index is not None:
                            results[w.index] = payload
                            on_result(payload)
                            w.index = None
                elif w.index is not None and time.perf_counter() - w.started > timeout + _GRACE:
                    lost = f"timed out after {timeout + _GRACE:g} s (worker killed)"
                if lost:
                    if w.index is not None:
                        result = _lost(cases[w.index], w, lost, opset)
                        results[w.index] = result
                        on_result(result)
                    elif not w.ready:
                        raise RuntimeError(f"a conformance worker failed to start: {lost}")
                    _stop(w)
                    workers[i] = _start_worker(ctx)
    finally:
        for w in workers:
            with contextlib.suppress(OSError, ValueError):
                w.conn.send(None)
        for w in workers:
            w.process.join(5)
            _stop(w)
    return [r for r in results if r is not None]


def run_cases(
    cases: Sequence[Case],
    *,
    jobs: int = 1,
    timeout: float = DEFAULT_TIMEOUT,
    opset: int = PIPELINE_OPSET,
    echo: bool = True,
) -> list[CaseResult]:
    """Run ``cases`` (in this process with ``jobs`` 1, else in ``jobs`` worker processes);
    the results in the order of ``cases``.  With ``echo``, each failure is printed as it
    comes, and a progress line every 100 cases."""
    done = [0]

    def on_result(r: CaseResult) -> None:
        done[0] += 1
        if not echo:
            return
        if r.outcome in FAILURES:
            print(f"  {r.outcome:19} {r.name} ({r.op}): {r.reason[:200]}", flush=True)
        if done[0] % 100 == 0:
            print(f"{done[0]}/{len(cases)} cases", flush=True)

    if jobs <= 1:
        results = []
        for case in cases:
            results.append(run_case(case, timeout, opset=opset))
            on_result(results[-1])
        return results
    return _run_in_workers(cases, jobs, timeout, opset, on_result)


def print_tally(results: Sequence[CaseResult]) -> None:
    """Print one line per op with a case run (counts, then the first reason of each failing
    kind), then the ops all of whose cases were refused."""
    ops = tally(results)
    short = {
        "pass": "pass",
        "pass-constant-inputs": "const",
        "fail-import": "imp",
        "fail-numeric-import": "num",
        "fail-codegen": "gen",
        "fail-numeric-code": "numgen",
        "refused": "ref",
    }
    print(f"\n{'op':28} " + " ".join(f"{short[k]:>6}" for k in OUTCOMES))
    for op, t in ops.items():
        if not t.run:
            continue
        print(f"{op:28} " + " ".join(f"{t.counts[k]:6d}" for k in OUTCOMES))
        for kind in FAILURES:
            if kind in t.first_reason:
                print(f"    {kind}: {t.first_reason[kind][:220]}")
    refused = [op for op, t in ops.items() if not t.run]
    if refused:
        print(f"\nall cases refused ({len(refused)} ops): {', '.join(refused)}")
    totals = collections.Counter(r.outcome for r in results)
    passing = [op for op, t in ops.items() if t.run and not t.failed]
    failing = [op for op, t in ops.items() if t.failed]
    print(
        f"\n{len(results)} cases: "
        + ", ".join(f"{totals[k]} {k}" for k in OUTCOMES)
        + f"\n{len(passing)} ops pass every case run, {len(failing)} ops have failures"
    )


def _op_list(text: str | None) -> list[str] | None:
    return [op.strip() for op in text.split(",") if op.strip()] if text else None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m conformance``."""
    parser = argparse.ArgumentParser(
        prog="python -m conformance",
        description="ONNX's node test cases through tf2torch's importer and code generator.",
    )
    parser.add_argument("--ops", help="only the cases of these ops (comma-separated)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where conformance.md/.json go")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="worker processes (1: in this process)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per case")
    parser.add_argument(
        "--opset", type=int, default=PIPELINE_OPSET,
        help="opset a case without a converter at its own opset is converted to",
    )  # fmt: skip
    parser.add_argument(
        "--strict-ops", help="exit 1 if any case of these ops (comma-separated) fails"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-case lines")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m conformance``: run, print the tally, write the report; the exit code."""
    from conformance.report import write_reports

    args = parse_args(argv)
    ops = _op_list(args.ops)
    strict = _op_list(args.strict_ops) or []
    start = time.perf_counter()
    cases = collect(ops)
    if not cases:
        print(f"conformance: no ONNX node test case for {', '.join(ops or [])}", file=sys.stderr)
        return 2
    print(
        f"conformance: {len(cases)} cases of {len({c.op for c in cases})} ops, "
        f"{args.jobs} at a time, {args.timeout:g} s each, opset fallback {args.opset}",
        flush=True,
    )
    results = run_cases(
        cases, jobs=args.jobs, timeout=args.timeout, opset=args.opset, echo=not args.quiet
    )
    print_tally(results)
    seconds = time.perf_counter() - start
    paths = write_reports(
        results,
        args.out,
        settings={
            "command": " ".join(["python -m conformance", *(sys.argv[1:] if argv is None else argv)]),
            "ops": ops,
            "jobs": args.jobs,
            "timeout": args.timeout,
            "opset": args.opset,
            "seconds": round(seconds, 1),
        },
    )
    print(f"wrote {', '.join(str(p) for p in paths)} ({seconds:.0f} s)")
    ops_tally = tally(results)
    broken = [op for op in strict if op in ops_tally and ops_tally[op].failed]
    if broken:
        print(f"strict ops with failing cases: {', '.join(broken)}", file=sys.stderr)
        return 1
    return 0
