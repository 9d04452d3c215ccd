"""Ray benchmark: the zoo through ``migrate`` locally (``--jobs 2``) and on a local Ray cluster
with 2 CPUs (``--ray local --jobs 2``), same machine, same run, alternating.

Prints, per model, its conversion seconds under each backend (the child process's wall time,
as the summary records it) and their ratio, then per run the wall time of the whole
migration, the seconds per model (wall / models) and, for Ray, the fixed cost of starting and
stopping the cluster.  Ray's overhead per model is the ratio of seconds per model, Ray over
local.  Writes docs/results/bench_ray.md.

Usage: python bench/bench_ray.py [--repeat N] [--models a,b,...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import provenance  # bench/ is the script's directory, so its first sys.path entry
from rich.console import Console
from rich.table import Table

from pipeline.migration import MigrationResult, migrate

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "results" / "bench_ray.md"


def _catalog() -> dict[str, object]:
    """models/catalog.py's ZOO, imported without TensorFlow."""
    sys.path.insert(0, str(REPO / "models"))
    import catalog

    return dict(catalog.ZOO)


def write_manifest(path: Path, names: list[str]) -> Path:
    """A manifest of the zoo models ``names`` (their catalog settings, the zoo's defaults)."""
    zoo = _catalog()
    tables = ["[defaults]\nopset = 17\nseed = 0\nbatch = 2\n"]
    for name in names:
        entry = zoo[name]
        lines = [
            "[[models]]",
            f'name = "{name}"',
            f'source = "{REPO / "models" / "zoo.py"}:{name}"',
        ]
        ranges = getattr(entry, "input_ranges", {})
        if ranges:
            inner = ", ".join(f"{k} = [{lo}, {hi}]" for k, (lo, hi) in ranges.items())
            lines.append(f"input_ranges = {{ {inner} }}")
        if getattr(entry, "keep_batchnorm", False):
            lines.append("keep_batchnorm = true")
        tables.append("\n".join(lines) + "\n")
    path.write_text("\n".join(tables))
    return path


def run_once(manifest: Path, root: Path, ray: str | None) -> tuple[MigrationResult, float]:
    """One migration; returns the result and its wall seconds (Ray's start and stop included)."""
    start = time.perf_counter()
    result = migrate(manifest, root, jobs=2, ray=ray, timeout=900)
    return result, time.perf_counter() - start


def main(argv: list[str]) -> int:
    """Run the comparison ``--repeat`` times and write the page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="local/Ray pairs (alternating)")
    parser.add_argument("--models", help="comma-separated zoo names (default: the fast zoo)")
    args = parser.parse_args(argv)
    zoo = _catalog()
    names = (
        args.models.split(",")
        if args.models
        else [n for n, e in zoo.items() if not getattr(e, "slow", False)]
    )
    console = Console(highlight=False, width=120, record=True)
    per_model: dict[str, dict[str, list[float]]] = {n: {"local": [], "ray": []} for n in names}
    runs = Table(title="whole migrations (2 models at a time either way)")
    for column in ("run", "backend", "verdicts", "wall s", "s / model", "Ray start+stop s"):
        runs.add_column(column, justify="left" if column in ("backend", "verdicts") else "right")
    wall: dict[str, list[float]] = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_manifest(Path(tmp) / "zoo.toml", names)
        for repeat in range(1, args.repeat + 1):
            for backend in ("local", "ray"):
                root = Path(tmp) / f"{backend}{repeat}"
                result, seconds = run_once(manifest, root, "local" if backend == "ray" else None)
                counts = ", ".join(f"{n} {v}" for v, n in result.counts().items() if n)
                for model in result.models:
                    per_model[model.name][backend].append(model.seconds)
                wall[backend].append(seconds)
                fixed = f"{seconds - result.seconds:.1f}" if backend == "ray" else ""
                runs.add_row(
                    str(repeat),
                    backend,
                    counts,
                    f"{seconds:.1f}",
                    f"{seconds / len(names):.2f}",
                    fixed,
                )
                console.print(f"run {repeat} {backend}: {counts} in {seconds:.1f} s", style="dim")
    table = Table(title="per model: conversion seconds (median over runs)")
    for column in ("model", "local", "Ray", "Ray / local"):
        table.add_column(column, justify="left" if column == "model" else "right")
    ratios = []
    for name in names:
        local = statistics.median(per_model[name]["local"])
        ray = statistics.median(per_model[name]["ray"])
        ratios.append(ray / local)
        table.add_row(name, f"{local:.1f}", f"{ray:.1f}", f"{ray / local:.2f}")
    console.print(table)
    console.print(runs)
    local_wall, ray_wall = statistics.median(wall["local"]), statistics.median(wall["ray"])
    console.print(
        f"{len(names)} models. Seconds per model (median wall / models): local "
        f"{local_wall / len(names):.2f}, Ray {ray_wall / len(names):.2f}: "
        f"Ray / local = {ray_wall / local_wall:.2f}. Median per-model conversion ratio "
        f"{statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f}). "
        f"ray {provenance.version('ray')}."
    )
    provenance.write_page(
        PAGE,
        "Ray benchmark: local scheduler vs a local Ray cluster",
        "The fast zoo through `tf2torch migrate` with `--jobs 2` and with `--ray local --jobs 2` "
        "(a Ray instance with 2 CPUs started by the run), alternating in the same run on the "
        "same machine. Per-model seconds are each conversion's wall time; 's / model' is the "
        "whole migration's wall time over the number of models, Ray's start and stop included. "
        "Generated by `make bench-ray`; do not edit by hand.",
        console.export_text(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
