"""Gradient equivalence: the same loss differentiated in TF and in torch, compared per variable.

The loss is ``sum over floating outputs of sum(output * w)`` with fixed random ``w`` (drawn by
the TF worker, :func:`pipeline.export.worker.reference.loss_weights`), computed in float64 on both sides.
TF's gradient for each trainable variable (GradientTape in the worker) is carried through the
parameter table's layout transform and compared with the gradient of the torch tensor the
table names.  Agreement proves the module is trainable *and* that the names lead to the right
weights: two swapped parameters give the wrong gradients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.core import compare
from pipeline.to_torch.parameters import ParameterEntry, apply_transform


@dataclass
class GradientComparison:
    """One TF trainable variable's gradient against its torch parameter's."""

    tf_name: str
    torch_name: str | None
    max_abs: float | None
    max_rel: float | None
    passed: bool
    note: str = ""
    checked: bool = True

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (the report's ``gradients`` rows)."""
        return {
            "tf_name": self.tf_name,
            "torch_name": self.torch_name,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "pass": self.passed,
            "checked": self.checked,
            "note": self.note,
        }


def torch_gradients(
    module: torch.nn.Module,
    inputs: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
    weights: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Gradients of the fixed loss with respect to every parameter of ``module`` (CPU).

    Frozen parameters are differentiated too (their gradient is still checked against TF's
    where the table maps a TF variable to them); afterwards every ``requires_grad`` flag is
    as it was and no ``.grad`` is left on the module."""
    module.zero_grad(set_to_none=True)
    flags = {id(p): p.requires_grad for p in module.parameters()}
    for p in module.parameters():
        p.requires_grad_(True)
    try:
        return _gradients(module, inputs, input_names, output_names, weights)
    finally:
        for p in module.parameters():
            p.requires_grad_(flags[id(p)])
            p.grad = None


def _gradients(
    module: torch.nn.Module,
    inputs: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
    weights: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    args = [torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in input_names]
    result = module(*args)
    outputs = result if isinstance(result, tuple | list) else (result,)
    loss = torch.zeros((), dtype=torch.float64)
    for name, out in zip(output_names, outputs, strict=True):
        if name in weights:
            loss = loss + (out.double() * torch.from_numpy(weights[name]).double()).sum()
    if not loss.requires_grad:
        return {}  # nothing trainable reaches the outputs
    loss.backward()
    return {
        name: p.grad.detach().cpu().numpy()
        for name, p in module.named_parameters()
        if p.grad is not None
    }


def compare_gradients(
    entries: Sequence[ParameterEntry],
    tf_grads: Mapping[str, np.ndarray],
    torch_grads: Mapping[str, np.ndarray],
    tolerance: compare.Tolerance,
) -> list[GradientComparison]:
    """Compare TF and torch gradients for every trainable TF variable through ``entries``.

    ``tf_grads`` is keyed by TF name, ``torch_grads`` by torch name.  The tolerance is scaled
    to the gradient's magnitude (``atol * max(1, max|g_tf|)``): a gradient sums over the
    batch and over every output, so its size is set by the loss, not by the variable.
    """
    results = []
    for entry in entries:
        if not entry.trainable or entry.tf_name is None:
            continue  # frozen, or a torch-only slot (zero and frozen by construction)
        if entry.tf_name not in tf_grads:
            results.append(
                GradientComparison(
                    entry.tf_name,
                    entry.torch_name,
                    None,
                    None,
                    True,
                    "not checked: no TF gradient (unused variable)",
                    checked=False,
                )
            )
            continue
        if entry.torch_name is None:
            results.append(
                # Folded into another op by tf2onnx (BatchNorm into Conv): no torch tensor to
                # compare; parameter_count reports these as unmapped.
                GradientComparison(
                    entry.tf_name,
                    None,
                    None,
                    None,
                    True,
                    "not checked: no torch tensor of its own",
                    checked=False,
                )
            )
            continue
        expected = apply_transform(tf_grads[entry.tf_name], entry.transform, entry.shape)
        got = torch_grads.get(entry.torch_name)
        if got is None:
            got = np.zeros_like(expected)  # no torch gradient: the parameter is unused
        scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
        c = compare.compare_pair(
            "tf-torch",
            entry.tf_name,
            expected.astype(np.float32),
            got.astype(np.float32),
            compare.Tolerance(tolerance.atol * scale, tolerance.rtol),
        )
        results.append(
            GradientComparison(
                entry.tf_name, entry.torch_name, c.max_abs, c.max_rel, bool(c), c.note or ""
            )
        )
    return results
