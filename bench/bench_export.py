"""Export-time benchmark: the provenance export against the frozen export it replaced.

For each zoo model (``models/zoo.py``, random weights) it times, in this one TensorFlow
process and on the same loaded model:

- ``frozen``: ``tf2onnx.convert.from_keras``, the route every run took before variables were
  exported as their own initializers (grappler and tf2onnx fold what they can);
- ``stateless``: what a run does today (:func:`export_stateless`: ``stateless_call`` with the
  variables as graph inputs, each then its own named initializer with its provenance).

It prints the median of ``--repeats`` runs of each (after one warm-up run of both) and the
ratio stateless / frozen; the target is at most 1.2.  TensorFlow only: no torch is imported.

Usage: python bench/bench_export.py [--repeats N] [--models a,b]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.catalog import ZOO  # noqa: E402
from pipeline.core.signature import TensorSpec  # noqa: E402

OPSET = 17


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints one row per model and the overall ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", help="comma-separated zoo names (default: all fast ones)")
    args = parser.parse_args(argv)

    from pipeline.export.worker.loading import load_model
    from pipeline.export.worker.onnx_export import export_keras
    from pipeline.export.worker.stateless_export import export_stateless

    names = args.models.split(",") if args.models else [n for n, e in ZOO.items() if not e.slow]
    print(f"{'model':28} {'frozen s':>9} {'stateless s':>12} {'ratio':>6}")
    totals = [0.0, 0.0]
    for name in names:
        loaded = load_model(
            {
                "source": {
                    "kind": "factory_file",
                    "location": str(REPO / "models" / "zoo.py"),
                    "function": name,
                },
                "safe_mode": True,
            }
        )
        model = loaded.keras_model
        specs: list[TensorSpec] = loaded.inputs
        paths = [v.path for v in loaded.variables]

        frozen = functools.partial(export_keras, model, specs, OPSET)
        stateless = functools.partial(export_stateless, model, specs, OPSET, paths)

        frozen(), stateless()  # warm-up: TF's first trace of each path
        before = _median_seconds(frozen, args.repeats)
        after = _median_seconds(stateless, args.repeats)
        totals[0] += before
        totals[1] += after
        print(f"{name:28} {before:9.2f} {after:12.2f} {after / before:6.2f}", flush=True)
    print(f"{'total':28} {totals[0]:9.2f} {totals[1]:12.2f} {totals[1] / totals[0]:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
