"""Convert every model of the bundled zoo (models/) and print one summary line per model.

Each model goes to OUT/<name>.  A model is "as expected" when it passes all three pairs, or,
for a model the zoo marks as not convertible yet, when it fails with the clear
unsupported-op error.  Exit code 0 when every model is as expected, 1 otherwise.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.markup import escape
from rich.status import Status

from pipeline.core.console import make_console
from pipeline.core.errors import BadInputError, Tf2TorchError, UnsupportedOpsError
from pipeline.core.extras import require_tensorflow

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


def load_catalog() -> ModuleType:
    """Import ``models/catalog.py`` (the zoo's TensorFlow-free index) from the repository."""
    path = MODELS_DIR / "catalog.py"
    if not path.is_file():
        raise BadInputError(f"the model zoo is not here ({path}); run from a tf2torch checkout")
    spec = importlib.util.spec_from_file_location("tf2torch_zoo_catalog", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def add_parser(subparsers: Any, help: str, description: str) -> None:
    """Register ``tf2torch demo``."""
    p = subparsers.add_parser("demo", help=help, description=description)
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path("runs"),
        help="parent directory of the runs (default: runs)",
    )
    p.add_argument(
        "--skip-slow",
        action="store_true",
        help="skip the large real networks (MobileNetV2, ConvNeXtTiny)",
    )
    p.add_argument("models", nargs="*", help="only these zoo models (default: all)")
    p.set_defaults(run=run)


def _worst(comparisons: list[dict[str, Any]], pair: str) -> str:
    values = [c["max_abs"] for c in comparisons if c["pair"] == pair]
    if not values or any(v is None for v in values):
        return f"{pair} n/a"
    return f"{pair} {max(values):.1e}"


def _show_stage(status: Status, name: str, stage: str) -> None:
    status.update(f"{name}: {stage} ...")


def run(args: argparse.Namespace) -> int:
    """Run ``tf2torch demo``; returns 0 when every model behaved as the zoo expects."""
    require_tensorflow("tf2torch demo")
    # Imported here, not at the top: `tf2torch --help` and option errors stay fast (torch
    # takes seconds to import).
    from pipeline.api import ConvertOptions, convert

    zoo = load_catalog().ZOO
    unknown = sorted(set(args.models) - set(zoo))
    if unknown:
        raise BadInputError(f"unknown zoo model(s): {', '.join(unknown)}; known: {', '.join(zoo)}")
    console = make_console()
    all_as_expected = True
    for name, entry in zoo.items():
        if (args.models and name not in args.models) or (args.skip_slow and entry.slow):
            continue
        options = ConvertOptions(
            input_ranges=dict(entry.input_ranges), keep_batchnorm=entry.keep_batchnorm
        )
        start = time.perf_counter()
        with console.status(f"{name}: starting") as status:
            try:
                result = convert(
                    f"{MODELS_DIR / 'zoo.py'}:{name}",
                    args.out / name,
                    options,
                    on_stage=functools.partial(_show_stage, status, name),
                )
                verdict = result.verdict
                detail = "  ".join(
                    _worst(result.report["comparisons"], p)
                    for p in ("tf-ort", "tf-torch", "ort-torch")
                )
                grads = result.report["gradients"]
                count = result.report["parameter_count"]
                detail += (
                    f"  params {count['torch_trainable']:,}"
                    f"{'' if count['pass'] else ' (count differs)'}"
                    f"  grads {sum(g['pass'] for g in grads)}/{len(grads)}"
                )
                unsupported = False
            except Tf2TorchError as err:
                verdict, detail = "error", str(err)
                unsupported = isinstance(err, UnsupportedOpsError)
        seconds = time.perf_counter() - start
        as_expected = verdict == "pass" if entry.expected == "pass" else unsupported
        all_as_expected &= as_expected
        colour = "green" if verdict == "pass" else ("yellow" if as_expected else "red")
        note = "" if entry.expected == "pass" else f" (expected: {entry.expected})"
        console.print(
            f"[{colour}]{verdict.upper():5}[/] {name:26} {seconds:6.1f}s  {escape(detail + note)}"
        )
    return 0 if all_as_expected else 1
