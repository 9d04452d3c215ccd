"""The import stage as one call: ONNX → onnx2torch module with the TF variables adopted as
named parameters → ``model.pt2`` (torch.export, dynamic batch) → the module every check runs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from pipeline.core import onnx_io, provenance
from pipeline.core.errors import BadInputError, UnsupportedOpsError
from pipeline.core.memory import release as release_memory
from pipeline.core.onnx_graph import all_nodes
from pipeline.core.run_dir import REPORT_NAME
from pipeline.core.signature import TensorSpec
from pipeline.to_torch.codegen import (
    PACKAGE,
    emit_package,
    keras_layout,
    load_generated,
    renamed_entries,
)
from pipeline.to_torch.importer import (
    StaticDim,
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
    static_dims: list[StaticDim]
    """Dynamic input axes that ``model.pt2`` had to fix (report.json's ``static_dims``)."""
    problems: dict[str, str]
    """TF variable (or torch parameter) → why it has no trainable parameter of its own."""
    torch_model: dict[str, Any]
    """The generated ``torch_model/`` package (report.json's ``torch_model``)."""
    route: str = ""
    """How the export located the variables (the provenance record's ``route``)."""


def import_torch(
    model: onnx.ModelProto,
    variables: Sequence[dict[str, Any]],
    values: Sequence[np.ndarray],
    example_inputs: Sequence[np.ndarray],
    input_specs: Sequence[TensorSpec],
    output_names: Sequence[str],
    pt2_path: Path,
    *,
    model_name: str | None = None,
    layers: Sequence[Mapping[str, str]] = (),
    channels_first: bool = False,
    flat: bool = True,
) -> Imported:
    """Import ``model`` into torch, give every TF variable (``variables`` metadata with their
    ``values``) its own named parameter or buffer, found through the model's provenance record
    (see :mod:`pipeline.to_torch.parameters`), write it out as code (``torch_model/`` beside
    ``pt2_path``, see :mod:`pipeline.to_torch.codegen`; classes and attributes named after
    ``model_name`` and the Keras ``layers``, NCHW images with ``channels_first``, repeated
    blocks as classes unless ``flat``), import that
    package afresh, and export ``pt2_path`` from it on ``example_inputs`` (in input order) with
    every axis that ``input_specs`` leaves dynamic (``None``) dynamic where the module allows
    it.  The generated module is the one returned: what every check runs (one model, one
    proof).

    Raises :class:`~pipeline.core.errors.UnsupportedOpsError` listing every op no converter
    handles, and :class:`~pipeline.core.errors.ExportError` when torch.export fails.
    """
    unsupported = find_unsupported_ops(model)
    if unsupported:
        raise UnsupportedOpsError("import", unsupported)
    marked, prints, record = fingerprinted(model, variables, values)
    eager = import_onnx(marked)
    del marked  # a copy of every weight, read by nothing after the import
    release_memory(onnx_io.weight_bytes(model))
    read = {name for node in all_nodes(model.graph) for name in node.input}
    read |= {output.name for output in model.graph.output}
    adoption = adopt_tf_variables(eager, variables, values, prints, record, read)
    # The cross-check by value: each recorded initializer is what its record says.
    by_path = _ByPath({str(v["path"]): i for i, v in enumerate(variables)}, values)
    for name, problem in provenance.check_values(model, record, by_path).items():
        for part in record.initializers[name]:
            adoption.problems.setdefault(part.variable, f"initializer {name}: {problem}")
    eager.eval()
    emitted = emit_package(
        eager,
        parameter_table(adoption.entries, variables),
        pt2_path.parent,
        model_name=model_name,
        input_names=[s.name for s in input_specs],
        output_names=list(output_names),
        example_inputs=list(example_inputs),
        layers=list(layers),
        channels_first=channels_first,
        flat=flat,
    )
    # The generated package is written: the eager import (a copy of every weight) goes
    # before the package is loaded and exported.
    del eager
    release_memory(onnx_io.weight_bytes(model))
    entries = renamed_entries(adoption.entries, emitted.renames)
    table = parameter_table(entries, variables)
    module = load_generated(emitted.path)
    if any(emitted.channels_first):  # the checks feed Keras's NHWC inputs
        keras_layout(module, emitted.channels_first)
    static = export_program(
        module,
        list(example_inputs),
        pt2_path,
        dynamic_axes=[[i for i, d in enumerate(s.shape) if d is None] for s in input_specs],
        input_names=[s.name for s in input_specs],
    )
    attach_table(module, table)
    apply_requires_grad(module, table)
    return Imported(
        module, entries, table, static, adoption.problems, emitted.to_json(), record.route
    )


class _ByPath(Mapping[str, np.ndarray]):
    """Variable values by path, each read from ``values`` (which may read it from disk) only
    when asked for."""

    def __init__(self, index: Mapping[str, int], values: Sequence[np.ndarray]) -> None:
        self._index, self._values = dict(index), values

    def __getitem__(self, path: str) -> np.ndarray:
        return np.asarray(self._values[self._index[path]])

    def __contains__(self, path: object) -> bool:
        return path in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


def load_run_module(run_dir: Path, *, generated: bool = True) -> torch.nn.Module:
    """A run directory's PyTorch module with the run's parameter table attached and each
    parameter's ``requires_grad`` as the table says: the generated ``torch_model/`` package
    (imported afresh) when the run has one and ``generated`` is true, else the ``model.pt2``
    program (torch.export does not keep ``requires_grad``; the table restores it).

    Raises :class:`~pipeline.core.errors.BadInputError` when the run has no ``model.pt2``.
    """
    path = run_dir / PT2
    if not path.is_file():
        raise BadInputError(f"{run_dir} is not a tf2torch run directory (no {PT2})")
    package = run_dir / PACKAGE
    module = load_generated(package) if generated and package.is_dir() else load_program(path)
    restore_requires_grad(module, run_dir / REPORT_NAME)
    return module
