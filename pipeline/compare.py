"""Output comparison between frameworks: typed, truth-testable, JSON-ready results.

For one output of one pair, ``b`` is the reference (the pair's first framework: ``tf`` for
``tf-ort`` and ``tf-torch``, ``ort`` for ``ort-torch``) and ``a`` the other:

- ``max_abs`` = max |a - b|
- ``max_rel`` = max |a - b| / max(|b|, tiny), with ``tiny`` the smallest positive normal
  number of the reference's floating dtype (float32: 1.18e-38), so a zero reference
  gives a huge but finite ratio instead of a division by zero
- an element **mismatches** unless |a - b| ≤ atol + rtol·|b|; ``mismatch_fraction`` is the
  share of mismatching elements
- ``cosine`` = a·b / (‖a‖‖b‖) over the flattened outputs in float64; 1.0 when both are
  all zero, 0.0 when exactly one is
- NaN anywhere (either side) fails the comparison and is named in ``note``: a model that
  produces NaN is not a passing migration.  ±Inf must match exactly (same sign, same place).
- a shape difference fails with null metrics; a dtype difference fails too, with metrics
  computed after casting both to float64.  Integer and boolean outputs compare exactly.

Numbers in the JSON are never NaN or Inf: undefined metrics are ``null`` and ``note`` says
why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_PAIRS: tuple[tuple[str, str], ...] = (("tf", "ort"), ("tf", "torch"), ("ort", "torch"))


@dataclass(frozen=True)
class Tolerance:
    """Absolute and relative tolerance: ``|a - b| ≤ atol + rtol·|b|``."""

    atol: float
    rtol: float


# Float32 noise on deep networks reaches ~1e-5 absolute on O(1) outputs; a 1e-3 relative
# weight change moves O(1) outputs by ~1e-3.  1e-4 sits between the two.
DTYPE_DEFAULTS: dict[str, Tolerance] = {
    "float16": Tolerance(1e-2, 1e-2),
    "bfloat16": Tolerance(1e-2, 1e-2),
    "float32": Tolerance(1e-4, 1e-4),
    "float64": Tolerance(1e-7, 1e-7),
}
EXACT = Tolerance(0.0, 0.0)


@dataclass(frozen=True)
class Tolerances:
    """Tolerances per output: per-output overrides, else global overrides, else dtype defaults.

    Defaults (:data:`DTYPE_DEFAULTS`): float16/bfloat16 atol=rtol=1e-2, float32 1e-4,
    float64 1e-7; integers and booleans exact (0/0).  ``atol``/``rtol`` replace the default
    of every floating output; ``per_output`` replaces both for one output name.
    """

    atol: float | None = None
    rtol: float | None = None
    per_output: Mapping[str, Tolerance] = field(default_factory=dict)

    def for_output(self, name: str, dtype: np.dtype[Any] | str) -> Tolerance:
        """The tolerance that applies to output ``name`` of dtype ``dtype``."""
        if name in self.per_output:
            return self.per_output[name]
        dtype_name = np.dtype(dtype).name
        default = DTYPE_DEFAULTS.get(dtype_name)
        if default is None:
            return EXACT
        return Tolerance(
            self.atol if self.atol is not None else default.atol,
            self.rtol if self.rtol is not None else default.rtol,
        )

    def to_json(self) -> dict[str, Any]:
        """The defaults and overrides in force, for the report."""
        return {
            "defaults": {k: {"atol": v.atol, "rtol": v.rtol} for k, v in DTYPE_DEFAULTS.items()},
            "integer_and_bool": "exact",
            "atol": self.atol,
            "rtol": self.rtol,
            "per_output": {k: {"atol": v.atol, "rtol": v.rtol} for k, v in self.per_output.items()},
        }


def _finite_or_none(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


@dataclass
class OutputComparison:
    """One output of one framework pair.  ``bool(c)`` is ``c.passed``."""

    pair: str
    output: str
    max_abs: float | None
    max_rel: float | None
    mismatch_fraction: float | None
    cosine: float | None
    atol: float
    rtol: float
    passed: bool
    note: str | None = None
    worst_index: tuple[int, ...] | None = None
    worst_ref: float | None = None
    worst_other: float | None = None

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        text = f"{verdict} {self.pair} {self.output}"
        if self.max_abs is not None:
            text += (
                f": max_abs={self.max_abs:.3g} max_rel={self.max_rel:.3g} "
                f"mismatch={100 * (self.mismatch_fraction or 0):.3g}% "
                f"(atol={self.atol:g} rtol={self.rtol:g}; atol needed with rtol=0: "
                f"{self.max_abs:.3g})"
            )
        if self.worst_index is not None:
            text += (
                f"; worst at {list(self.worst_index)}: {self.worst_ref!r} vs {self.worst_other!r}"
            )
        if self.note:
            text += f" [{self.note}]"
        return text

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (no NaN/Inf); ``passed`` is written as ``pass``."""
        return {
            "pair": self.pair,
            "output": self.output,
            "max_abs": _finite_or_none(self.max_abs),
            "max_rel": _finite_or_none(self.max_rel),
            "mismatch_fraction": self.mismatch_fraction,
            "cosine": _finite_or_none(self.cosine),
            "atol": self.atol,
            "rtol": self.rtol,
            "pass": self.passed,
            "note": self.note,
            "worst_index": list(self.worst_index) if self.worst_index is not None else None,
            "worst_ref": _finite_or_none(self.worst_ref),
            "worst_other": _finite_or_none(self.worst_other),
        }


def _nonfinite_notes(
    ref: np.ndarray, other: np.ndarray, ref_name: str, other_name: str
) -> list[str]:
    notes = []
    for array, who in ((ref, ref_name), (other, other_name)):
        if array.dtype.kind in "fc":
            nans = int(np.isnan(array).sum())
            infs = int(np.isinf(array).sum())
            if nans:
                notes.append(f"NaN in {who} output ({nans} elements)")
            if infs:
                notes.append(f"Inf in {who} output ({infs} elements)")
    return notes


def _cosine(a: np.ndarray, b: np.ndarray) -> float | None:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if not (math.isfinite(na) and math.isfinite(nb)):
        return None
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def compare_pair(
    pair: str, output: str, ref: np.ndarray, other: np.ndarray, tol: Tolerance
) -> OutputComparison:
    """Compare one output of one pair (``ref`` is the pair's first framework)."""
    ref_name, _, other_name = pair.partition("-")
    ref, other = np.asarray(ref), np.asarray(other)
    if ref.shape != other.shape:
        return OutputComparison(
            pair,
            output,
            None,
            None,
            None,
            None,
            tol.atol,
            tol.rtol,
            False,
            note=f"shape mismatch: {ref_name} {list(ref.shape)} vs {other_name} {list(other.shape)}",
        )
    failing_notes = []
    if ref.dtype != other.dtype:
        failing_notes.append(
            f"dtype mismatch: {ref_name} {ref.dtype.name} vs {other_name} {other.dtype.name}"
        )
    nonfinite = _nonfinite_notes(ref, other, ref_name, other_name)
    failing_notes += [n for n in nonfinite if n.startswith("NaN")]
    notes = failing_notes + [n for n in nonfinite if not n.startswith("NaN")]

    b = ref.astype(np.float64).ravel()
    a = other.astype(np.float64).ravel()
    if b.size == 0:
        return OutputComparison(
            pair,
            output,
            0.0,
            0.0,
            0.0,
            1.0,
            tol.atol,
            tol.rtol,
            not failing_notes,
            note="; ".join(notes) or "empty output",
        )
    same_inf = np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b))
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(same_inf, 0.0, np.abs(a - b))
    nan = np.isnan(diff)
    diff_for_max = np.where(nan, np.inf, diff)
    tiny = float(np.finfo(ref.dtype).tiny) if ref.dtype.kind == "f" else 1.0
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        rel = diff / np.maximum(np.abs(b), tiny)
        allowed = tol.atol + tol.rtol * np.abs(b)
    # An Inf on one side only gives an infinite difference: a mismatch, whatever rtol·|b|.
    mismatched = np.where(same_inf, False, nan | ~np.isfinite(diff) | (diff > allowed))
    worst = int(np.argmax(diff_for_max))
    passed = not failing_notes and not bool(mismatched.any())
    finite = np.isfinite(a) & np.isfinite(b)
    return OutputComparison(
        pair=pair,
        output=output,
        max_abs=float(diff[~nan].max()) if (~nan).any() else None,
        max_rel=float(rel[~nan].max()) if (~nan).any() else None,
        mismatch_fraction=float(mismatched.mean()),
        cosine=_cosine(a[finite], b[finite]),
        atol=tol.atol,
        rtol=tol.rtol,
        passed=passed,
        note="; ".join(notes) or None,
        worst_index=tuple(int(i) for i in np.unravel_index(worst, ref.shape)),
        worst_ref=float(b[worst]),
        worst_other=float(a[worst]),
    )


def compare_all(
    outputs: Mapping[str, Mapping[str, np.ndarray]],
    tolerances: Tolerances,
    pairs: Sequence[tuple[str, str]] = DEFAULT_PAIRS,
) -> list[OutputComparison]:
    """Compare every output for every pair whose two frameworks are both in ``outputs``.

    ``outputs`` maps framework name → output name → array.  Output names and tolerances
    follow the pair's reference framework; an output missing on the other side fails.
    """
    results = []
    for ref_name, other_name in pairs:
        if ref_name not in outputs or other_name not in outputs:
            continue
        pair = f"{ref_name}-{other_name}"
        for output, ref in outputs[ref_name].items():
            tol = tolerances.for_output(output, np.asarray(ref).dtype)
            if output not in outputs[other_name]:
                results.append(
                    OutputComparison(
                        pair,
                        output,
                        None,
                        None,
                        None,
                        None,
                        tol.atol,
                        tol.rtol,
                        False,
                        note=f"output missing from {other_name}",
                    )
                )
                continue
            results.append(compare_pair(pair, output, ref, outputs[other_name][output], tol))
    return results
