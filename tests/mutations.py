"""Planted faults for any converted run, found through the run's own parameter table.

The noise model must stay sharp on networks nobody here wrote: a weight off by 1e-3, a
zeroed bias or swapped input channels in ``model.onnx`` or ``model.pt2`` must still fail
``check --golden-only``.  Nothing here is keyed to one network's layer names or shapes: the
*first* and *last* layers with a kernel are read off ``report.json`` (in the Keras model's
variable order), their ONNX initializers are the variable paths (provenance export) and
their torch tensors the table's ``torch_name``s, both in torch layout (``O, I, ...``).

A fault in the last layer changes the output by an amount known exactly, with no float32 in
it: ``1e-3 * |y - b|`` for the kernel x 1.001, ``|b|`` for the zeroed bias (``y`` the TF
output, ``b`` the bias).  Where that is below the tolerance, float32 itself moves the outputs
as much on that network, and no output check can tell the fault from rounding: such a fault
is *below resolution* and is reported, not expected to fail.  A fault in the first layer
passes through the whole network and has no such bound: it must always fail.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from pipeline.verify.check import check_run, read_golden

ONNX, PT2 = "model.onnx", "model.pt2"
# The pair that does not read the mutated artifact must still pass.
UNTOUCHED = {ONNX: "tf-torch", PT2: "tf-ort"}

Edit = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Mutation:
    """One planted fault: ``edit`` applied to the tensor of ``target`` in ``artifact``."""

    name: str
    artifact: str
    target: str
    """``first_kernel``, ``last_kernel`` or ``last_bias``."""
    edit: Edit


def _swap_input_channels(array: np.ndarray) -> np.ndarray:
    return np.take(array, [1, 0, *range(2, array.shape[1])], axis=1)


EDITS: dict[str, tuple[str, Edit]] = {
    "last_kernel_x1.001": ("last_kernel", lambda w: w * np.float32(1 + 1e-3)),
    "last_bias_zeroed": ("last_bias", np.zeros_like),
    "input_channels_swapped": ("first_kernel", _swap_input_channels),
    "first_kernel_x1.001": ("first_kernel", lambda w: w * np.float32(1 + 1e-3)),
}
MUTATIONS = [
    Mutation(f"{name}_{artifact.split('.')[-1]}", artifact, target, edit)
    for name, (target, edit) in EDITS.items()
    for artifact in (ONNX, PT2)
]


def targets(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The parameter rows of the first and last layers with a kernel, and the last one's bias."""
    kernels = [
        r for r in report["parameters"] if r["tf_name"].endswith("/kernel") and r["torch_name"]
    ]
    first, last = kernels[0], kernels[-1]
    (bias,) = [r for r in report["parameters"] if r["tf_name"] == f"{last['layer']}/bias"]
    return {"first_kernel": first, "last_kernel": last, "last_bias": bias}


def _mutate_onnx(path: Path, name: str, edit: Edit) -> None:
    model = onnx.load(str(path))
    (init,) = [i for i in model.graph.initializer if i.name == name]
    init.CopyFrom(numpy_helper.from_array(edit(numpy_helper.to_array(init).copy()), name))
    onnx.save(model, str(path))


def _mutate_pt2(path: Path, name: str, edit: Edit) -> None:
    program = torch.export.load(str(path))
    tensor = program.state_dict[name]
    with torch.no_grad():
        tensor.copy_(torch.from_numpy(edit(tensor.detach().numpy().copy())))
    torch.export.save(program, str(path))


@dataclass(frozen=True)
class Outcome:
    """What ``check --golden-only`` said of one planted fault."""

    mutation: str
    caught: bool
    """The check failed, on a pair that reads the mutated artifact."""
    untouched_passes: bool
    """The pair that does not read the mutated artifact still passed."""
    margin: float
    """max_abs / atol on the worst pair that reads the mutated artifact (> 1: caught)."""
    effect: float | None
    """The exact change of the output a last-layer fault makes (None for the first layer)."""
    atol: float
    """The largest tolerance among the pairs that read the mutated artifact."""

    @property
    def below_resolution(self) -> bool:
        """The fault moves the output by less than 1.5x the tolerance: rounding may hide it."""
        return self.effect is not None and self.effect < 1.5 * self.atol


def exact_effect(run_dir: Path, mutation: Mutation) -> float | None:
    """The change of the (single) output a last-layer ``mutation`` makes, from TF's golden
    output and the bias; None for a first-layer fault or a model with several outputs."""
    if mutation.target == "first_kernel":
        return None
    outputs = read_golden(run_dir / "golden.npz").outputs
    if len(outputs) != 1:
        return None
    (output,) = outputs.values()
    report = json.loads((run_dir / "report.json").read_text())
    model = onnx.load(str(run_dir / ONNX))
    name = targets(report)["last_bias"]["tf_name"]
    (init,) = [i for i in model.graph.initializer if i.name == name]
    bias = numpy_helper.to_array(init).astype(np.float64)
    if mutation.target == "last_bias":
        return float(np.abs(bias).max())
    return float(1e-3 * np.abs(output.astype(np.float64) - bias).max())


def plant(run_dir: Path, mutation: Mutation) -> Outcome:
    """Plant ``mutation`` in ``run_dir``, re-check against the golden outputs, restore the
    artifact.  The run is left as it was (the report is not rewritten)."""
    report = json.loads((run_dir / "report.json").read_text())
    row = targets(report)[mutation.target]
    effect = exact_effect(run_dir, mutation)
    path = run_dir / mutation.artifact
    backup = path.with_name(path.name + ".orig")
    shutil.copy2(path, backup)
    try:
        if mutation.artifact == ONNX:
            _mutate_onnx(path, row["tf_name"], mutation.edit)
        else:
            _mutate_pt2(path, row["torch_name"], mutation.edit)
        result = check_run(run_dir, golden_only=True, update_report=False)
    finally:
        shutil.move(backup, path)
    reading = [c for c in result.comparisons if c.pair != UNTOUCHED[mutation.artifact]]
    margin = max((c.max_abs or 0.0) / c.atol for c in reading if c.atol > 0)
    return Outcome(
        mutation=mutation.name,
        caught=not result and any(not c.passed for c in reading),
        untouched_passes=all(
            c.passed for c in result.comparisons if c.pair == UNTOUCHED[mutation.artifact]
        ),
        margin=margin,
        effect=effect,
        atol=max(c.atol for c in reading),
    )
