"""TF variables ↔ torch tensors of a converted module, through the run's parameter table.

Each row of ``report.json``'s ``parameters`` says which torch tensor holds a TF variable and
how the TF value is laid out there (``transform``, applied by
:func:`pipeline.to_torch.parameters.apply_transform`).  A variable may span several rows (a GRU bias
split into ``bias_ih``/``bias_hh``); rows without a TF name (``nn.LSTM``'s extra zero bias)
are torch-only and take no part in training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.core.errors import BadInputError
from pipeline.to_torch.parameters import UNMAPPED, apply_transform

_TINY = float(np.finfo(np.float32).tiny)


@dataclass
class TorchPart:
    """One torch tensor holding (part of) a TF variable."""

    torch_name: str
    transform: str
    shape: list[int]
    tensor: torch.Tensor


@dataclass
class MappedVariable:
    """A TF variable and the torch tensor(s) that hold it."""

    tf_name: str
    trainable: bool
    parts: list[TorchPart] = field(default_factory=list)

    @property
    def tensors(self) -> list[torch.Tensor]:
        """The torch tensors, in table order."""
        return [p.tensor for p in self.parts]

    def torch_layout(self, value: np.ndarray) -> list[np.ndarray]:
        """A TF value (or gradient) carried to each part's torch layout."""
        return [apply_transform(value, p.transform, p.shape) for p in self.parts]

    @torch.no_grad()
    def assign(self, value: np.ndarray) -> None:
        """Set the torch tensor(s) to a TF value."""
        for part, array in zip(self.parts, self.torch_layout(value), strict=True):
            part.tensor.copy_(torch.from_numpy(np.ascontiguousarray(array)).to(part.tensor.dtype))

    def error(self, value: np.ndarray) -> VariableError:
        """How far the torch tensor(s) are from the TF value (see :class:`VariableError`)."""
        want = [a.astype(np.float64).ravel() for a in self.torch_layout(value)]
        got = [p.tensor.detach().cpu().numpy().astype(np.float64).ravel() for p in self.parts]
        diffs = [np.abs(g - w) for g, w in zip(got, want, strict=True)]
        worst_part = max(range(len(diffs)), key=lambda i: float(diffs[i].max(initial=0.0)))
        max_abs = float(diffs[worst_part].max(initial=0.0))
        scale = float(np.abs(value).max(initial=0.0))
        norm = float(np.sqrt(sum(float(np.sum(w * w)) for w in want)))
        diff_norm = float(np.sqrt(sum(float(np.sum(d * d)) for d in diffs)))
        return VariableError(
            variable=self.tf_name,
            torch_name=self.parts[worst_part].torch_name,
            max_abs=max_abs,
            rel=diff_norm / max(norm, _TINY) if diff_norm else 0.0,
            max_rel=max_abs / max(scale, _TINY) if max_abs else 0.0,
        )


@dataclass(frozen=True)
class VariableError:
    """A variable's error: ``max_abs`` = max |torch - tf|; ``rel`` = ‖torch - tf‖₂ / ‖tf‖₂
    (the relative error of the whole tensor, which the checks judge); ``max_rel`` =
    ``max_abs`` / max |tf|.  ``torch_name`` is the tensor holding the largest difference."""

    variable: str
    torch_name: str
    max_abs: float
    rel: float
    max_rel: float

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "variable": self.variable,
            "torch_name": self.torch_name,
            "max_abs": self.max_abs,
            "rel": self.rel,
            "max_rel": self.max_rel,
        }


def map_variables(
    module: torch.nn.Module, table: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> list[MappedVariable]:
    """The :class:`MappedVariable` of each TF variable in ``names`` (model order).

    Raises :class:`BadInputError` for a variable with no torch tensor (``unmapped``: e.g. a
    BatchNorm folded into its convolution, which cannot train like Keras's)."""
    tensors: dict[str, torch.Tensor] = {
        **dict(module.named_buffers()),
        **dict(module.named_parameters()),
    }
    rows: dict[str, list[Mapping[str, Any]]] = {}
    for row in table:
        if row.get("tf_name"):
            rows.setdefault(str(row["tf_name"]), []).append(row)
    mapped = []
    for name in names:
        found = rows.get(name)
        if not found:
            raise BadInputError(f"TF variable {name} is not in the run's parameter table")
        variable = MappedVariable(name, bool(found[0]["trainable"]))
        for row in found:
            torch_name = row.get("torch_name")
            if row["transform"] == UNMAPPED or not torch_name or torch_name not in tensors:
                raise BadInputError(
                    f"TF variable {name} has no torch tensor in the run (folded by "
                    "--fold-for-inference?); it cannot train like Keras's: convert again "
                    "without --fold-for-inference"
                    if "moving" in name or "gamma" in name or "beta" in name
                    else f"TF variable {name} has no torch tensor in the run, so it cannot train"
                )
            variable.parts.append(
                TorchPart(
                    str(torch_name), str(row["transform"]), list(row["shape"]), tensors[torch_name]
                )
            )
        mapped.append(variable)
    return mapped
