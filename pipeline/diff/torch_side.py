"""PyTorch intermediates: ``model.onnx`` imported again, every module call recorded.

``model.pt2`` cannot be recorded node by node against ONNX: ``torch.export`` renamed its
parameters after the TF variables and flattened its modules.  The module imported from
``model.onnx`` by :func:`pipeline.to_torch.importer.import_onnx` (onnx2torch + our converters +
the patches' converters) is an FX graph with one ``call_module`` per ONNX node, its target
being onnx2torch's unique name of that node; an FX interpreter records each call's result
under the ONNX output names of that node.  The fresh import computes what ``model.pt2``
computes (:func:`check_program` verifies that on the run's inputs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx2torch.onnx_graph import OnnxGraph

from pipeline.core.errors import BadInputError, Tf2TorchError, UnsupportedOpsError
from pipeline.core.torch_runner import place_module, positional_args
from pipeline.passes import builtin_patches, load_patch_dir
from pipeline.to_torch.importer import import_onnx


def load_converters(patch_dirs: Sequence[Path]) -> None:
    """Register the converters of the built-in patches and of every ``--patches DIR``."""
    builtin_patches()
    for directory in patch_dirs:
        if not Path(directory).is_dir():
            raise BadInputError(f"--patches {directory} is not a directory")
        load_patch_dir(Path(directory))


def import_for_diff(model: onnx.ModelProto) -> torch.fx.GraphModule:
    """``model`` imported with our converters; a missing converter is a one-line error that
    points at ``--patches``."""
    try:
        return import_onnx(model)
    except UnsupportedOpsError as err:
        ops = "; ".join(f"{op} x{len(nodes)}" for op, nodes in sorted(err.ops.items()))
        raise BadInputError(
            f"model.onnx has ops no converter handles ({ops}): pass the --patches DIR the "
            "run was converted with"
        ) from None


def node_unique_names(model: onnx.ModelProto) -> list[str]:
    """onnx2torch's unique name of every top-level node, in graph order (the FX targets)."""
    return list(OnnxGraph(model.graph).nodes)


@dataclass
class TorchRecord:
    """What the torch side produced: values by ONNX tensor name, and per ONNX node the
    module it became (``target (Class)``), or nothing when import folded it away."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    modules: dict[int, str] = field(default_factory=dict)
    """Node index → ``target (Class)`` of the module it became."""
    device: str = "cpu"


class _Recorder(torch.fx.Interpreter):
    def __init__(self, module: torch.fx.GraphModule, wanted: Mapping[str, Sequence[str]]) -> None:
        super().__init__(module, garbage_collect_values=True)
        self.wanted = wanted
        self.record: dict[str, np.ndarray] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        result = super().run_node(n)
        if n.op == "call_module" and n.target in self.wanted:
            names = [name for name in self.wanted[str(n.target)] if name]
            values = list(result) if isinstance(result, list | tuple) else [result]
            for name, value in zip(names, values, strict=False):
                if isinstance(value, torch.Tensor):
                    # One host copy per tensor; the interpreter drops its own after last use.
                    self.record[name] = value.detach().cpu().numpy()
        return result


def record_torch(
    module: torch.fx.GraphModule,
    model: onnx.ModelProto,
    inputs: Mapping[str, np.ndarray],
    input_names: Sequence[str],
) -> TorchRecord:
    """Run ``module`` (imported from ``model``) on ``inputs`` and record every node output."""
    device = place_module(module)
    module.eval()
    unique = node_unique_names(model)
    wanted = {u: list(node.output) for u, node in zip(unique, model.graph.node, strict=True)}
    submodules = dict(module.named_modules())
    targets = {str(n.target) for n in module.graph.nodes if n.op == "call_module"}
    modules = {
        index: f"{u} ({type(submodules[u]).__name__})"
        for index, u in enumerate(unique)
        if u in targets and u in submodules
    }
    recorder = _Recorder(module, wanted)
    with torch.no_grad():
        recorder.run(*positional_args(inputs, input_names, device))
    return TorchRecord(recorder.record, modules, str(device))


def run_onnx_in_torch(
    model: onnx.ModelProto, inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Import a (sub)model with our converters and run it: outputs keyed by output name."""
    module = import_onnx(model)
    device = place_module(module)
    module.eval()
    names = [i.name for i in model.graph.input]
    with torch.no_grad():
        result = module(*positional_args(inputs, names, device))
    tensors = list(result) if isinstance(result, list | tuple) else [result]
    outputs = [o.name for o in model.graph.output]
    return {n: t.detach().cpu().numpy() for n, t in zip(outputs, tensors, strict=True)}


def check_program(
    program_path: Path,
    inputs: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
) -> dict[str, np.ndarray] | None:
    """``model.pt2``'s outputs on ``inputs``, or None when it cannot be loaded or run."""
    from pipeline.core.torch_runner import run_torch
    from pipeline.to_torch.importer import load_program

    if not program_path.is_file():
        return None
    try:
        program = load_program(program_path)
        place_module(program)
        return run_torch(program, inputs, input_names, output_names)
    except (Tf2TorchError, RuntimeError, ValueError):
        return None
