"""The fuzz driver: generate models, convert each with the CLI, classify, tally.

Each model is written as a factory file (:mod:`fuzz.grammar`) and converted by
``python -m pipeline convert FILE.py:make --json -q`` in its own process group, killed after
the timeout with its TF worker.  The outcome of each (:mod:`fuzz.outcome`) is printed as it
finishes; at the end a tally by outcome and kind, and ``summary.json`` in the output
directory.  Exit code 0 only when no model had a silent outcome.

Environment (also ``make fuzz``): ``FUZZ_N`` models (default 10), ``FUZZ_SEED`` the first
seed (default 0; model i has seed ``FUZZ_SEED + i``), ``FUZZ_TIMEOUT`` seconds per model
(default 300), ``FUZZ_OUT`` the output directory (default ``runs/fuzz``), ``FUZZ_ARGS``
extra ``convert`` arguments (default ``--keep-batchnorm``: BatchNorm folded into a
convolution would be a pass with lost variables, issue 10's subject), ``FUZZ_KEEP=1`` to keep
the run directories of full passes too, ``FUZZ_JOBS`` conversions at a time (default 1),
``FUZZ_PAGE`` the results page (default ``docs/results/fuzz.md``; empty: none).
"""

from __future__ import annotations

import collections
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from fuzz.grammar import ModelSpec, generate
from fuzz.outcome import LOUD, PASS, SILENT, Outcome, classify

REPO = Path(__file__).resolve().parents[1]
FIXED_SEEDS = tuple(range(10))
"""The seeds the default test suite converts (tests/fuzz/test_fuzz_seeds.py)."""
DEFAULT_ARGS = ("--keep-batchnorm",)


@dataclass
class ModelResult:
    """One fuzz model: its seed, how it ended and what it used."""

    seed: int
    status: str
    kind: str
    detail: str
    seconds: float
    factory: str
    features: list[str]


def convert_command(
    spec: ModelSpec, factory: Path, run_dir: Path, extra: Sequence[str]
) -> list[str]:
    """The ``convert`` command line for ``spec`` written at ``factory``."""
    return [
        sys.executable, "-m", "pipeline", "convert", f"{factory}:make", "-o", str(run_dir),
        "--json", "-q", *spec.convert_args(), *extra,
    ]  # fmt: skip


def _env(log_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["TF2TORCH_LOG_DIR"] = str(log_dir)
    return env


def run_model(
    spec: ModelSpec, out: Path, timeout: float, extra: Sequence[str] = DEFAULT_ARGS
) -> tuple[Outcome, float]:
    """Convert one model with the CLI and classify how it ended; returns the outcome and the
    seconds it took.  The process group (CLI and TF worker) is killed after ``timeout``."""
    factory = spec.write(out / "models")
    run_dir = out / "runs" / f"fuzz_{spec.seed}"
    start = time.perf_counter()
    proc = subprocess.Popen(
        convert_command(spec, factory, run_dir, extra),
        cwd=REPO,
        env=_env(out / "logs"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        code = None
    seconds = time.perf_counter() - start
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "logs" / f"fuzz_{spec.seed}.stderr").write_text(stderr)
    return classify(code, stdout, stderr), seconds


def tally(results: Iterable[ModelResult]) -> dict[str, dict[str, int]]:
    """Counts by status, and within each status by kind (most frequent first)."""
    by_status: dict[str, collections.Counter[str]] = {
        s: collections.Counter() for s in (PASS, LOUD, SILENT)
    }
    for r in results:
        by_status[r.status][r.kind] += 1
    return {s: dict(c.most_common()) for s, c in by_status.items()}


def print_tally(results: Sequence[ModelResult]) -> None:
    """Print the tally by outcome and kind, then every silent model."""
    counts = tally(results)
    print(f"\n{len(results)} models")
    for status, kinds in counts.items():
        print(f"  {status}: {sum(kinds.values())}")
        for kind, n in kinds.items():
            print(f"    {n:4d}  {kind}")
    silent = [r for r in results if r.status == SILENT]
    for r in silent:
        print(f"SILENT seed {r.seed} ({r.kind}): {r.detail[:300]}  [{r.factory}]")


def _one(seed: int, out: Path, timeout: float, extra: Sequence[str], keep: bool) -> ModelResult:
    spec = generate(seed)
    outcome, seconds = run_model(spec, out, timeout, extra)
    if outcome.status == PASS and outcome.kind == "full pass" and not keep:
        shutil.rmtree(out / "runs" / f"fuzz_{seed}", ignore_errors=True)
    return ModelResult(
        seed,
        outcome.status,
        outcome.kind,
        outcome.detail,
        round(seconds, 1),
        str(out / "models" / f"fuzz_{seed}.py"),
        spec.features,
    )


def run_fuzz(
    seeds: Iterable[int],
    out: Path,
    *,
    timeout: float = 300.0,
    extra: Sequence[str] = DEFAULT_ARGS,
    keep_passes: bool = False,
    jobs: int = 1,
    echo: bool = True,
) -> list[ModelResult]:
    """Generate, convert and classify each seed's model, ``jobs`` conversions at a time;
    write ``out/summary.json`` (updated as models finish) and return the results in seed
    order."""
    out.mkdir(parents=True, exist_ok=True)
    results: list[ModelResult] = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(_one, seed, out, timeout, extra, keep_passes) for seed in seeds]
        for future in as_completed(futures):
            r = future.result()
            results.append(r)
            if echo:
                print(
                    f"seed {r.seed:5d}  {r.seconds:6.1f}s  {r.status:6}  {r.kind}"
                    + (f": {r.detail[:160]}" if r.detail else ""),
                    flush=True,
                )
            results.sort(key=lambda m: m.seed)
            (out / "summary.json").write_text(
                json.dumps(
                    {"tally": tally(results), "models": [asdict(m) for m in results]}, indent=2
                )
            )
    return results


def write_page(results: Sequence[ModelResult], path: Path, first: int, settings: str) -> None:
    """Write the fuzz tally as a results page (``docs/results/fuzz.md``): the provenance
    header, the tally by outcome and kind, and every model that was not a full pass."""
    from bench.provenance import header

    counts = tally(results)
    lines = header(
        "Fuzz tally",
        f"{len(results)} random Keras models (`fuzz/grammar.py`, seeds {first}.."
        f"{first + len(results) - 1}) through `convert {settings}`: each must pass in full or "
        "fail loudly; a silent outcome is a defect. Generated by `make fuzz`; do not edit by hand.",
    )
    lines += ["| outcome | kind | models |", "|---|---|---|"]
    for status, kinds in counts.items():
        lines += [f"| {status} | {kind} | {n} |" for kind, n in kinds.items()]
        lines.append(f"| **{status}** | all | **{sum(kinds.values())}** |")
    others = [r for r in results if not (r.status == PASS and r.kind == "full pass")]
    if others:
        lines += ["", "| seed | outcome | kind | detail |", "|---|---|---|---|"]
        lines += [
            f"| {r.seed} | {r.status} | {r.kind} | {r.detail[:200].replace('|', '/')} |"
            for r in others
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    """``python -m fuzz`` / ``make fuzz``: settings from the environment (module docstring)."""
    n = int(os.environ.get("FUZZ_N", "10"))
    first = int(os.environ.get("FUZZ_SEED", "0"))
    timeout = float(os.environ.get("FUZZ_TIMEOUT", "300"))
    out = Path(os.environ.get("FUZZ_OUT", "runs/fuzz")).absolute()
    extra = shlex.split(os.environ.get("FUZZ_ARGS", " ".join(DEFAULT_ARGS)))
    keep = os.environ.get("FUZZ_KEEP", "") == "1"
    jobs = int(os.environ.get("FUZZ_JOBS", "1"))
    print(
        f"fuzz: {n} models, seeds {first}..{first + n - 1}, {jobs} at a time, "
        f"timeout {timeout:g}s, out {out}"
    )
    results = run_fuzz(
        range(first, first + n), out, timeout=timeout, extra=extra, keep_passes=keep, jobs=jobs
    )
    print_tally(results)
    page = os.environ.get("FUZZ_PAGE", "docs/results/fuzz.md")
    if page:
        write_page(results, Path(page), first, " ".join(extra))
    return 1 if any(r.status == SILENT for r in results) else 0
