"""Run by ``test_twin_release.py`` in a subprocess (it imports TensorFlow): the worker's
reference step on the zoo's ``conv_bn_dropout``, watching the float32 model's variables.

Prints one JSON line: whether every float32 ``tf.Variable`` was gone when the float64 twin
was built, how many TF floors were written, and what running the model afterwards said."""

from __future__ import annotations

import gc
import json
import sys
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.export.worker import reference
from pipeline.export.worker.scaling import load_and_scale

ZOO = str(Path(__file__).resolve().parents[2] / "models" / "zoo.py")


def main(work_dir: Path) -> None:
    loaded = load_and_scale(
        {"source": {"kind": "factory_file", "location": ZOO, "function": "conv_bn_dropout"}}
    )
    refs = [weakref.ref(v._value) for v in loaded.keras_model.weights]
    rng = np.random.default_rng(0)
    arrays = {s.name: rng.standard_normal((1, *s.shape[1:])).astype(s.dtype) for s in loaded.inputs}
    outputs = dict(zip(["out"], loaded.run(arrays), strict=True))
    alive_at_twin: list[int] = []
    build = reference.float64_twin

    def watched(model: Any, values: Any = None) -> Any:
        gc.collect()
        alive_at_twin.append(sum(r() is not None for r in refs))
        return build(model, values)

    reference.float64_twin = watched
    _, error, unmeasured = reference.write_variables_and_gradients(
        loaded, arrays, outputs, 0, work_dir / reference.VARIABLES_NPZ
    )
    with np.load(work_dir / reference.FLOORS_NPZ) as floors:
        n_floors = sum(k.startswith("grad_noise/") for k in floors.files)
    try:
        loaded.run(arrays)
        after = "ran"
    except RuntimeError as err:
        after = str(err)
    print(
        json.dumps(
            {
                "variables": len(refs),
                "alive_at_twin": alive_at_twin,
                "gradient_error": error,
                "unmeasured": unmeasured,
                "floors": n_floors,
                "after": after,
            }
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
