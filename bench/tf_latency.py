"""TensorFlow side of the latency benchmark; runs in its own process (no torch here).

Usage: python bench/tf_latency.py SOURCE INPUTS.npz REPEATS  -> prints {"median_ms": ...}
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    """Time the model's forward pass as a user would serve it: a ``tf.function``-compiled
    call (an eager ``model(x)`` mostly measures Python call overhead)."""
    source, inputs_path, repeats = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    import importlib.util

    path, _, function = source.rpartition(":")
    spec = importlib.util.spec_from_file_location("bench_zoo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import tensorflow as tf

    model = getattr(module, function)()
    with np.load(inputs_path) as npz:
        args = [tf.constant(npz[name]) for name in npz.files]
    call = args[0] if len(args) == 1 else args
    serve = tf.function(lambda x: model(x, training=False))
    serve(call)  # warm-up: tracing and first allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(serve(call))
        times.append(time.perf_counter() - start)
    print(json.dumps({"median_ms": 1e3 * float(np.median(times))}))


if __name__ == "__main__":
    main()
