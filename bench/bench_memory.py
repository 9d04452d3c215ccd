"""Memory benchmark: the peak resident memory of each convert stage, against the model's size.

Converts one model (default: ConvNeXtTiny from the real-network corpus, random weights) and
samples, every 20 ms, the resident memory of this process (the torch side: fixup, import,
compare, gradients) and of its children (the TensorFlow worker: export).  Prints, per
stage, the peak above this process's own baseline (its memory after the imports, measured
in the same run) and that peak as a multiple of the model's float32 weights: the figure
that says how large a model fits a machine (a model whose weights are W bytes needs about
``max ratio * W`` on top of the baseline).

Linux only (reads ``/proc``).  Usage: python bench/bench_memory.py [--model file.py:fn]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import provenance  # bench/ is the script's directory, so its first sys.path entry
from rich.console import Console
from rich.table import Table

from pipeline.api import ConvertOptions, convert

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = f"{REPO / 'models' / 'applications.py'}:ConvNeXtTiny"
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss(pid: int) -> int:
    """Resident bytes of process ``pid`` (0 once it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the TF worker is one)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


class PeakSampler:
    """Samples this process's and its children's resident memory; keeps each stage's peak."""

    def __init__(self, interval: float = 0.02) -> None:
        self.stage = "start"
        self.own: dict[str, int] = {}
        self.children: dict[str, int] = {}
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        pid = os.getpid()
        tick = 0
        kids: list[int] = []
        while not self._stop.is_set():
            if tick % 10 == 0:  # listing /proc is slow: look for new children every 10 samples
                kids = _children(pid)
            stage = self.stage
            self.own[stage] = max(self.own.get(stage, 0), _rss(pid))
            child = sum(_rss(k) for k in kids)
            self.children[stage] = max(self.children.get(stage, 0), child)
            tick += 1
            time.sleep(self._interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main(argv: list[str]) -> int:
    """Convert ``--model`` once and print the per-stage memory table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a source convert accepts")
    args = parser.parse_args(argv)
    console = Console(highlight=False, width=120, record=True)  # recorded for the page
    baseline = _rss(os.getpid())
    with tempfile.TemporaryDirectory() as tmp, PeakSampler() as sampler:

        def on_stage(stage: str) -> None:
            sampler.stage = stage

        start = time.perf_counter()
        result = convert(args.model, Path(tmp) / "run", ConvertOptions(), on_stage=on_stage)
        seconds = time.perf_counter() - start
        weights = sum(p.numel() * p.element_size() for p in result.module.parameters())
        weights += sum(b.numel() * b.element_size() for b in result.module.buffers())
        sampler.stage = "done"
    gb = 1e9
    table = Table(title=f"peak resident memory per stage ({result.verdict}, {seconds:.0f} s)")
    for column in ("stage", "process", "above baseline", "x weights", "TF worker"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage, peak in sampler.own.items():
        if stage in ("start", "done"):
            continue
        above = max(0, peak - baseline)
        child = sampler.children.get(stage, 0)
        table.add_row(
            stage,
            f"{peak / gb:.2f} GB",
            f"{above / gb:.2f} GB",
            f"{above / weights:.1f}",
            f"{child / gb:.2f} GB" if child else "",
        )
    console.print(table)
    console.print(
        f"weights {weights / gb:.3f} GB; baseline (this process after its imports) "
        f"{baseline / gb:.2f} GB"
    )
    provenance.write_page(
        REPO / "docs" / "results" / "bench_memory.md",
        f"Memory benchmark: {Path(args.model.split(':')[0]).name}:{args.model.split(':')[-1]}",
        "Peak resident memory of each convert stage, above this process's baseline measured in "
        "the same run, as a multiple of the model's float32 weights. Generated by "
        "`make bench-memory`; do not edit by hand.",
        console.export_text(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
