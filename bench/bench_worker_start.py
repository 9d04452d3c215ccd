"""Worker-start benchmark: TF workers forked from the fork server against new processes.

Converts the same zoo models one after another in this one process, as a script or a test
suite does, once with every TF worker spawned as a new ``python -m`` process
(``TF2TORCH_FORKSERVER=0``, the baseline) and once forked from the fork server
(:mod:`pipeline.export.forkserver`; its start-up, the TensorFlow import, is paid by the first
conversion and counted).  Rounds alternate the two so that machine load hits both alike.

It prints per mode the median over rounds of the summed export-stage seconds and of the wall
seconds, and the ratio forkserver / spawn.

Usage: python bench/bench_worker_start.py [--rounds N] [--models a,b]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline import api  # noqa: E402
from pipeline.export import forkserver  # noqa: E402

DEFAULT_MODELS = "linear_regression,dense_relu,cnn,conv_bn_dropout,self_attention"


def _convert_all(models: list[str], spawn: bool, work: Path) -> tuple[float, float]:
    """Convert every model; return (summed export-stage seconds, wall seconds)."""
    os.environ["TF2TORCH_FORKSERVER"] = "0" if spawn else "1"
    forkserver._drop_server()  # each round starts without a server, as a new process would
    export = 0.0
    start = time.perf_counter()
    for name in models:
        result = api.convert(f"{REPO / 'models' / 'zoo.py'}:{name}", work / name)
        export += result.report["stages"]["export"]["seconds"]
    return export, time.perf_counter() - start


def main() -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models", default=DEFAULT_MODELS)
    args = parser.parse_args()
    models = args.models.split(",")
    seconds: dict[str, list[tuple[float, float]]] = {"spawn": [], "forkserver": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = ["spawn", "forkserver"] if round_ % 2 == 0 else ["forkserver", "spawn"]
            for mode in order:
                seconds[mode].append(_convert_all(models, mode == "spawn", Path(tmp) / mode))
                print(
                    f"round {round_ + 1} {mode:10s} export {seconds[mode][-1][0]:6.1f} s  "
                    f"wall {seconds[mode][-1][1]:6.1f} s",
                    flush=True,
                )
    medians = {
        mode: (statistics.median(e for e, _ in runs), statistics.median(w for _, w in runs))
        for mode, runs in seconds.items()
    }
    print(f"\n{len(models)} conversions in one process, median of {args.rounds} rounds")
    print(f"{'mode':12s}{'export s':>10s}{'wall s':>10s}")
    for mode, (export, wall) in medians.items():
        print(f"{mode:12s}{export:10.1f}{wall:10.1f}")
    (fe, fw), (se, sw) = medians["forkserver"], medians["spawn"]
    print(f"ratio forkserver/spawn: export {fe / se:.2f}, wall {fw / sw:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
