"""Weight scaling for transfer learning: ``--scale`` on ``convert``, :func:`scale_weights` after.

Three strategies (the ``--scale`` spec, parsed by :func:`parse_scale`):

- ``global=F``: every weight (kernel and bias) of every Conv and Dense layer times ``F``;
- ``conv=F,dense=G``: a factor per layer kind, either or both given; layers of a kind not
  named, and every other layer (BatchNorm, LSTM, Embedding, ...), are left untouched;
- ``activation`` (with calibration data): each Conv and Dense layer's weights are divided by
  the mean absolute value of that layer's output (after its activation) on the calibration
  inputs, all layers measured in one inference pass of the *unscaled* model.  A layer whose
  mean absolute output is below :data:`ACTIVATION_FLOOR` (a dead ReLU layer, an all-zero
  output) or not finite is **left unscaled** (factor 1, with a note in the report) instead of
  being multiplied by 1/0.

Layer kinds (decided in the TF worker by ``isinstance``, so subclasses count): ``conv`` is
Keras ``Conv1D/2D/3D``, ``Conv*Transpose``, ``DepthwiseConv1D/2D`` and ``SeparableConv1D/2D``;
``dense`` is ``Dense`` (not ``EinsumDense``, so MultiHeadAttention's projections are left
alone).  Every weight of the layer is multiplied, as the article's ``set_weights([w * f ...])``
does: a SeparableConv's output therefore scales by ``F²`` (two kernels), its bias by ``F``.

On ``convert`` the scaling is applied in the TF worker before export, so TensorFlow, ONNX
Runtime and PyTorch are all compared on the scaled model, and ``report.json``'s ``scaling``
records the strategy and every scaled layer with its factor.  :func:`scale_weights` applies the
same rules to an already converted torch module, finding each parameter's layer and kind in
the parameter table (``report.json``'s ``parameters``, which :func:`pipeline.load_torch` and
:func:`pipeline.convert` attach to the module as ``tf2torch_parameters``).

This module imports neither TensorFlow nor (at import time) torch: the worker uses
:func:`parse_scale` and :func:`activation_factor` too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.errors import BadInputError

if TYPE_CHECKING:
    import torch

CONV, DENSE = "conv", "dense"
KINDS = (CONV, DENSE)
GLOBAL, PER_KIND, ACTIVATION = "global", "per_kind", "activation"
ACTIVATION_FLOOR = 1e-6
"""Mean absolute activations below this leave the layer unscaled (factor 1)."""
TABLE_ATTRIBUTE = "tf2torch_parameters"
"""The attribute on a converted module that holds the parameter table (report rows)."""

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


# ------------------------------------------------------------------ torch-side scaling


def table_of(module: torch.nn.Module, table: Sequence[Mapping[str, Any]] | None) -> list[Any]:
    """``table`` if given, else the table attached to ``module`` (``tf2torch_parameters``)."""
    if table is not None:
        return list(table)
    attached = getattr(module, TABLE_ATTRIBUTE, None)
    if attached is None:
        raise ValueError(
            "the module carries no parameter table: pass table= (report.json's 'parameters') "
            "or use a module from pipeline.load_torch / pipeline.convert"
        )
    return list(attached)


def torch_names(row: Mapping[str, Any]) -> list[str]:
    """Every torch tensor holding the row's TF variable: ``torch_name`` and those its note
    lists as ``also held by`` (one TF variable used by two ops)."""
    if not row.get("torch_name"):
        return []
    names = [str(row["torch_name"])]
    note = str(row.get("note") or "")
    if note.startswith("also held by "):
        names += [n.strip() for n in note.removeprefix("also held by ").split(",") if n.strip()]
    return names


def module_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers of ``module`` by qualified name."""
    return dict(module.named_buffers()) | dict(module.named_parameters())


def _layer_of(row: Mapping[str, Any]) -> str | None:
    if row.get("layer"):
        return str(row["layer"])
    tf_name = row.get("tf_name")
    return str(tf_name).rpartition("/")[0] if tf_name else None


def _replay_factors(scaling: Mapping[str, Any]) -> dict[str, float]:
    return {str(layer["layer"]): float(layer["factor"]) for layer in scaling.get("layers", [])}


def scale_weights(
    module: torch.nn.Module,
    spec: str | ScaleSpec | Mapping[str, Any],
    table: Sequence[Mapping[str, Any]] | None = None,
    *,
    factors: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Scale a converted module's weights in place by the ``--scale`` rules; returns one
    record per scaled layer (``layer``, ``layer_class``, ``kind``, ``factor``,
    ``torch_names``, ``unmapped``: TF variables with no torch tensor, e.g. a kernel tf2onnx
    folded a BatchNorm into).

    ``spec`` is a spec string (``"global=0.5"``, ``"conv=0.7,dense=0.3"``), a
    :class:`ScaleSpec`, or a report's ``scaling`` dict (its per-layer factors are replayed
    exactly).  The ``activation`` strategy needs the TF model's layer outputs, which a
    converted torch graph does not name, so on torch it takes its factors explicitly:
    ``factors`` (layer path → factor), or a report's ``scaling`` dict as ``spec``.

    ``table`` is the parameter table (rows of ``report.json``'s ``parameters`` with
    ``layer``, ``layer_class`` and ``layer_kind``); by default the one attached to
    ``module``.  Rows are grouped by layer, so every tensor of a scaled layer (kernel, bias,
    a duplicate) is multiplied once.
    """
    import torch

    rows = table_of(module, table)
    explicit: dict[str, float] | None = dict(factors) if factors is not None else None
    parsed: ScaleSpec | None = None
    if isinstance(spec, Mapping):
        explicit = {**_replay_factors(spec), **(explicit or {})}
    elif isinstance(spec, ScaleSpec):
        parsed = spec
    else:
        parsed = parse_scale(spec)
    if parsed is not None and parsed.strategy == ACTIVATION and explicit is None:
        raise ValueError(
            "the activation strategy needs the TF model's layer outputs: convert with "
            "--scale activation --calibration DATA.npz, or pass factors= (e.g. from "
            "report.json's scaling.layers)"
        )
    if not any("layer_kind" in row for row in rows if row.get("tf_name")):
        raise ValueError(
            "the parameter table has no layer kinds (a run from before tf2torch recorded "
            "them): convert again"
        )
    tensors = module_tensors(module)
    records: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        for row in rows:
            layer = _layer_of(row)
            if layer is None or not row.get("tf_name"):
                continue
            kind = row.get("layer_kind")
            if explicit is not None:
                factor = explicit.get(layer)
            else:
                assert parsed is not None
                factor = parsed.factor_for(kind)
            if factor is None:
                continue
            record = records.setdefault(
                layer,
                {
                    "layer": layer,
                    "layer_class": row.get("layer_class"),
                    "kind": kind,
                    "factor": float(factor),
                    "torch_names": [],
                    "unmapped": [],
                },
            )
            names = torch_names(row)
            if not names:
                record["unmapped"].append(row["tf_name"])
            for name in names:
                if name in record["torch_names"]:
                    continue
                tensors[name].mul_(float(factor))
                record["torch_names"].append(name)
    return list(records.values())
