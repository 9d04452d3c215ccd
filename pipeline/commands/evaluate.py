"""Evaluate the compiled metrics with Keras and with PyTorch on the same data, and compare.

RUN is a run directory written by 'tf2torch convert'.  TensorFlow (in a worker process) runs
Keras's own model.evaluate on every sample of --data with the model's compiled loss and
metrics (or those of --training-config); PyTorch runs the converted module on the same
batches and computes the same loss and metrics.  Each value must agree within --rtol
(|torch - tf| / |tf|); a metric PyTorch does not reproduce is listed and not judged.
report.json gets an 'evaluation' section (unless --read-only).

Exit codes: 0 every value agrees, 1 some value does not, 2 the evaluation could not run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from pipeline.commands.options import add_tf_loading_options
from pipeline.core.console import make_console
from pipeline.core.errors import BadInputError
from pipeline.export.inputs import parse_input_specs


def add_parser(subparsers: Any, help: str, description: str) -> None:
    """Register ``tf2torch evaluate``."""
    p = subparsers.add_parser(
        "evaluate",
        help=help,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", type=Path, metavar="RUN", help="a run directory from convert")
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        metavar="DATA.npz",
        help="inputs by input name (or x), targets as target/<output> (or y)",
    )
    p.add_argument("--batch", type=int, default=32, metavar="N", help="batch size (default 32)")
    p.add_argument(
        "--training-config",
        type=Path,
        metavar="FILE",
        help="compile()'s arguments as JSON or TOML (default: the model's own compile())",
    )
    p.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance (default 1e-5)")
    p.add_argument("--source", help="the TF model, when the report's source does not resolve")
    add_tf_loading_options(p)
    p.add_argument("--read-only", action="store_true", help="do not update report.json")
    p.add_argument("--json", action="store_true", help="print the evaluation as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``tf2torch evaluate``; returns 0 (agree) or 1 (not); errors raise (exit 2)."""
    if args.rtol <= 0:
        raise BadInputError("--rtol must be positive")
    specs = parse_input_specs(args.input_spec)
    from pipeline.training.evaluate import evaluate_run

    result = evaluate_run(
        args.run_dir,
        args.data,
        batch=args.batch,
        training_config=args.training_config,
        rtol=args.rtol,
        source=args.source,
        custom_objects=args.custom_objects,
        safe_mode=not args.unsafe,
        input_specs=specs,
        worker_timeout=args.worker_timeout,
        update_report=not args.read_only,
    )
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0 if result else 1
    console = make_console()
    console.print(
        f"{args.run_dir.name}: {result.samples} samples of {result.data}, batch {result.batch}, "
        f"in {result.seconds:.1f}s",
        markup=False,
    )
    table = Table(
        title="Keras evaluate vs PyTorch",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for column in ("value", "output", "metric", "keras", "torch", "rel", "verdict"):
        table.add_column(
            column, justify="left" if column in ("value", "output", "metric") else "right"
        )
    for v in result.values:
        verdict = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "not compared"}[v.passed]
        table.add_row(
            escape(v.key),
            escape(v.output or "-"),
            escape(v.name),
            f"{v.tf:.6g}",
            "-" if v.torch is None else f"{v.torch:.6g}",
            "-" if v.rel is None else f"{v.rel:.1e}",
            verdict,
        )
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
    judged = [v for v in result.values if v.passed is not None]
    if result:
        console.print(f"[bold green]PASS[/]: {len(judged)} values within {result.rtol:g}")
    else:
        bad = ", ".join(escape(v.key) for v in result.values if v.passed is False)
        console.print(f"[bold red]FAIL[/]: {bad} beyond {result.rtol:g}")
    return 0 if result else 1
