"""Latency benchmark: TensorFlow vs ONNX Runtime vs the converted PyTorch model.

For MobileNetV2 and ConvNeXtTiny (zoo versions, random weights) at batch 1 and 8, prints the
median latency of each framework and its ratio to ONNX Runtime measured in the same run,
plus the seconds each pipeline stage took.  TensorFlow runs in a separate process
(bench/tf_latency.py, a ``tf.function``) because it may not share a process with torch.

PyTorch columns: the ``torch.export`` program (``model.pt2``), and the generated
``torch_model/`` module eager, eager with its weights in ``channels_last`` memory format,
and under ``torch.compile`` (its compile time in the stage table).

Usage: python bench/bench_latency.py [--repeats N] [--models a,b] [--batches 1,8] [--no-compile]
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import provenance  # bench/ is the script's directory, so its first sys.path entry
import torch
from rich.console import Console
from rich.table import Table

from pipeline.api import convert, load_torch
from pipeline.commands.demo import MODELS_DIR
from pipeline.core.ort_runner import OrtRunner
from pipeline.core.signature import TensorSpec
from pipeline.core.torch_runner import run_torch
from pipeline.to_torch.importer import load_program

REPO = Path(__file__).resolve().parents[1]


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in milliseconds after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def tf_median_ms(source: str, inputs_npz: Path, repeats: int) -> float:
    """Median TensorFlow latency, measured in its own process by bench/tf_latency.py."""
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("tf_latency.py")),
            source,
            str(inputs_npz),
            str(repeats),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["median_ms"])


def main() -> None:
    """Run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--models", default="mobilenet_v2,convnext_tiny")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = parser.parse_args()
    console = Console(highlight=False, width=120, record=True)  # recorded for the page
    timing = Table(title="median latency (ms) and ratio to ONNX Runtime")
    for column in (
        "model",
        "batch",
        "onnxruntime",
        "tensorflow",
        "model.pt2",
        "generated (eager)",
        "generated (channels_last)",
        "generated (compiled)",
    ):
        timing.add_column(column, justify="right")
    stages = Table(title="pipeline stage seconds")
    for column in ("model", "export", "fixup", "import", "compare", "compile"):
        stages.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            source = f"{MODELS_DIR / 'zoo.py'}:{name}"
            with console.status(f"converting {name}"):
                result = convert(source, Path(tmp) / name)
            stage_secs = result.report["stages"]
            specs = [TensorSpec.from_json(d) for d in result.report["inputs"]]
            names = [s.name for s in specs]
            outputs = [c["output"] for c in result.report["comparisons"] if c["pair"] == "tf-ort"]
            ort = OrtRunner(onnx.load(str(result.run_dir / "model.onnx")))
            module = load_torch(result.run_dir)
            program = load_program(result.run_dir / "model.pt2")
            channels_last = copy.deepcopy(module).to(memory_format=torch.channels_last)
            compiled = None if args.no_compile else torch.compile(module, fullgraph=True)
            compile_seconds: float | None = None
            for batch in (int(b) for b in args.batches.split(",")):
                rng = np.random.default_rng(0)
                inputs = {
                    s.name: rng.standard_normal(s.concrete_shape(batch)).astype(s.dtype)
                    for s in specs
                }
                npz = Path(tmp) / f"{name}-{batch}.npz"
                np.savez(npz, **inputs)
                runners = {
                    "ort": partial(ort.run, inputs),
                    "program": partial(run_torch, program, inputs, names, outputs),
                    "torch": partial(run_torch, module, inputs, names, outputs),
                    "channels_last": partial(run_torch, channels_last, inputs, names, outputs),
                }
                if compiled is not None:
                    runners["compiled"] = partial(run_torch, compiled, inputs, names, outputs)
                    start = time.perf_counter()
                    runners["compiled"]()  # compiles (again for a new batch size)
                    elapsed = time.perf_counter() - start
                    compile_seconds = elapsed + (compile_seconds or 0.0)
                with console.status(f"timing {name} batch {batch}"):
                    ms: dict[str, float | None] = {
                        key: median_ms(fn, args.repeats) for key, fn in runners.items()
                    }
                    ms["tf"] = tf_median_ms(source, npz, args.repeats)
                ort_ms = ms["ort"]
                assert ort_ms is not None

                def cell(ms: float | None, ort_ms: float = ort_ms) -> str:
                    return "-" if ms is None else f"{ms:.1f} ({ms / ort_ms:.2f}x)"

                timing.add_row(
                    name,
                    str(batch),
                    cell(ort_ms),
                    cell(ms["tf"]),
                    cell(ms["program"]),
                    cell(ms["torch"]),
                    cell(ms["channels_last"]),
                    cell(ms.get("compiled")),
                )
            stages.add_row(
                name,
                *(
                    f"{stage_secs[s]['seconds']:.1f}"
                    for s in ("export", "fixup", "import", "compare")
                ),
                "-" if compile_seconds is None else f"{compile_seconds:.1f}",
            )
    console.print(timing)
    console.print(stages)
    console.print(
        f"ONNX Runtime provider: {ort.provider}; torch threads: {torch.get_num_threads()}"
    )
    provenance.write_page(
        REPO / "docs" / "results" / "bench_latency.md",
        "Latency benchmark",
        "Inference latency of TensorFlow, ONNX Runtime and the converted PyTorch module, as "
        "ratios to ONNX Runtime measured in the same run, and each convert stage's seconds. "
        "Generated by `make bench`; do not edit by hand.",
        console.export_text(),
    )


if __name__ == "__main__":
    main()
