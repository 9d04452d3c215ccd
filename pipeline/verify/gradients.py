"""Gradient equivalence: the same loss differentiated in TF and in torch, compared per variable.

The loss is ``sum over floating outputs of sum(output * w)`` with fixed random ``w`` (drawn by
the TF worker, :func:`pipeline.export.worker.reference.loss_weights`), computed in float64 on both sides.
TF's gradient for each trainable variable (GradientTape in the worker) is carried through the
parameter table's layout transform and compared with the gradient of the torch tensor the
table names.  Agreement proves the module is trainable *and* that the names lead to the right
weights: two swapped parameters give the wrong gradients.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from pipeline.core import compare
from pipeline.core.torch_runner import module_device, positional_args
from pipeline.to_torch.parameters import ParameterEntry, apply_transform
from pipeline.verify.ties import TF_MAX_POOL3D_TIE, tf_max_pool3d_routing


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
    noise_floor: float | None = None
    """The gradient's measured float32 noise floor on the torch side (see
    :func:`compare_gradients`), else None."""
    noise_floor_tf: float | None = None
    """TF's own float32 noise floor of the gradient (its float64 twin), else None."""

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
            "noise_floor": self.noise_floor,
            "noise_floor_tf": self.noise_floor_tf,
        }


@dataclass(frozen=True)
class GradientScope:
    """What the gradient check differentiates, or why it does not run at all.

    The fixed loss only sums floating outputs: an integer or boolean output (a class index, a
    mask) has no gradient, so it is listed in :attr:`excluded` instead.  :attr:`skipped` is
    the reason the whole check is skipped (nothing to differentiate, or nothing to
    differentiate with respect to); None when it runs.
    """

    outputs: list[str]
    """The floating outputs the loss sums over."""
    excluded: dict[str, str]
    """Output name → dtype of every output left out of the loss (integer or boolean)."""
    skipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (the report's ``gradient_check``)."""
        return {
            "status": "skipped" if self.skipped else "checked",
            "reason": self.skipped,
            "outputs": self.outputs,
            "excluded_outputs": self.excluded,
        }


def gradient_scope(
    variables: Sequence[Mapping[str, Any]],
    tf_outputs: Mapping[str, np.ndarray],
    tf_gradients: Mapping[str, np.ndarray],
    tf_error: str | None = None,
) -> GradientScope:
    """Decide what the gradient check covers from the TF worker's results.

    ``variables`` is the worker's variable metadata (``path``, ``trainable``), ``tf_outputs``
    TF's outputs by name, ``tf_gradients`` the gradients TF produced by variable path and
    ``tf_error`` the reason TF could not differentiate the model at all, if it could not.
    """
    floating = [n for n, v in tf_outputs.items() if np.issubdtype(v.dtype, np.floating)]
    excluded = {n: v.dtype.name for n, v in tf_outputs.items() if n not in floating}
    trainable = [v["path"] for v in variables if v.get("trainable")]
    reason = None
    if tf_error:
        reason = f"TensorFlow cannot differentiate the model: {tf_error}"
    elif not trainable:
        reason = "the model has no trainable variables"
    elif not floating:
        shown = ", ".join(f"{n} ({d})" for n, d in excluded.items())
        reason = f"no floating-point output to differentiate (integer/boolean outputs: {shown})"
    elif not any(path in tf_gradients for path in trainable):
        reason = "no floating-point output depends on a trainable variable"
    return GradientScope(floating, excluded, reason)


def fixed_loss(
    module: torch.nn.Module,
    inputs: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
    weights: Mapping[str, np.ndarray],
) -> torch.Tensor:
    """``sum over the weighted outputs of sum(output * weight)`` in float64, computed on the
    module's device (:func:`~pipeline.core.torch_runner.module_device`) with the inputs and
    weights moved there."""
    device = module_device(module)
    result = module(*positional_args(inputs, input_names, device))
    outputs = result if isinstance(result, tuple | list) else (result,)
    loss = torch.zeros((), dtype=torch.float64, device=device)
    for name, out in zip(output_names, outputs, strict=True):
        if name in weights:
            weight = torch.from_numpy(weights[name]).to(device, torch.float64)
            loss = loss + (out.double() * weight).sum()
    return loss


def torch_gradients(
    module: torch.nn.Module,
    inputs: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
    weights: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Gradients of :func:`fixed_loss` with respect to every parameter of ``module``, on the
    host; no entry for a parameter the loss does not reach (none at all when the loss
    depends on no parameter, which :func:`compare_gradients` reads as zero gradients).

    Frozen parameters are differentiated too (their gradient is still checked against TF's
    where the table maps a TF variable to them); afterwards every ``requires_grad`` flag is
    as it was and no ``.grad`` is left on the module."""
    with all_differentiable(module):
        loss = fixed_loss(module, inputs, input_names, output_names, weights)
        if not loss.requires_grad:
            return {}  # nothing trainable reaches the outputs
        loss.backward()
        return {
            name: p.grad.detach().cpu().numpy()
            for name, p in module.named_parameters()
            if p.grad is not None
        }


@contextmanager
def all_differentiable(module: torch.nn.Module) -> Iterator[None]:
    """Every parameter of ``module`` requires grad inside the block (frozen ones too: their
    gradients are checked as well); afterwards each flag is as it was and no ``.grad`` is
    left on the module."""
    module.zero_grad(set_to_none=True)
    flags = {id(p): p.requires_grad for p in module.parameters()}
    for p in module.parameters():
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in module.parameters():
            p.requires_grad_(flags[id(p)])
            p.grad = None


@dataclass(frozen=True)
class TieRouted:
    """Torch's gradients with every ``max_pool3d`` differentiated as TF's MaxPool3D is
    (:mod:`pipeline.verify.ties`), and how many pool windows that changed."""

    gradients: dict[str, np.ndarray]
    tied_windows: int

    @property
    def note(self) -> str:
        """What a gradient row that agrees only this way says."""
        return (
            f"agrees with TF's MaxPool3D tie routing ({self.tied_windows} pool windows hold "
            f"elements within {TF_MAX_POOL3D_TIE:g} of their maximum; TF's gradient gives each "
            "of them the whole gradient, torch's gives it to one)"
        )


def tie_routed_gradients(
    module: torch.nn.Module,
    inputs: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
    weights: Mapping[str, np.ndarray],
) -> TieRouted | None:
    """:func:`torch_gradients` with every ``max_pool3d`` routed TF's way, or None when no
    pool window of ``module`` on ``inputs`` routes differently (then torch's gradients are
    TF's already)."""
    with tf_max_pool3d_routing() as routing:
        grads = torch_gradients(module, inputs, input_names, output_names, weights)
    if routing.tied_windows == 0:
        return None
    return TieRouted(grads, routing.tied_windows)


def compare_gradients(
    entries: Sequence[ParameterEntry],
    tf_grads: Mapping[str, np.ndarray],
    torch_grads: Mapping[str, np.ndarray],
    tolerance: compare.Tolerance,
    noise: Mapping[str, compare.Noise] | None = None,
    tf_noise: Mapping[str, compare.Noise] | None = None,
    tie_routed: TieRouted | None = None,
) -> list[GradientComparison]:
    """Compare TF and torch gradients for every trainable TF variable through ``entries``.

    ``tf_grads`` is keyed by TF name, ``torch_grads`` by torch name.  The fixed
    ``tolerance`` is scaled to the gradient's magnitude (``atol * max(1, max|g_tf|)``): a
    gradient sums over the batch and over every output, so its size is set by the loss,
    not by the variable.  Where the gradient pair's float32 noise floor allows more, ``atol``
    is that: deep networks' float32 gradients are that far from the exact ones.  The pair's
    floor combines each side's own (:meth:`pipeline.core.compare.Noise.tolerance` with
    ``noise`` = torch's, by torch name, and ``noise_other`` = TF's, ``tf_noise`` by TF name,
    its float64 twin's): ``k·(n_torch + n_tf) + f·eps·scale``; with one side unmeasured the
    other stands for both.  The floor is only ever a widening because a gradient, unlike an
    output, jumps where float32 and float64 fall on two sides of a ReLU or max-pool kink;
    where the two frameworks decide a kink alike, their gradients are much closer than that.

    ``tie_routed`` (:func:`tie_routed_gradients`) is the tie-aware rule: a gradient that
    disagrees with torch's own passes, with a note, when it agrees within the same tolerance
    with torch's gradient routed through MaxPool3D ties as TF routes them.  Only the pool's
    tie routing changes there, so a wrong weight or a misplaced parameter still fails.
    """
    noise = noise or {}
    tf_noise = tf_noise or {}
    results = []
    for entry in entries:
        if not entry.trainable or entry.tf_name is None:
            continue  # frozen, or a torch-only slot (zero and frozen by construction)
        if entry.tf_name not in tf_grads and not (entry.unused and entry.torch_name):
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
        if entry.tf_name in tf_grads:
            expected = apply_transform(tf_grads[entry.tf_name], entry.transform, entry.shape)
        else:  # unused: TF has no gradient for it, which is a zero one
            expected = np.zeros(entry.shape, np.float32)
        got = torch_grads.get(entry.torch_name)
        if got is None:
            got = np.zeros_like(expected)  # no torch gradient: the parameter is unused
        # max |g| without an |g| copy of the tensor (an LLM's embedding gradient is large)
        scale = max(1.0, float(max(expected.max(), -expected.min())) if expected.size else 1.0)
        tol = compare.Tolerance(tolerance.atol * scale, tolerance.rtol)
        own, tf_floor = noise.get(entry.torch_name), tf_noise.get(entry.tf_name)
        floor = own or tf_floor
        if own is not None and tf_floor is not None:
            floor = replace(own, noise_other=tf_floor.noise)
        if floor is not None:
            tol = compare.Tolerance(max(tol.atol, floor.tolerance().atol), tol.rtol)
        c = compare.compare_pair(
            "tf-torch",
            entry.tf_name,
            expected.astype(np.float32, copy=False),
            got.astype(np.float32, copy=False),
            tol,
        )
        note = c.note or ""
        if not c and tie_routed is not None:
            routed = tie_routed.gradients.get(entry.torch_name)
            if routed is None:
                routed = np.zeros_like(expected)
            tied = compare.compare_pair(
                "tf-torch",
                entry.tf_name,
                expected.astype(np.float32, copy=False),
                routed.astype(np.float32, copy=False),
                tol,
            )
            if tied:
                apart = "?" if c.max_abs is None else f"{c.max_abs:.3g}"
                c, note = tied, f"{tie_routed.note}; with torch's routing {apart} apart"
        results.append(
            GradientComparison(
                entry.tf_name,
                entry.torch_name,
                c.max_abs,
                c.max_rel,
                bool(c),
                note,
                noise_floor=own.noise if own is not None else None,
                noise_floor_tf=tf_floor.noise if tf_floor is not None else None,
            )
        )
    return results
