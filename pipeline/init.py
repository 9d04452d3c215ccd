"""Initialise a converted module as Keras would: :func:`reset_parameters`.

torch's similarly named initialisers are not Keras's: Keras ``he_normal`` (and
``glorot_normal``, ``lecun_normal``) draws from a normal **truncated at two standard
deviations** and rescaled (``stddev = sqrt(scale / fan) / 0.87962566``) where torch's
``kaiming_normal_`` does not truncate; Keras computes fans on its own kernel layout (a
``DepthwiseConv2D`` kernel ``(kh, kw, C, M)`` has fan_in ``kh·kw·C``, while torch's grouped
``(C·M, 1, kh, kw)`` weight gives ``kh·kw``); an LSTM's recurrent kernel is ``orthogonal``
over the whole ``(units, 4·units)`` matrix and its bias has ``unit_forget_bias``; and Keras
biases start at zero where ``nn.Linear``'s do not.

So values are drawn here **in the Keras layout** (``tf_shape``), from the initializer the TF
worker recorded for each variable (``initializer``: ``class_name`` and ``config`` in the
parameter table), and then placed through the row's layout ``transform`` (the same
:func:`pipeline.to_torch.parameters.apply_transform` the gradient check uses): a transpose, an HWIO →
OIHW permutation, a gate reorder or a split into rows.

The table comes from the module: :func:`pipeline.load_torch` and :func:`pipeline.convert`
attach ``report.json``'s ``parameters`` as ``module.tf2torch_parameters``; pass ``table=``
for a module that does not carry one.  Sampling is numpy's (``seed``), not Keras's random
stream: the *distribution* is Keras's, not the bit-exact values of a Keras seed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from pipeline.to_torch.parameters import UNMAPPED, apply_transform
from pipeline.to_torch.table import module_tensors, table_of, torch_names

TRUNCATION_STDDEV = 0.87962566103423978
"""Standard deviation of a unit normal truncated to [-2, 2] (Keras's VarianceScaling
divides by it so that the truncated draw has the wanted standard deviation)."""

# (scale, mode, distribution) of the VarianceScaling family, by normalised class name;
# the worker records these in the config too, which then wins.
_VARIANCE_SCALING = {
    "variancescaling": (1.0, "fan_in", "truncated_normal"),
    "glorotuniform": (1.0, "fan_avg", "uniform"),
    "glorotnormal": (1.0, "fan_avg", "truncated_normal"),
    "heuniform": (2.0, "fan_in", "uniform"),
    "henormal": (2.0, "fan_in", "truncated_normal"),
    "lecununiform": (1.0, "fan_in", "uniform"),
    "lecunnormal": (1.0, "fan_in", "truncated_normal"),
}
SUPPORTED = (
    "Zeros",
    "Ones",
    "Constant",
    "RandomNormal",
    "RandomUniform",
    "TruncatedNormal",
    "VarianceScaling",
    "GlorotUniform",
    "GlorotNormal",
    "HeUniform",
    "HeNormal",
    "LecunUniform",
    "LecunNormal",
    "Orthogonal",
    "Identity",
)
_SUPPORTED_KEYS = {re.sub(r"[_\s]", "", name).lower() for name in SUPPORTED}


def _key(class_name: str) -> str:
    return re.sub(r"[_\s]", "", class_name).lower()


def keras_fans(
    shape: Sequence[int],
    input_axes: Sequence[int] | None = None,
    output_axes: Sequence[int] | None = None,
) -> tuple[int, int]:
    """``(fan_in, fan_out)`` exactly as Keras's ``compute_fans`` on a Keras-layout shape: a
    kernel ``(..., in, out)`` has fan_in ``receptive·in`` and fan_out ``receptive·out`` with
    ``receptive`` the product of the leading (spatial) dimensions."""
    shape = tuple(int(d) for d in shape)
    if input_axes is not None and output_axes is not None:
        return (
            int(np.prod([shape[a] for a in input_axes])),
            int(np.prod([shape[a] for a in output_axes])),
        )
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[:-2]))
    return shape[-2] * receptive, shape[-1] * receptive


def truncated_normal(
    rng: np.random.Generator, shape: Sequence[int], mean: float, stddev: float
) -> np.ndarray:
    """Normal draws truncated to ``mean ± 2·stddev`` (TF's ``truncated_normal``), by
    redrawing the out-of-range ones."""
    values = rng.standard_normal(tuple(shape))
    bad = np.abs(values) > 2.0
    while bad.any():
        values[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(values) > 2.0
    return mean + stddev * values


def _normalised(initializer: Mapping[str, Any] | str) -> tuple[str, dict[str, Any]]:
    if isinstance(initializer, str):
        return _key(initializer), {}
    return _key(str(initializer.get("class_name") or "")), dict(initializer.get("config") or {})


def variance_scaling_params(
    initializer: Mapping[str, Any] | str, shape: Sequence[int]
) -> dict[str, Any] | None:
    """For the VarianceScaling family: ``scale``, ``mode``, ``distribution``, ``fan_in``,
    ``fan_out`` (on the Keras ``shape``) and the resulting ``stddev`` (normals, before
    truncation) or ``limit`` (uniform); None for other initializers."""
    key, config = _normalised(initializer)
    if key not in _VARIANCE_SCALING:
        return None
    scale, mode, distribution = _VARIANCE_SCALING[key]
    scale = float(config.get("scale", scale))
    mode = str(config.get("mode", mode))
    distribution = str(config.get("distribution", distribution)).lower()
    if distribution == "normal":
        distribution = "truncated_normal"
    fan_in, fan_out = keras_fans(shape, config.get("input_axes"), config.get("output_axes"))
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
    variance = scale / max(1.0, fan)
    out: dict[str, Any] = {
        "scale": scale,
        "mode": mode,
        "distribution": distribution,
        "fan_in": fan_in,
        "fan_out": fan_out,
    }
    if distribution == "truncated_normal":
        out["stddev"] = math.sqrt(variance) / TRUNCATION_STDDEV
    elif distribution == "untruncated_normal":
        out["stddev"] = math.sqrt(variance)
    else:
        out["limit"] = math.sqrt(3.0 * variance)
    return out


def is_supported(initializer: Mapping[str, Any] | str | None) -> bool:
    """Whether :func:`sample_initializer` can draw from ``initializer``."""
    if initializer is None:
        return False
    if isinstance(initializer, Mapping) and initializer.get("unsupported"):
        return False
    return _normalised(initializer)[0] in _SUPPORTED_KEYS


def sample_initializer(
    initializer: Mapping[str, Any] | str, shape: Sequence[int], rng: np.random.Generator
) -> np.ndarray:
    """Draw a Keras-layout value of ``shape`` from ``initializer`` (``{"class_name",
    "config"}`` as the TF worker records it, or a Keras name such as ``"he_normal"``), as
    float64.  ``"unit_forget_bias": true`` (Keras LSTM) draws the four gate blocks
    ``[init(units), ones(units), init(2·units)]`` as Keras's LSTMCell does.

    Raises ``ValueError`` for an initializer not in :data:`SUPPORTED`.
    """
    shape = tuple(int(d) for d in shape)
    if isinstance(initializer, Mapping) and initializer.get("unit_forget_bias"):
        base = {k: v for k, v in initializer.items() if k != "unit_forget_bias"}
        units = shape[0] // 4
        return np.concatenate(
            [
                sample_initializer(base, (units,), rng),
                np.ones(units),
                sample_initializer(base, (2 * units,), rng),
            ]
        )
    if not is_supported(initializer):
        name = initializer if isinstance(initializer, str) else initializer.get("class_name")
        raise ValueError(f"initializer {name!r} is not one tf2torch can draw from")
    key, config = _normalised(initializer)
    if key == "zeros":
        return np.zeros(shape)
    if key == "ones":
        return np.ones(shape)
    if key == "constant":
        return np.full(shape, float(config.get("value", 0.0)))
    if key == "randomnormal":
        return rng.normal(float(config.get("mean", 0.0)), float(config.get("stddev", 0.05)), shape)
    if key == "truncatednormal":
        return truncated_normal(
            rng, shape, float(config.get("mean", 0.0)), float(config.get("stddev", 0.05))
        )
    if key == "randomuniform":
        return rng.uniform(
            float(config.get("minval", -0.05)), float(config.get("maxval", 0.05)), shape
        )
    if key == "orthogonal":
        return float(config.get("gain", 1.0)) * orthogonal(rng, shape)
    if key == "identity":
        if len(shape) != 2:
            raise ValueError(f"Identity initializer needs a 2-D shape, got {shape}")
        return float(config.get("gain", 1.0)) * np.eye(*shape)
    params = variance_scaling_params(initializer, shape)
    assert params is not None
    if params["distribution"] == "truncated_normal":
        return truncated_normal(rng, shape, 0.0, params["stddev"])
    if params["distribution"] == "untruncated_normal":
        return rng.normal(0.0, params["stddev"], shape)
    return rng.uniform(-params["limit"], params["limit"], shape)


def orthogonal(rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
    """Keras's ``Orthogonal`` (gain 1): QR of a normal ``(max(r, c), min(r, c))`` matrix with
    ``r`` the product of all but the last dimension, signs fixed by ``diag(R)``, transposed
    when ``r < c`` (so rows, not columns, are orthonormal) and reshaped to ``shape``."""
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
        raise ValueError(f"Orthogonal needs at least 2 dimensions, got {shape}")
    rows, cols = int(np.prod(shape[:-1])), shape[-1]
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return q.reshape(shape)


def reset_parameters(
    module: torch.nn.Module,
    table: Sequence[Mapping[str, Any]] | None = None,
    *,
    seed: int | np.random.Generator | None = None,
    strict: bool = True,
) -> list[dict[str, Any]]:
    """Re-initialise every tensor of a converted module with the distribution Keras would use
    for its TF variable, in place; returns one record per TF variable (``tf_name``,
    ``torch_names``, ``initializer``, ``status``, and ``fan_in``/``fan_out`` for the
    VarianceScaling family, computed on the Keras layout).

    ``table`` defaults to the one attached to ``module`` (``tf2torch_parameters``, set by
    :func:`pipeline.load_torch` and :func:`pipeline.convert`).  Each TF variable is drawn
    once in its Keras shape and placed through every row that holds it (a GRU bias split in
    two rows stays one draw); buffers (BatchNorm moving statistics) are reset too; torch-only
    slots (``nn.LSTM``'s second bias) are zeroed; variables with no torch tensor
    (``unmapped``) are skipped and reported so.

    With ``strict`` (default) a variable whose initializer is missing or unsupported (a
    custom initializer class, a plain function) raises ``ValueError`` naming every such
    variable before anything is changed; otherwise those are left as they are (status
    ``skipped``).
    """
    rows = table_of(module, table)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    groups: dict[str, list[Mapping[str, Any]]] = {}
    torch_only: list[Mapping[str, Any]] = []
    for row in rows:
        if row.get("tf_name"):
            groups.setdefault(str(row["tf_name"]), []).append(row)
        elif row.get("torch_name"):
            torch_only.append(row)
    bad = [
        f"{name} ({(group[0].get('initializer') or {}).get('class_name', 'not recorded')})"
        for name, group in groups.items()
        if any(r.get("torch_name") for r in group) and not is_supported(group[0].get("initializer"))
    ]
    if bad and strict:
        raise ValueError(
            f"cannot reset {len(bad)} variable(s) the Keras way: {', '.join(bad)} "
            f"(supported: {', '.join(SUPPORTED)}; pass strict=False to leave them as they are)"
        )
    tensors = module_tensors(module)
    records = []
    with torch.no_grad():
        for name, group in groups.items():
            initializer = group[0].get("initializer")
            record: dict[str, Any] = {
                "tf_name": name,
                "torch_names": [n for r in group for n in torch_names(r)],
                "initializer": (initializer or {}).get("class_name"),
            }
            if (initializer or {}).get("unit_forget_bias"):
                record["unit_forget_bias"] = True
            records.append(record)
            if not record["torch_names"] or all(r["transform"] == UNMAPPED for r in group):
                record["status"] = "unmapped"
                continue
            if not is_supported(initializer):
                record["status"] = "skipped"
                continue
            assert initializer is not None
            tf_shape = group[0].get("tf_shape")
            if tf_shape is None:
                raise ValueError(
                    f"{name}: the parameter table has no tf_shape (a run from before tf2torch "
                    "recorded initializers): convert again"
                )
            value = sample_initializer(initializer, tf_shape, rng)
            params = variance_scaling_params(initializer, tf_shape)
            if params is not None:
                record["fan_in"], record["fan_out"] = params["fan_in"], params["fan_out"]
            for row in group:
                if row["transform"] == UNMAPPED:
                    continue
                placed = apply_transform(value, str(row["transform"]), row["shape"])
                for torch_name in torch_names(row):
                    target = tensors[torch_name]
                    if tuple(placed.shape) != tuple(target.shape):
                        raise ValueError(
                            f"{name}: {row['transform']} gives {tuple(placed.shape)} but "
                            f"{torch_name} is {tuple(target.shape)}"
                        )
                    target.copy_(torch.as_tensor(placed, dtype=target.dtype))
            record["status"] = "reset"
        for row in torch_only:
            for torch_name in torch_names(row):
                tensors[torch_name].zero_()
            records.append(
                {
                    "tf_name": None,
                    "torch_names": torch_names(row),
                    "initializer": "Zeros",
                    "status": "reset",
                }
            )
    return records
