"""TF variables ↔ torch tensors of a converted module, through the run's parameter table.

Each row of ``report.json``'s ``parameters`` says which torch tensor holds a TF variable and
how the TF value is laid out there (``transform``, applied by
:func:`pipeline.parameters.apply_transform`).  A variable may span several rows (a GRU bias
split into ``bias_ih``/``bias_hh``); rows without a TF name (``nn.LSTM``'s extra zero bias)
are torch-only and take no part in training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.errors import BadInputError
from pipeline.parameters import UNMAPPED, apply_transform


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

    def error(self, value: np.ndarray) -> tuple[float, float, str]:
        """(max |torch − tf|, that divided by max |tf|, the worst part's torch name)."""
        worst = (0.0, 0.0, self.parts[0].torch_name)
        scale = float(np.max(np.abs(value))) if np.size(value) else 0.0
        for part, array in zip(self.parts, self.torch_layout(value), strict=True):
            got = part.tensor.detach().cpu().numpy().astype(np.float64)
            diff = float(np.max(np.abs(got - array.astype(np.float64)))) if got.size else 0.0
            if diff >= worst[0]:
                tiny = float(np.finfo(np.float32).tiny)
                worst = (diff, diff / max(scale, tiny), part.torch_name)
        return worst


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
                    f"TF variable {name} has no torch tensor in the run (folded by tf2onnx?); "
                    "it cannot train like Keras's: convert again with --keep-batchnorm"
                    if "moving" in name or "gamma" in name or "beta" in name
                    else f"TF variable {name} has no torch tensor in the run, so it cannot train"
                )
            variable.parts.append(
                TorchPart(str(torch_name), str(row["transform"]), list(row["shape"]), tensors[torch_name])
            )
        mapped.append(variable)
    return mapped
