"""The ``--scale`` spec (see :mod:`pipeline.scaling` for the strategies): parsing, and the
activation strategy's guarded factor.  Used on both sides of the process boundary: by the
orchestrator to check options and by the TF worker to scale before export, so it imports
neither TensorFlow nor torch."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.errors import BadInputError

CONV, DENSE = "conv", "dense"
KINDS = (CONV, DENSE)
GLOBAL, PER_KIND, ACTIVATION = "global", "per_kind", "activation"
ACTIVATION_FLOOR = 1e-6
"""Mean absolute activations below this leave the layer unscaled (factor 1)."""

_USAGE = "expected global=F, conv=F,dense=G or activation, e.g. --scale conv=0.7,dense=0.3"


@dataclass(frozen=True)
class ScaleSpec:
    """A parsed ``--scale`` spec: ``strategy`` and the factor per layer kind (not for
    ``activation``, whose factors come from calibration data)."""

    strategy: str
    factors: Mapping[str, float] = field(default_factory=dict)
    text: str = ""

    def factor_for(self, kind: str | None) -> float | None:
        """The factor for a layer of ``kind``, None when such layers are left untouched."""
        return None if kind is None else self.factors.get(kind)

    def to_json(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "spec": self.text, "factors": dict(self.factors)}


def _factor(key: str, text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadInputError(f"bad --scale {spec!r}: {key}={text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise BadInputError(f"bad --scale {spec!r}: {key} must be a positive finite factor")
    return value


def parse_scale(spec: str) -> ScaleSpec:
    """Parse ``global=F``, ``conv=F[,dense=G]`` or ``activation``.

    Raises :class:`BadInputError` (one line, exit code 2 on the CLI) for anything else:
    unknown keys, repeated keys, ``global`` mixed with kinds, factors that are not positive
    finite numbers.
    """
    text = spec.strip()
    if text == ACTIVATION:
        return ScaleSpec(ACTIVATION, {}, text)
    items = [item.strip() for item in text.split(",")]
    factors: dict[str, float] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or not key or not value.strip():
            raise BadInputError(f"bad --scale {spec!r}: {_USAGE}")
        if key == ACTIVATION:
            raise BadInputError(
                f"bad --scale {spec!r}: activation takes no factor "
                "(its factors come from --calibration data)"
            )
        if key not in (GLOBAL, *KINDS):
            raise BadInputError(
                f"bad --scale {spec!r}: unknown key {key!r} (known: global, conv, dense)"
            )
        if key in factors:
            raise BadInputError(f"bad --scale {spec!r}: {key} given twice")
        factors[key] = _factor(key, value.strip(), spec)
    if GLOBAL in factors:
        if len(factors) > 1:
            raise BadInputError(f"bad --scale {spec!r}: global cannot be mixed with conv/dense")
        return ScaleSpec(GLOBAL, dict.fromkeys(KINDS, factors[GLOBAL]), text)
    return ScaleSpec(PER_KIND, factors, text)


def activation_factor(mean_abs: float) -> tuple[float, str]:
    """The activation strategy's factor ``1 / mean_abs``, guarded: a mean below
    :data:`ACTIVATION_FLOOR`, or not finite, gives factor 1 (the layer left unscaled) and a
    note saying why, instead of an infinite or huge factor."""
    if not math.isfinite(mean_abs):
        return 1.0, f"mean |activation| is {mean_abs}: left unscaled"
    if mean_abs < ACTIVATION_FLOOR:
        return 1.0, (
            f"mean |activation| {mean_abs:.3g} < {ACTIVATION_FLOOR:g} (a dead layer): left unscaled"
        )
    return 1.0 / mean_abs, ""


def check_scale_options(scale: str | None, calibration: object | None) -> ScaleSpec | None:
    """Parse ``scale`` and check it agrees with ``calibration`` (a path or None)."""
    if scale is None:
        if calibration is not None:
            raise BadInputError("--calibration is only used with --scale activation")
        return None
    parsed = parse_scale(scale)
    if parsed.strategy == ACTIVATION and calibration is None:
        raise BadInputError(
            "--scale activation needs --calibration DATA.npz (inputs keyed by input name)"
        )
    if parsed.strategy != ACTIVATION and calibration is not None:
        raise BadInputError("--calibration is only used with --scale activation")
    return parsed
