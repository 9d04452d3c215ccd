"""Convert every model of a TOML manifest, N at a time, into ROOT/<name>; resumable.

The manifest has an optional [defaults] table and one [[models]] table per model:

    [defaults]
    opset = 17

    [[models]]
    name = "tagger"                       # unique; run directory ROOT/tagger
    source = "models/tagger.keras"        # as 'tf2torch convert' takes it
    input_ranges = { tokens = [0, 50] }   # optional, as are all keys below

Model keys: name, source, inputs (.npz), input_ranges, input_specs, atol, rtol,
output_tolerances ({ OUTPUT = [ATOL, RTOL] }), patches (directory or list), opset, seed,
batch, fold_for_inference, keep_batchnorm, custom_objects, unsafe, worker_timeout, timeout
(this model's --timeout), memory (what its Ray task asks for, e.g. "8GB").  Paths are
relative to the manifest.  The manifest is checked before anything runs.

Each model converts in its own process; one that fails does not stop the others, and one
that runs past --timeout is killed with its TensorFlow worker.  ROOT/summary.json lists each
model's verdict (pass, fail, error, timeout), error and run directory; per-model logs are in
ROOT/.migrate/.  --resume keeps complete runs whose source, files and settings are unchanged.

--shard K/N converts only the K-th of N slices of the manifest (a model's shard follows
from its name alone), for CI matrices; 'tf2torch migrate-merge' joins the shards' summaries.
--ray ADDRESS runs each model as a task on a Ray cluster ('auto': the cluster this machine
belongs to; 'local': a private one on this machine with --jobs CPUs); ROOT and the manifest's
paths must then be on storage every node sees.  Needs pip install 'tf2torch[ray]'.
See docs/migration.md.

Exit codes: 0 every model passed, 1 a model failed, errored or timed out, 2 the manifest or
an option is invalid (nothing converted).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.core.console import make_console
from pipeline.core.extras import require_tensorflow
from pipeline.migration import (
    DEFAULT_RAY_RETRIES,
    DEFAULT_TIMEOUT,
    PAIRS,
    STAGES,
    MigrationEvent,
    MigrationResult,
    ModelResult,
    load_manifest,
    migrate,
    parse_shard,
    select_shard,
)

COLOURS = {"pass": "green", "fail": "red", "error": "red", "timeout": "magenta"}


def add_parser(subparsers: Any, help: str, description: str) -> None:
    """Register ``tf2torch migrate``."""
    p = subparsers.add_parser(
        "migrate",
        help=help,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("manifest", type=Path, help="the migration manifest (.toml)")
    p.add_argument(
        "-o", "--out", type=Path, required=True, metavar="ROOT", help="parent of the run dirs"
    )
    p.add_argument("-j", "--jobs", type=int, default=1, help="models converted at once (default 1)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep complete runs whose source, files and settings have not changed",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="kill a model's conversion (with its TF worker) after this long, unless its "
        f"manifest entry sets timeout (default {DEFAULT_TIMEOUT:g})",
    )
    p.add_argument(
        "--shard",
        metavar="K/N",
        help="convert only the K-th of N deterministic slices of the manifest (CI matrices; "
        "join them with migrate-merge)",
    )
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run each model as a task on a Ray cluster: its address, 'auto' (the cluster "
        "this machine is part of) or 'local' (a private one here with --jobs CPUs)",
    )
    p.add_argument(
        "--ray-retries",
        type=int,
        default=DEFAULT_RAY_RETRIES,
        metavar="N",
        help=f"reruns of a model whose Ray worker or node was lost (default {DEFAULT_RAY_RETRIES})",
    )
    p.add_argument(
        "--junit", type=Path, metavar="FILE", help="write JUnit XML: one test case per model"
    )
    p.add_argument(
        "--json", action="store_true", help="print summary.json to stdout instead of the table"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.set_defaults(run=run)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1e}"


def _verdict_text(result: ModelResult) -> str:
    colour = COLOURS.get(result.verdict, "red")
    return f"[{colour}]{result.verdict.upper()}[/]"


def summary_table(result: MigrationResult) -> Table:
    """The end-of-run table: model, verdict, worst max |a-b| per pair, seconds, note."""
    table = Table(title=f"migration into {result.root}", title_justify="left")
    table.add_column("model")
    table.add_column("verdict")
    for pair in PAIRS:
        table.add_column(pair, justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("note")
    for model in result.models:
        note = model.error_message or ("resumed: unchanged run kept" if model.resumed else "")
        table.add_row(
            escape(model.name),
            _verdict_text(model),
            *(_fmt(model.worst.get(pair)) for pair in PAIRS),
            f"{model.seconds:.1f}",
            escape(note),
        )
    return table


class _Display:
    """A progress bar per model showing its current stage (terminal), or a line per model."""

    def __init__(self, console: Console, names: list[str], live: bool) -> None:
        self.console, self.live = console, live
        self.progress = Progress(
            TextColumn("{task.fields[name]:<28}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[stage]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not live,
        )
        self.tasks: dict[str, TaskID] = {
            name: self.progress.add_task(
                name, total=len(STAGES), name=name, stage="queued", start=False
            )
            for name in names
        }

    def __call__(self, event: MigrationEvent) -> None:
        task = self.tasks[event.name]
        if event.stage in STAGES:
            if event.stage == "starting":
                self.progress.start_task(task)
            self.progress.update(
                task, completed=STAGES.index(event.stage), stage=f"{event.stage} ..."
            )
        elif event.result is not None:
            result = event.result
            label = "resumed " + result.verdict if result.resumed else result.verdict
            self.progress.update(
                task,
                completed=len(STAGES),
                stage=f"[{COLOURS.get(result.verdict, 'red')}]{label}[/]",
            )
            self.progress.stop_task(task)
            if not self.live:
                line = f"{result.verdict.upper():7} {result.name:28} {result.seconds:6.1f}s"
                if result.resumed:
                    line += "  (resumed)"
                elif result.error_message:
                    line += f"  {result.error_message}"
                self.console.print(line, markup=False)


def run(args: argparse.Namespace) -> int:
    """Run ``tf2torch migrate``; returns 0 when every model passed, 1 otherwise."""
    manifest = load_manifest(args.manifest)  # invalid: raises before anything starts
    shard = parse_shard(args.shard) if args.shard is not None else None
    if args.ray is not None:
        from pipeline.migration.ray_backend import require_ray

        require_ray()
    if args.ray is None or args.ray == "local":  # on a cluster, TensorFlow runs on the nodes
        require_tensorflow("tf2torch migrate")
    console = make_console(stderr=True)
    names = [m.name for m in select_shard(manifest.models, shard)]
    display = _Display(console, names, live=console.is_terminal and not args.quiet)
    with display.progress:
        result = migrate(
            args.manifest,
            args.out,
            jobs=args.jobs,
            resume=args.resume,
            timeout=args.timeout,
            on_event=None if args.quiet else display,
            shard=shard,
            ray=args.ray,
            ray_retries=args.ray_retries,
            junit=args.junit,
        )
    if args.json:
        print(result.summary_path.read_text(), end="")
    else:
        out = make_console()
        out.print(summary_table(result))
        counts = ", ".join(f"{n} {v}" for v, n in result.counts().items() if n)
        out.print(f"{counts} in {result.seconds:.1f} s; summary: {result.summary_path}")
    return result.exit_code
