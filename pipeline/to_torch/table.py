"""The parameter table on a torch module: where each TF variable lives in the module
(``report.json``'s ``parameters`` rows), attached as ``module.tf2torch_parameters`` where
:func:`pipeline.init.reset_parameters` and :func:`pipeline.scaling.scale_weights` read it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from pipeline.to_torch.parameters import ParameterEntry

TABLE_ATTRIBUTE = "tf2torch_parameters"
"""The attribute on a converted module that holds the parameter table (report rows)."""


_TABLE_EXTRAS = ("layer", "layer_class", "layer_kind", "initializer")


def parameter_table(
    parameters: Sequence[ParameterEntry], variables: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The report's ``parameters`` rows: each :class:`ParameterEntry` plus, from the TF
    worker's metadata, ``tf_shape`` (the Keras layout the transform starts from) and, for
    Keras models, ``layer``, ``layer_class``, ``layer_kind`` and ``initializer``."""
    meta = {str(v["path"]): v for v in variables}
    rows = []
    for entry in parameters:
        row = entry.to_json()
        found = meta.get(entry.tf_name or "")
        if found is not None:
            row["tf_shape"] = list(found["shape"])
            row.update({key: found[key] for key in _TABLE_EXTRAS if key in found})
        rows.append(row)
    return rows


def attach_table(module: torch.nn.Module, rows: Sequence[Mapping[str, Any]]) -> None:
    """Attach the parameter table to ``module`` as ``tf2torch_parameters`` (a plain list of
    report rows), where :func:`pipeline.init.reset_parameters` and
    :func:`pipeline.scaling.scale_weights` look for it."""
    setattr(module, TABLE_ATTRIBUTE, [dict(row) for row in rows])


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


def apply_requires_grad(module: torch.nn.Module, table: Sequence[Mapping[str, Any]]) -> None:
    """Set each parameter's ``requires_grad`` as the table says (torch.export does not keep
    it): on for the parameters of trainable rows, off for every other (frozen rows, torch
    slots Keras lacks such as ``nn.LSTM``'s second bias, constants a torch class keeps as a
    parameter); and drop any leftover ``.grad``."""
    trainable = {row["torch_name"] for row in table if row.get("torch_name") and row["trainable"]}
    for name, parameter in module.named_parameters(remove_duplicate=False):
        parameter.requires_grad_(name in trainable)
        parameter.grad = None


def restore_requires_grad(module: torch.nn.Module, report_path: Path) -> None:
    """Attach the run's table (``report.json``'s ``parameters``) and apply its
    ``requires_grad`` flags (see :func:`apply_requires_grad`)."""
    if not report_path.is_file():
        return
    table = json.loads(report_path.read_text()).get("parameters") or []
    attach_table(module, table)
    apply_requires_grad(module, table)
