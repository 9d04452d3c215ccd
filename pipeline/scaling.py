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

The spec itself is parsed by :mod:`pipeline.export.scale_spec` (re-exported here), which the
TF worker shares.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.export.scale_spec import (
    ACTIVATION,
    ACTIVATION_FLOOR,
    CONV,
    DENSE,
    GLOBAL,
    KINDS,
    PER_KIND,
    ScaleSpec,
    activation_factor,
    check_scale_options,
    parse_scale,
)
from pipeline.to_torch.table import module_tensors, table_of, torch_names

if TYPE_CHECKING:
    import torch

__all__ = [
    "ACTIVATION",
    "ACTIVATION_FLOOR",
    "CONV",
    "DENSE",
    "GLOBAL",
    "KINDS",
    "PER_KIND",
    "ScaleSpec",
    "activation_factor",
    "check_scale_options",
    "parse_scale",
    "scale_weights",
]


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
