"""The import stage as one call: ONNX → onnx2torch module with the TF variables adopted as
named parameters → ``model.pt2`` (torch.export, dynamic batch) → the module every check runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from pipeline.core import provenance
from pipeline.core.errors import BadInputError, UnsupportedOpsError
from pipeline.core.run_dir import REPORT_NAME
from pipeline.to_torch.importer import (
    export_program,
    find_unsupported_ops,
    import_onnx,
    load_program,
)
from pipeline.to_torch.parameters import ParameterEntry, adopt_tf_variables, fingerprinted
from pipeline.to_torch.table import (
    apply_requires_grad,
    attach_table,
    parameter_table,
    restore_requires_grad,
)

PT2 = "model.pt2"


@dataclass
class Imported:
    """The import stage's output."""

    module: torch.nn.Module
    """The module loaded back from ``model.pt2``, carrying the parameter table."""
    parameters: list[ParameterEntry]
    table: list[dict[str, Any]]
    """report.json's ``parameters`` rows."""
    problems: dict[str, str]
    """TF variable (or torch parameter) → why it has no trainable parameter of its own."""
    route: str = ""
    """How the export located the variables (the provenance record's ``route``)."""


def import_torch(
    model: onnx.ModelProto,
    variables: Sequence[dict[str, Any]],
    values: Sequence[np.ndarray],
    example_inputs: Sequence[np.ndarray],
    pt2_path: Path,
) -> Imported:
    """Import ``model`` into torch, give every TF variable (``variables`` metadata with their
    ``values``) its own named parameter or buffer, found through the model's provenance record
    (see :mod:`pipeline.to_torch.parameters`), export ``pt2_path`` on ``example_inputs`` (in
    input order) and load it back.

    Raises :class:`~pipeline.core.errors.UnsupportedOpsError` listing every op no converter
    handles, and :class:`~pipeline.core.errors.ExportError` when torch.export fails.
    """
    unsupported = find_unsupported_ops(model)
    if unsupported:
        raise UnsupportedOpsError("import", unsupported)
    marked, prints, record = fingerprinted(model, variables, list(values))
    eager = import_onnx(marked)
    adoption = adopt_tf_variables(eager, variables, list(values), prints, record)
    # The cross-check by value: each recorded initializer is what its record says.
    by_path = {str(v["path"]): np.asarray(a) for v, a in zip(variables, values, strict=True)}
    for name, problem in provenance.check_values(model, record, by_path).items():
        for part in record.initializers[name]:
            adoption.problems.setdefault(part.variable, f"initializer {name}: {problem}")
    eager.eval()
    table = parameter_table(adoption.entries, variables)
    export_program(eager, list(example_inputs), pt2_path)
    module = load_program(pt2_path)
    attach_table(module, table)
    apply_requires_grad(module, table)
    return Imported(module, adoption.entries, table, adoption.problems, record.route)


def load_run_module(run_dir: Path) -> torch.nn.Module:
    """A run directory's ``model.pt2`` with the run's parameter table attached and each
    parameter's ``requires_grad`` as the table says (torch.export does not keep it).

    Raises :class:`~pipeline.core.errors.BadInputError` when the run has no ``model.pt2``.
    """
    path = run_dir / PT2
    if not path.is_file():
        raise BadInputError(f"{run_dir} is not a tf2torch run directory (no {PT2})")
    module = load_program(path)
    restore_requires_grad(module, run_dir / REPORT_NAME)
    return module
