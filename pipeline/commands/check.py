"""Re-check a converted run: the CI equivalence gate.

RUN_DIR is a run directory written by 'tf2torch convert'.  With --golden-only, ONNX Runtime
(model.onnx) and PyTorch (model.pt2, loaded with torch alone) run on the inputs saved in
golden.npz and are compared with the TensorFlow outputs saved there: pairs tf-ort, tf-torch
and ort-torch, tf being golden.npz.  TensorFlow need not be installed.  Without
--golden-only, TensorFlow runs the report's source again on the golden inputs (in a worker
process) and the pairs are golden-tf (saved vs today's TF outputs), tf-ort, tf-torch and
ort-torch.

Tolerances are the ones the run was converted with unless --atol, --rtol or --output-tol
say otherwise.  report.json gets the new comparisons, providers, verdict and a 'checks'
entry (report.md is re-rendered) unless --read-only.  Exit codes: 0 equivalent, 1 not
equivalent, 2 could not check (missing or corrupt run directory, a model that does not
load or run, TensorFlow failing in full mode).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.markup import escape

from pipeline.commands.options import (
    add_tf_loading_options,
    add_tolerance_options,
    parse_output_tolerances,
)
from pipeline.core.console import make_console
from pipeline.core.errors import Tf2TorchError
from pipeline.core.extras import require_tensorflow
from pipeline.export.inputs import parse_input_specs
from pipeline.verify.report import render_table


def add_parser(subparsers: Any, help: str, description: str) -> None:
    """Register ``tf2torch check``."""
    p = subparsers.add_parser(
        "check",
        help=help,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory (see above)")
    p.add_argument(
        "--golden-only",
        action="store_true",
        help="compare ONNX Runtime and PyTorch with golden.npz; no TensorFlow needed",
    )
    p.add_argument(
        "--junit",
        type=Path,
        metavar="FILE.xml",
        help="write JUnit XML: one test case per output and pair",
    )
    add_tolerance_options(p, "the run's")
    p.add_argument(
        "--read-only",
        action="store_true",
        help="do not update report.json and report.md",
    )
    full = p.add_argument_group("full mode (TensorFlow runs again)")
    full.add_argument(
        "--source",
        help="the TF model, when the report's source does not resolve from here "
        "(e.g. converted in another directory)",
    )
    add_tf_loading_options(full)
    p.add_argument(
        "--json", action="store_true", help="print the check as JSON instead of the table"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``tf2torch check``; returns 0 (equivalent) or 1 (not); errors raise (exit 2)."""
    if not args.golden_only:
        require_tensorflow("tf2torch check (without --golden-only)")
    # Imported here, not at the top: `tf2torch --help` and option errors stay fast (torch
    # takes seconds to import).
    from pipeline.verify.check import check_run

    try:
        result = check_run(
            args.run_dir,
            golden_only=args.golden_only,
            atol=args.atol,
            rtol=args.rtol,
            output_tolerances=parse_output_tolerances(args.output_tol),
            source=args.source,
            custom_objects=args.custom_objects,
            safe_mode=not args.unsafe,
            input_specs=parse_input_specs(args.input_spec),
            worker_timeout=args.worker_timeout,
            update_report=not args.read_only,
        )
    except Tf2TorchError as err:
        if args.junit:
            from pipeline.verify.junit import write_error

            write_error(args.run_dir, str(err), args.junit)
        raise
    if args.junit:
        from pipeline.verify.junit import write_result

        write_result(result, args.junit)
    if args.json:
        print(
            json.dumps(
                {
                    **result.to_json(),
                    "run_dir": str(result.run_dir),
                    "comparisons": [c.to_json() for c in result.comparisons],
                },
                indent=2,
            )
        )
        return 0 if result else 1
    console = make_console()
    console.print(
        f"{result.run_dir.name}: {result.mode} check "
        f"(onnxruntime: {result.providers['onnxruntime']}, "
        f"torch: {result.providers['torch_device']}) in {result.seconds:.1f}s",
        markup=False,
    )
    console.print(render_table(c.to_json() for c in result.comparisons))
    if result:
        console.print(
            f"[bold green]PASS[/]: all {len(result.comparisons)} comparisons within tolerance"
        )
    else:
        failed = ", ".join(f"{c.pair} {c.output}" for c in result.failures)
        console.print(
            f"[bold red]FAIL[/]: {len(result.failures)} of {len(result.comparisons)} "
            f"comparisons out of tolerance ({escape(failed)})"
        )
    return 0 if result else 1
