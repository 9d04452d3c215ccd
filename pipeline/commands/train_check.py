"""Prove the training carries over: K steps of Keras and of the converted module, compared.

RUN is a run directory written by 'tf2torch convert'.  TensorFlow (in a worker process) loads
the run's source again and trains it for --steps steps with Keras's own train_step and its
compiled optimizer, loss, metrics and regularizers (or those of --training-config, a JSON or
TOML file of compile()'s arguments, for SavedModels and uncompiled models).  PyTorch rebuilds
the same optimizer, learning-rate schedule, gradient clipping, loss and regularization for
the converted module (pipeline.training), starts from the same weights, sees the same
batches (drawn from the signature with --seed, or cut from --data) and trains as many
steps.  After every step the loss and every variable are compared through the run's
parameter table; report.json gets a 'training' section (unless --read-only).

Each step is judged against float32's own noise, as convert judges outputs: both
frameworks also train in float64 (Keras's float64 twin, a float64 copy of the torch
module), which measures each one's own float32 drift per step and variable; a variable
passes when max|torch - tf| (and the float64 runs' distance) is within
2*(n_torch + n_tf) + 16*eps*scale.  --rtol/--atol judge with fixed tolerances instead
(rel = ||torch - tf|| / ||tf||, 2-norm over the tensor).  Dropout layers are switched off in TensorFlow (the converted module
comes from an inference graph and has none) and listed in the report.

Exit codes: 0 every step agrees, 1 some step does not, 2 the check could not
run (bad run directory, data or options; an optimizer, schedule, loss or regularizer with no
torch equivalent, named with its config key, before any training).
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
from pipeline.export.inputs import parse_input_ranges, parse_input_specs


def add_parser(subparsers: Any, help: str, description: str) -> None:
    """Register ``tf2torch train-check``."""
    p = subparsers.add_parser(
        "train-check",
        help=help,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", type=Path, metavar="RUN", help="a run directory from convert")
    p.add_argument(
        "--data",
        type=Path,
        metavar="DATA.npz",
        help="training data: inputs by input name (or x), targets as target/<output> (or y)",
    )
    p.add_argument("--steps", type=int, default=10, metavar="K", help="training steps (default 10)")
    p.add_argument("--batch", type=int, default=8, metavar="N", help="batch size (default 8)")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the drawn batches (default 0; step k: seed+k)"
    )
    p.add_argument(
        "--training-config",
        type=Path,
        metavar="FILE",
        help="compile()'s arguments as JSON or TOML (default: the model's own compile())",
    )
    p.add_argument(
        "--rtol",
        type=float,
        default=None,
        help="judge with a fixed relative tolerance instead of the measured float32 noise: "
        "||torch - tf|| / ||tf|| per variable, |torch - tf| / |tf| for the loss",
    )
    p.add_argument(
        "--atol",
        type=float,
        default=None,
        help="judge with a fixed absolute tolerance instead of the measured float32 noise "
        "(a variable passes when max|torch - tf| <= atol or its rel <= --rtol)",
    )
    p.add_argument(
        "--input-range",
        action="append",
        default=[],
        metavar="NAME=LO:HI",
        help="half-open range of an integer input for drawn batches; repeatable",
    )
    p.add_argument(
        "--torch-equivalents",
        metavar="MODULE",
        help="module (file.py or package.module) that registers torch equivalents of custom "
        "optimizers or losses (pipeline.training.register_optimizer / register_loss)",
    )
    p.add_argument(
        "--source",
        help="the TF model, when the report's source does not resolve from here",
    )
    add_tf_loading_options(p)
    p.add_argument("--read-only", action="store_true", help="do not update report.json")
    p.add_argument("--json", action="store_true", help="print the training section as JSON")
    p.set_defaults(run=run)


def _import_equivalents(location: str) -> None:
    import importlib
    import importlib.util

    try:
        if location.endswith(".py"):
            spec = importlib.util.spec_from_file_location("_tf2torch_equivalents", location)
            if spec is None or spec.loader is None or not Path(location).is_file():
                raise FileNotFoundError(location)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            importlib.import_module(location)
    except Exception as err:
        raise BadInputError(
            f"--torch-equivalents {location} failed to import: {type(err).__name__}: {err}"
        ) from None


def render_steps(steps: list[dict[str, Any]], fixed: bool) -> Table:
    """The per-step comparison as a rich table (``fixed``: the fixed rule judged, so the
    table shows ``rel``; else each step's floors and margin)."""
    table = Table(
        title="Keras vs PyTorch, step by step",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    columns = ["step", "loss tf", "loss torch", "lr", "worst variable", "max abs"]
    columns += ["rel"] if fixed else ["floor torch", "floor tf", "atol", "margin"]
    for column in [*columns, "verdict"]:
        table.add_column(column, justify="left" if column == "worst variable" else "right")
    for s in steps:
        worst = s["worst"]
        if not s["loss_error"]["passed"] or (s["loss_error"]["margin"] or 0.0) > (
            worst["margin"] or 0.0
        ):
            worst = s["loss_error"]
        row = [
            str(s["step"]),
            f"{s['loss']['tf']:.6g}",
            f"{s['loss']['torch']:.6g}",
            f"{s['learning_rate']:.3g}",
            escape(worst["variable"]),
            _number(worst["max_abs"]),
        ]
        if fixed:
            row.append(_number(worst["rel"]))
        else:
            row += [
                _number(worst["noise_torch"]),
                _number(worst["noise_tf"]),
                _number(worst["atol"]),
                _number(worst["margin"], ".2f"),
            ]
        table.add_row(*row, "[green]PASS[/]" if s["passed"] else "[red]FAIL[/]")
    return table


def _number(value: float | None, spec: str = ".1e") -> str:
    return "-" if value is None else format(value, spec)


def run(args: argparse.Namespace) -> int:
    """Run ``tf2torch train-check``; returns 0 (agree) or 1 (not); errors raise (exit 2)."""
    for name in ("rtol", "atol"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise BadInputError(f"--{name} must be positive")
    ranges = parse_input_ranges(args.input_range)
    specs = parse_input_specs(args.input_spec)
    if args.torch_equivalents:
        _import_equivalents(args.torch_equivalents)
    # Imported here: `tf2torch --help` and option errors stay fast (torch takes seconds).
    from pipeline.training.check import train_check

    result = train_check(
        args.run_dir,
        steps=args.steps,
        batch=args.batch,
        seed=args.seed,
        data=args.data,
        training_config=args.training_config,
        rtol=args.rtol,
        atol=args.atol,
        source=args.source,
        custom_objects=args.custom_objects,
        safe_mode=not args.unsafe,
        input_specs=specs,
        input_ranges=ranges,
        worker_timeout=args.worker_timeout,
        update_report=not args.read_only,
    )
    section = result.to_json()
    if args.json:
        print(json.dumps(section, indent=2))
        return 0 if result else 1
    console = make_console()
    opt = result.config.optimizer
    lr = opt.learning_rate
    losses = ", ".join(f"{t.output}: {t.name}" for t in result.config.losses)
    console.print(
        f"{args.run_dir.name}: {len(result.steps)} steps, batch {result.batch} ({result.data}); "
        f"{opt.class_name} (lr {f'{lr:.4g}' if isinstance(lr, float) else lr.class_name}), "
        f"loss {losses}"
        f" [{result.config.origin}] in {result.seconds:.1f}s",
        markup=False,
    )
    if result.dropout:
        layers = ", ".join(d["layer"] for d in result.dropout)
        console.print(
            f"dropout switched off in TensorFlow (none in the torch module): {layers}", markup=False
        )
    console.print(render_steps(section["steps"], result.rule.kind == "fixed"))
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
    if result.rule.kind == "fixed":
        rule = (f"within rtol {result.rule.rtol:g}" if result.rule.rtol else "") + (
            f" or atol {result.rule.atol:g}" if result.rule.atol else ""
        )
    else:
        rule = (
            "within float32 noise (each framework's own drift from its float64 run; "
            f"worst margin {result.worst_margin:.2f} of the tolerance)"
        )
    if result:
        console.print(
            f"[bold green]PASS[/]: loss and every variable {escape(rule.strip())} "
            f"after each of {len(result.steps)} steps"
        )
    else:
        bad = [s for s in result.steps if not s.passed]
        first = bad[0].worst if bad[0].loss.passed else bad[0].loss
        console.print(
            f"[bold red]FAIL[/]: {len(bad)} of {len(result.steps)} steps not "
            f"{escape(rule.split(' (')[0].strip())} (first: step {bad[0].step}, "
            f"{escape(first.variable)})"
        )
    return 0 if result else 1
