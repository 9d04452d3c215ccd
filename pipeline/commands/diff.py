"""Find where TensorFlow, ONNX Runtime and PyTorch part ways, node by node, in a run.

RUN_DIR is a run directory written by 'tf2torch convert'.  Its inputs (golden.npz) go
through TensorFlow (the frozen graph tf2onnx converted, in a worker process), ONNX Runtime
(every node output exposed, one run) and PyTorch (model.onnx imported again, every module
call recorded); each ONNX node's outputs are compared for each pair (tf-ort, tf-torch,
ort-torch) under the run's tolerances.  For each pair the first divergent node -- the first
whose outputs exceed tolerance although its inputs were within it -- is run again on the
reference framework's inputs to tell whether the node itself is wrong (self error) or only
inherits error, and repro/<pair>/ gets a minimal ONNX model, its inputs, the reference
outputs and a script that shows the divergence without TensorFlow.

Writes diff.json and diff.html (with a plot of error against depth) into RUN_DIR.  Exit
codes: 0 no node diverges, 1 a node diverges, 2 the run could not be read or replayed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pipeline.commands.options import (
    add_tf_loading_options,
    add_tolerance_options,
    parse_output_tolerances,
)
from pipeline.core.console import make_console
from pipeline.core.extras import require_tensorflow
from pipeline.export.inputs import parse_input_specs


def add_parser(subparsers: Any, help: str, description: str) -> None:
    """Register ``tf2torch diff``."""
    p = subparsers.add_parser(
        "diff",
        help=help,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory from convert")
    p.add_argument(
        "--top",
        type=int,
        default=20,
        metavar="N",
        help="table rows: the N nodes furthest beyond tolerance plus each pair's first "
        "divergence, in graph order (default 20; 0 shows every node)",
    )
    add_tolerance_options(p, "the run's", target="TENSOR")
    p.add_argument(
        "--patches",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="the --patches DIR the run was converted with; repeatable",
    )
    p.add_argument(
        "--source",
        help="the TF model, when report.json's source does not resolve from here",
    )
    p.add_argument(
        "--no-tf",
        action="store_true",
        help="compare ONNX Runtime and PyTorch only (TensorFlow not needed)",
    )
    p.add_argument("--no-repro", action="store_true", help="do not write repro/")
    add_tf_loading_options(p)
    p.add_argument("--json", action="store_true", help="print diff.json instead of the table")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``tf2torch diff``; returns 0 (no divergence) or 1; errors raise."""
    require_tensorflow("tf2torch diff")
    # Imported here, not at the top: `tf2torch --help` and option errors stay fast (torch
    # takes seconds to import).
    from pipeline.diff import DiffOptions, run_diff
    from pipeline.diff.report import print_diff

    options = DiffOptions(
        atol=args.atol,
        rtol=args.rtol,
        output_tolerances=parse_output_tolerances(args.output_tol),
        patches=args.patches,
        source=args.source,
        custom_objects=args.custom_objects,
        safe_mode=not args.unsafe,
        input_specs=parse_input_specs(args.input_spec),
        worker_timeout=args.worker_timeout,
        tf=not args.no_tf,
        repro=not args.no_repro,
    )
    if args.quiet or args.json:
        result = run_diff(args.run_dir, options)
    else:
        with make_console(stderr=True).status("starting") as status:
            result = run_diff(
                args.run_dir, options, on_stage=lambda stage: status.update(f"{stage} ...")
            )
    if args.json:
        print(json.dumps(result.data, indent=2))
    else:
        print_diff(make_console(), result.data, args.top)
    return 0 if result else 1
