"""Convert a TF model to PyTorch and compare TensorFlow, ONNX Runtime and PyTorch.

SOURCE is a SavedModel directory, a .keras or .h5 file, or a factory returning a Keras
model: path/to/file.py:function or package.module:function.  The run directory receives
model.raw.onnx (tf2onnx), model.onnx (after fixup passes), model.pt2 (torch.export, dynamic
batch), golden.npz (inputs and TF outputs), report.json and report.md.

Each pair (tf-ort, tf-torch, ort-torch) passes when every element of every output satisfies
|a - b| <= atol + rtol*|b| (b: the first framework of the pair).  Default tolerances depend
on the dtype (float32: atol 1e-4, rtol 1e-4).  Exit codes: 0 all pairs agree, 1 a pair
disagrees, 2 the model could not be converted or the input was bad.
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
from pipeline.export.client import prestart_tf_worker
from pipeline.export.inputs import parse_input_ranges, parse_input_specs
from pipeline.export.sources import parse_source
from pipeline.verify.report import print_summary, quiet_line


def default_out_dir(source: str) -> Path:
    """``runs/<name>`` where name is the factory function or the model file's stem."""
    _, sep, function = source.rpartition(":")
    name = function if sep and function.isidentifier() else Path(source.rstrip("/")).stem
    return Path("runs") / (name or "model")


def add_parser(subparsers: Any, help: str, description: str) -> None:
    """Register ``tf2torch convert``."""
    p = subparsers.add_parser(
        "convert",
        help=help,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", help="the TF model (see above)")
    p.add_argument("-o", "--out", type=Path, help="run directory (default: runs/<model name>)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset for tf2onnx (default 17)")
    p.add_argument(
        "--inputs",
        type=Path,
        metavar="NPZ",
        help="comparison inputs, an .npz keyed by input name (default: drawn)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for drawn inputs (default 0)")
    p.add_argument("--batch", type=int, default=2, help="batch size of drawn inputs (default 2)")
    p.add_argument(
        "--input-range",
        action="append",
        default=[],
        metavar="NAME=LO:HI",
        help="half-open value range of an integer input (required for those); repeatable",
    )
    add_tolerance_options(p, "per dtype: float32 1e-4, float16 1e-2, float64 1e-7, ints exact")
    p.add_argument(
        "--patches",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="a directory of extra fixup patches (see README); repeatable",
    )
    add_tf_loading_options(p)
    p.add_argument(
        "--fold-for-inference",
        action="store_true",
        help="fold BatchNormalization into the convolution before it: an inference-only "
        "module (the report lists every folded variable); by default every Keras variable "
        "stays its own parameter and BatchNorm is nn.BatchNorm*d",
    )
    p.add_argument(
        "--keep-batchnorm",
        action="store_true",
        help="accepted for old scripts: BatchNorm is kept (nn.BatchNorm*d) by default",
    )
    p.add_argument(
        "--channels-first",
        action="store_true",
        help="generate torch_model/ taking and returning images channels first (NCHW, as "
        "torchvision models do) instead of Keras's NHWC; the checks still feed NHWC",
    )
    layout = p.add_mutually_exclusive_group()
    layout.add_argument(
        "--flat",
        dest="flat",
        action="store_true",
        default=None,
        help="write every op in the model's forward, one statement each",
    )
    layout.add_argument(
        "--blocks",
        dest="flat",
        action="store_false",
        help="write repeated blocks as nn.Module classes held in nn.ModuleLists "
        "(blocks.2.expand.weight) and attention as F.scaled_dot_product_attention "
        "(the default; see docs/generated-code.md)",
    )
    p.add_argument(
        "--scale",
        metavar="SPEC",
        help="scale Conv/Dense weights before export (transfer learning): global=F, "
        "conv=F,dense=G, or activation (divide each layer by its mean |output| on "
        "--calibration data); all three frameworks are compared on the scaled model",
    )
    p.add_argument(
        "--calibration",
        type=Path,
        metavar="NPZ",
        help="calibration inputs for --scale activation, an .npz keyed by input name",
    )
    p.add_argument(
        "--json", action="store_true", help="print report.json to stdout instead of the table"
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="one line per model: verdict, worst error (or what failed) and seconds",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``tf2torch convert``; returns 0 (pass) or 1 (fail); errors raise."""
    parse_source(args.source)  # a missing or unreadable source fails before torch loads
    require_tensorflow("tf2torch convert")
    prestart_tf_worker()  # TensorFlow's import in the worker overlaps torch's below
    # Imported here, not at the top: `tf2torch --help` and option errors stay fast (torch
    # takes seconds to import).
    from pipeline.api import ConvertOptions, convert

    options = ConvertOptions(
        opset=args.opset,
        batch=args.batch,
        seed=args.seed,
        inputs=args.inputs,
        input_ranges=parse_input_ranges(args.input_range),
        input_specs=parse_input_specs(args.input_spec),
        atol=args.atol,
        rtol=args.rtol,
        output_tolerances=parse_output_tolerances(args.output_tol),
        patches=args.patches,
        custom_objects=args.custom_objects,
        safe_mode=not args.unsafe,
        worker_timeout=args.worker_timeout,
        channels_first=args.channels_first,
        flat=ConvertOptions.flat if args.flat is None else args.flat,
        fold_for_inference=args.fold_for_inference,
        scale=args.scale,
        calibration=args.calibration,
    )
    out_dir = args.out or default_out_dir(args.source)
    console = make_console(stderr=True)
    show_progress = not (args.quiet or args.json)
    if show_progress:
        with console.status("starting") as status:
            result = convert(
                args.source, out_dir, options, on_stage=lambda stage: status.update(f"{stage} ...")
            )
    else:
        result = convert(args.source, out_dir, options)
    if args.json:
        print(json.dumps(result.report, indent=2))
    elif args.quiet:
        print(quiet_line(result.report, str(out_dir)))
    else:
        print_summary(make_console(), result.report)
    return 0 if result else 1
