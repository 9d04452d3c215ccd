"""How train-check judges one variable (or the loss) after one step: float32's own noise.

``convert`` judges outputs against each framework's own float32 error (docs/comparing.md);
train-check does the same per step and per variable.  Both frameworks train four times over
in effect: Keras in float32 and its float64 twin, torch in float32 and a float64 copy of
the module with the same emitted training code.  With ``t``/``f`` torch's and TF's float32
values and ``T``/``F`` their float64 ones (all in torch's layout):

- ``n_torch = max |t - T|`` and ``n_tf = max |f - F|``: how far float32 rounding alone has
  carried each framework by this step (its own floor);
- ``scale = max |F|`` (``T`` without a twin);
- ``atol = k·(n_torch + n_tf) + f·eps·scale``, with ``k`` and ``f`` convert's
  (:data:`pipeline.core.compare.NOISE_FACTOR`, :data:`~pipeline.core.compare.NOISE_EPS_FACTOR`),
  through :class:`pipeline.core.compare.Noise`;
- the variable passes when ``max |t - f| <= atol`` **and** ``max |T - F| <= atol``: the
  float64 runs must agree too, so a fault that sits in one framework's float32 run only
  (and would widen its floor) still fails;
- and it fails when a framework's own drift ``‖x - X‖₂ / ‖X‖₂`` is above 1 % (convert's
  rule, on the whole tensor: float32 cannot compute that variable reproducibly, and a
  tolerance that wide would pass anything) while the float32 runs are further apart than
  the fixed rule allows (``rel > FIXED_RTOL``): where they agree that closely, no wide
  tolerance was needed to pass them.

The loss is judged the same way with its four values.  Where one side has no float64 run,
the other side's floor stands for both; where neither has, the fixed rule applies
(:data:`FIXED_RTOL` on ``rel = ‖t - f‖₂ / ‖f‖₂``, the loss on ``|t - f| / |f|``), and the
report says why.  A user ``rtol``/``atol`` replaces the noise rule by the fixed one: a
variable passes when ``rel <= rtol`` or ``max |t - f| <= atol``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.core.compare import NOISE_EPS_FACTOR, NOISE_FACTOR, UNSTABLE_NOISE, Noise

FIXED_RTOL = 1e-5
"""The fixed rule's tolerance, where no float64 run could be made."""
_TINY = float(np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class Rule:
    """Which rule judges: ``noise`` (measured floors), or ``fixed`` (a user's
    ``rtol``/``atol``, or :data:`FIXED_RTOL` where no float64 run could be made);
    ``unmeasured`` says, per framework, why it has no float64 run."""

    kind: str
    rtol: float | None = None
    atol: float | None = None
    unmeasured: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The report's ``training.rule``."""
        if self.kind == "noise":
            formula = (
                f"max|t - f| <= atol and max|T - F| <= atol, atol = {NOISE_FACTOR:g}*(n_torch + "
                f"n_tf) + {NOISE_EPS_FACTOR:g}*eps*scale; n_x = max|x float32 - x float64| "
                "per variable and step, scale = max|float64|"
            )
        else:
            formula = "rel = ||t - f||_2 / ||f||_2 <= rtol, or max|t - f| <= atol"
        return {
            "kind": self.kind,
            "formula": formula,
            "rtol": self.rtol,
            "atol": self.atol,
            "float64": {name: self.unmeasured.get(name, "measured") for name in ("tf", "torch")},
        }


@dataclass(frozen=True)
class Judgement:
    """One variable (or the loss) after one step: its distances, floors and verdict.

    ``max_abs`` = max |t - f|; ``rel`` = ‖t - f‖₂ / ‖f‖₂; ``max_rel`` = ``max_abs`` / max|f|;
    ``noise_torch``/``noise_tf`` the floors (None: no float64 run); ``float64_distance`` =
    max |T - F|; ``atol`` the noise rule's tolerance; ``margin`` the distance over what is
    allowed (above 1 fails)."""

    variable: str
    torch_name: str
    max_abs: float
    rel: float
    max_rel: float
    scale: float
    noise_torch: float | None
    noise_tf: float | None
    float64_distance: float | None
    atol: float | None
    margin: float
    passed: bool
    unstable: str | None = None
    """Why float32 cannot compute this variable reproducibly (its floor above 1 % of its
    scale: :meth:`pipeline.core.compare.Noise.unstable`), which fails it; else None."""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (a NaN or infinite number as null)."""
        data = {
            "variable": self.variable,
            "torch_name": self.torch_name,
            "max_abs": self.max_abs,
            "rel": self.rel,
            "max_rel": self.max_rel,
            "scale": self.scale,
            "noise_torch": self.noise_torch,
            "noise_tf": self.noise_tf,
            "float64_distance": self.float64_distance,
            "atol": self.atol,
            "margin": self.margin,
            "passed": self.passed,
            **({"unstable": self.unstable} if self.unstable else {}),
        }
        return {k: finite(v) if isinstance(v, float) else v for k, v in data.items()}


def finite(value: float | None) -> float | None:
    """``value``, or None for NaN and infinities (JSON has neither)."""
    return value if value is None or math.isfinite(value) else None


def _max_abs(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    return max(
        (float(np.max(np.abs(x - y), initial=0.0)) for x, y in zip(a, b, strict=True)),
        default=0.0,
    )


def _norm(arrays: Sequence[np.ndarray]) -> float:
    return float(np.sqrt(sum(float(np.sum(a * a)) for a in arrays)))


def judge(
    name: str,
    torch_names: Sequence[str],
    t: Sequence[np.ndarray],
    f: Sequence[np.ndarray],
    big_t: Sequence[np.ndarray] | None,
    big_f: Sequence[np.ndarray] | None,
    rule: Rule,
) -> Judgement:
    """Judge one variable (its parts as float64 arrays in torch layout: torch float32
    ``t``, TF float32 ``f``, torch float64 ``big_t``, TF float64 ``big_f``; None where that
    run is missing) under ``rule`` (module docstring)."""
    diffs = [np.abs(x - y) for x, y in zip(t, f, strict=True)]
    worst = max(range(len(diffs)), key=lambda i: float(diffs[i].max(initial=0.0)))
    max_abs = float(diffs[worst].max(initial=0.0))
    diff_norm = _norm(diffs)
    rel = diff_norm / max(_norm(f), _TINY) if diff_norm else 0.0
    f_scale = max((float(np.max(np.abs(a), initial=0.0)) for a in f), default=0.0)
    max_rel = max_abs / max(f_scale, _TINY) if max_abs else 0.0
    n_torch = _max_abs(t, big_t) if big_t is not None else None
    n_tf = _max_abs(f, big_f) if big_f is not None else None
    reference = big_f if big_f is not None else big_t if big_t is not None else f
    scale = max((float(np.max(np.abs(a), initial=0.0)) for a in reference), default=0.0)
    distance64 = _max_abs(big_t, big_f) if big_t is not None and big_f is not None else None
    atol = None
    unstable = None
    if rule.kind == "noise" and (n_torch is not None or n_tf is not None):
        own = n_torch if n_torch is not None else n_tf
        assert own is not None
        other = n_tf if n_torch is not None else None
        atol = Noise(own, scale, "float32", other).tolerance().atol
        worst_distance = max(max_abs, distance64 or 0.0)
        margin = worst_distance / atol if atol > 0 else (0.0 if worst_distance == 0 else np.inf)
        # a floor above 1 % of the scale would pass anything: float32 cannot compute the
        # variable reproducibly (e.g. Adam moving a variable whose exact gradient is 0)
        # ... unless the float32 runs agree as closely as the fixed rule asks anyway: then no
        # wide tolerance was needed (a loss over clipped probabilities can put both float64
        # runs a few % from float32's while the float32 runs agree to 1e-7)
        unstable = _unstable(t, f, big_t, big_f) if rel > FIXED_RTOL else None
        passed = worst_distance <= atol and unstable is None
    else:
        rtol = rule.rtol if rule.rtol is not None else (FIXED_RTOL if rule.atol is None else 0.0)
        by_atol = rule.atol is not None and max_abs <= rule.atol
        passed = rel <= rtol or by_atol
        margin = rel / rtol if rtol > 0 else (0.0 if rel == 0 else np.inf)
        if by_atol:
            margin = min(margin, max_abs / rule.atol if rule.atol else 0.0)
    return Judgement(
        variable=name,
        torch_name=torch_names[worst],
        max_abs=max_abs,
        rel=rel,
        max_rel=max_rel,
        scale=scale,
        noise_torch=n_torch,
        noise_tf=n_tf,
        float64_distance=distance64,
        atol=atol,
        margin=float(margin),
        passed=bool(passed and np.all([np.isfinite(a).all() for a in t])),
        unstable=unstable,
    )


def _unstable(
    t: Sequence[np.ndarray],
    f: Sequence[np.ndarray],
    big_t: Sequence[np.ndarray] | None,
    big_f: Sequence[np.ndarray] | None,
) -> str | None:
    """Why float32 cannot compute the variable reproducibly: a framework's own drift
    ``‖x - X‖₂ / ‖X‖₂`` above :data:`~pipeline.core.compare.UNSTABLE_NOISE` (1 %); else None.
    Whole-tensor norms, not the largest element: one unit crossing a ReLU kink after 200
    steps moves one element by 1 % of the tensor's scale and the tensor by 0.2 %."""
    worst = 0.0
    for low, high in ((t, big_t), (f, big_f)):
        if high is None:
            continue
        drift = _norm([a - b for a, b in zip(low, high, strict=True)])
        worst = max(worst, drift / max(_norm(high), _TINY) if drift else 0.0)
    if worst <= UNSTABLE_NOISE:
        return None
    return (
        f"its float32 drift is {100 * worst:.2g}% of its norm: float32 cannot train it "
        "reproducibly (e.g. Adam scaling the rounding noise of a zero exact gradient up to "
        "full steps), so no tolerance can judge it; check the model, or use --atol/--rtol"
    )


def judge_loss(
    torch32: float, tf32: float, torch64: float | None, tf64: float | None, rule: Rule
) -> Judgement:
    """:func:`judge` for the step's loss (scalars)."""

    def arrays(value: float | None) -> list[np.ndarray] | None:
        return None if value is None else [np.array([value], np.float64)]

    t, f = arrays(torch32), arrays(tf32)
    assert t is not None and f is not None
    return judge("loss", ["loss"], t, f, arrays(torch64), arrays(tf64), rule)
