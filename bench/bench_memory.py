"""Memory benchmark: the peak resident memory of each convert stage, against the model's size.

Converts each model (default: ConvNeXtTiny from the real-network corpus, saved as a `.keras`
file first, random weights) and samples, every 20 ms, the resident memory of this process (the torch
side: fixup, import, compare, gradients), of the fork server and of the TF workers forked
from it (export).  Prints, per stage, the peak above this process's own baseline (its memory after the imports, measured
in the same run) and that peak as a multiple of the model's float32 weights: the figure
that says how large a model fits a machine (a model whose weights are W bytes needs about
``max ratio * W`` on top of the baseline).

Linux only (reads ``/proc``).  Usage: python bench/bench_memory.py [--model file.py:fn ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import provenance  # bench/ is the script's directory, so its first sys.path entry
from rich.console import Console
from rich.table import Table

from pipeline.api import ConvertOptions, convert

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = (f"{REPO / 'models' / 'applications.py'}:ConvNeXtTiny",)
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TRACKED = ("/pipeline/", "/onnx2torch/", "/onnx/", "/onnx_ir/", "/onnxruntime/", "/torch/export/")


def _rss(pid: int) -> int:
    """Resident bytes of process ``pid`` (0 once it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _is_fork_server(pid: int) -> bool:
    try:
        return b"pipeline.export.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _children(pid: int) -> dict[int, list[int]]:
    """``pid``'s children and, per child, that child's own children: the fork server (or a
    spawned TF worker) and the TF workers forked from it."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    return {
        child: [grand for grand, parent in parents.items() if parent == child]
        for child, parent in parents.items()
        if parent == pid
    }


class PeakSampler:
    """Samples the resident memory of this process, of the fork server and of the TF workers
    (the fork server's children; a worker spawned without the fork server counts as a
    worker); keeps each stage's peak of each."""

    def __init__(self, interval: float = 0.02) -> None:
        self.stage = "start"
        self.own: dict[str, int] = {}
        self.server: dict[str, int] = {}
        self.workers: dict[str, int] = {}
        self.where: dict[str, str] = {}
        """Per stage, the main thread's innermost frames in the pipeline and the libraries it
        drives when this process's peak was sampled: where the copies that make it are held."""
        self._main = threading.get_ident()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        pid = os.getpid()
        tick = 0
        kids: dict[int, list[int]] = {}
        while not self._stop.is_set():
            if tick % 10 == 0:  # listing /proc is slow: look for new children every 10 samples
                kids = _children(pid)
            stage = self.stage
            rss = _rss(pid)
            if rss > self.own.get(stage, 0):
                self.own[stage] = rss
                self.where[stage] = self._main_frames()
            servers = [k for k in kids if _is_fork_server(k)]
            server = sum(_rss(k) for k in servers)
            workers = sum(_rss(g) for k in servers for g in kids[k])
            workers += sum(_rss(k) for k in kids if k not in servers)
            self.server[stage] = max(self.server.get(stage, 0), server)
            self.workers[stage] = max(self.workers.get(stage, 0), workers)
            tick += 1
            time.sleep(self._interval)

    def _main_frames(self) -> str:
        frame = sys._current_frames().get(self._main)
        if frame is None:
            return ""
        ours = [
            f"{Path(f.filename).name}:{f.lineno} {f.name}"
            for f in traceback.extract_stack(frame)
            if any(part in f.filename for part in _TRACKED)
        ]
        return " < ".join(reversed(ours[-4:]))

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class StageRow:
    """One stage's peaks, in bytes: this process, its rise above its baseline, the TF
    workers' rise above the fork server (forked pages are shared, so a worker's resident
    memory includes the server's), and the fork server."""

    stage: str
    process: int
    above: int
    worker: int
    server: int
    where: str = ""


@dataclass
class MemoryRun:
    """What :func:`measure` found: the verdict, seconds, weights and per-stage rows."""

    verdict: str
    status: str
    seconds: float
    weights: int
    baseline: int
    rows: list[StageRow]
    stage_seconds: dict[str, float]

    def worst(self) -> float:
        """The largest multiple of the weights any stage held, in either process."""
        return max(max(r.above, r.worker) for r in self.rows) / self.weights


def measure(model: str, options: ConvertOptions, out_dir: Path | None = None) -> MemoryRun:
    """Convert ``model`` once (into ``out_dir``, or a temporary directory) while sampling
    memory; return each stage's peaks."""
    baseline = _rss(os.getpid())
    stage_start: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, PeakSampler() as sampler:

        def on_stage(stage: str) -> None:
            sampler.stage = stage
            stage_start[stage] = time.perf_counter()

        start = time.perf_counter()
        result = convert(model, out_dir or Path(tmp) / "run", options, on_stage=on_stage)
        end = time.perf_counter()
        weights = sum(p.numel() * p.element_size() for p in result.module.parameters())
        weights += sum(b.numel() * b.element_size() for b in result.module.buffers())
        sampler.stage = "done"
        del result.module
    stages = list(stage_start)
    stage_seconds = {
        stage: (stage_start[stages[i + 1]] if i + 1 < len(stages) else end) - stage_start[stage]
        for i, stage in enumerate(stages)
    }
    server_base = max(sampler.server.values(), default=0)
    rows = [
        StageRow(
            stage,
            peak,
            max(0, peak - baseline),
            max(0, sampler.workers.get(stage, 0) - server_base),
            sampler.server.get(stage, 0),
            sampler.where.get(stage, ""),
        )
        for stage, peak in sampler.own.items()
        if stage not in ("start", "done")
    ]
    return MemoryRun(
        result.verdict,
        result.report["parameter_count"].get("status", ""),
        end - start,
        weights,
        baseline,
        rows,
        stage_seconds,
    )


def table_of(run: MemoryRun, title: str) -> Table:
    """The per-stage table of ``run`` (sizes in GB, multiples of the weights)."""
    gb = 1e9
    table = Table(title=f"{title} ({run.verdict}, {run.seconds:.0f} s)")
    columns = ("stage", "seconds", "process", "above baseline", "x weights", "TF worker",
               "x weights ", "fork server")
    for column in columns:
        table.add_column(column, justify="left" if column == "stage" else "right")
    for row in run.rows:
        table.add_row(
            row.stage,
            f"{run.stage_seconds.get(row.stage, 0):.0f}",
            f"{row.process / gb:.2f} GB",
            f"{row.above / gb:.2f} GB",
            f"{row.above / run.weights:.1f}",
            f"{row.worker / gb:.2f} GB" if row.worker else "",
            f"{row.worker / run.weights:.1f}" if row.worker else "",
            f"{row.server / gb:.2f} GB" if row.server else "",
        )
    return table


def where_of(run: MemoryRun) -> str:
    """One line per stage: the frames this process was in when its peak was sampled."""
    return "\n".join(f"peak of {r.stage} at: {r.where}" for r in run.rows if r.where)


_SAVE_FACTORY = """
import importlib.util, sys
from pathlib import Path
location, function, target = sys.argv[1:4]
sys.path.insert(0, str(Path(location).parent))  # the factory's own imports (catalog.py)
spec = importlib.util.spec_from_file_location("bench_factory", location)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
getattr(module, function)().save(target)
"""


def as_keras_file(source: str, directory: Path) -> str:
    """The model of a factory source ``file.py:fn`` saved as ``directory/<fn>.keras`` (built
    in a subprocess: this process must not import TensorFlow), what a user converts; any
    other source as it is.  A factory's own building is not the converter's memory: the
    corpus's BatchNorm calibration alone adds 1.6 GB, 4.6x ConvNeXtBase's weights."""
    location, _, function = source.rpartition(":")
    if not location.endswith(".py"):
        return source
    target = directory / f"{function}.keras"
    if not target.exists():
        directory.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial.keras")
        subprocess.run(
            [sys.executable, "-c", _SAVE_FACTORY, location, function, str(partial)],
            check=True,
            capture_output=True,
        )
        partial.rename(target)
    return str(target)


def main(argv: list[str]) -> int:
    """Convert each ``--model`` once and print its per-stage memory table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        action="append",
        help="a source convert accepts (repeatable; default: "
        + ", ".join(m.split(":")[-1] for m in DEFAULT_MODELS)
        + ")",
    )
    parser.add_argument(
        "--files",
        default="runs/bench_memory",
        help="where factories' models are saved as .keras files (kept for the next run)",
    )
    args = parser.parse_args(argv)
    models = args.model or list(DEFAULT_MODELS)
    console = Console(highlight=False, width=120, record=True)  # recorded for the page
    for model in models:
        name = f"{Path(model.split(':')[0]).name}:{model.split(':')[-1]}"
        source = as_keras_file(model, Path(args.files))
        console.print(f"[bold]{name}[/bold]: converting {source}")
        run = measure(source, ConvertOptions())
        console.print(table_of(run, f"{name}: peak resident memory per stage"))
        console.print(where_of(run), soft_wrap=True)
        console.print(
            f"weights {run.weights / 1e9:.3f} GB; worst peak {run.worst():.2f} x weights; "
            f"baseline (this process after its imports) {run.baseline / 1e9:.2f} GB; TF "
            "workers are measured above the fork server they are forked from"
        )
    provenance.write_page(
        REPO / "docs" / "results" / "bench_memory.md",
        "Memory benchmark: " + ", ".join(m.split(":")[-1] for m in models),
        "Peak resident memory of each convert stage, above this process's baseline measured in "
        "the same run, as a multiple of the model's float32 weights. Each factory's model "
        "is saved as a `.keras` file first and the file is converted, as a user would. "
        "Generated by `make bench-memory`; do not edit by hand.",
        console.export_text(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
