"""Import stage: ONNX → ``torch.fx.GraphModule`` (onnx2torch + our converters) → ``model.pt2``.

Raw onnx2torch modules do not ``torch.export``: its Reshape, Slice, Squeeze and friends read
shapes and axes from tensors at run time (``.tolist()``, ``.item()``).  Importing
:mod:`pipeline.to_torch.ops` replaces those converters in onnx2torch's registry with ones that
make every such input a Python value at import: constants become ints, and shape arithmetic
(tf2onnx's ``Shape → Gather → Concat → Reshape`` chains) becomes expressions evaluated on
``x.shape`` in ``forward`` -- so the batch dim stays symbolic and exports as a
``torch.export.Dim``.  See that package's docstring for why converters rather than an FX
pass.  After conversion, an FX clean-up drops the shape-chain modules nothing uses any more.

The imported module takes the ONNX graph inputs positionally, in graph order and layout
(NHWC stays NHWC), and returns one tensor for a one-output graph, else a tuple in graph
output order.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx2torch
import torch
from onnx2torch.node_converters.registry import get_converter
from onnx2torch.onnx_tensor import OnnxTensor

import pipeline.to_torch.ops  # noqa: F401 -- registers our converters in onnx2torch
from pipeline.core import onnx_io
from pipeline.core.errors import ExportError, Tf2TorchError, UnsupportedOpsError
from pipeline.core.onnx_graph import all_nodes
from pipeline.to_torch.ops import loop

_STAGE = "import"


def _initializer_array(self: OnnxTensor) -> np.ndarray:
    """onnx2torch's ``OnnxTensor.to_numpy`` (a writable copy of an initializer's value), also
    for a tensor kept in a :class:`~pipeline.core.weight_store.WeightStore`, whose absolute
    location ``numpy_helper.to_array`` refuses: a large graph is imported without its
    weights ever being in the graph, each read from disk straight into its torch tensor."""
    return onnx_io.array(self.proto)


OnnxTensor.to_numpy = _initializer_array


def _op_key(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


def find_unsupported_ops(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Every node, subgraphs included, that no converter (onnx2torch's registry with ours)
    handles at the model's opset for the node's domain.

    Returns op type (``domain::OpType`` outside the default domain) → node names (a node
    without a name is shown as ``<OpType #i>``), or an empty dict if all are supported.
    Control-flow ops without a converter (``If``, ``Scan``) are listed together with
    whatever inside their bodies is unsupported; a ``Loop``'s body is checked here too.
    """
    opsets = {o.domain or "": o.version for o in model.opset_import}
    opsets.setdefault("ai.onnx", opsets.get("", 0))
    unsupported: dict[str, list[str]] = {}
    for index, node in enumerate(all_nodes(model.graph)):
        domain = "" if node.domain == "ai.onnx" else node.domain
        version = opsets.get(domain)
        supported = False
        if version is not None:
            try:
                get_converter(operation_type=node.op_type, version=version, domain=domain)
                supported = True
            except NotImplementedError:
                pass
        if not supported:
            name = node.name or f"<{node.op_type} #{index}>"
            unsupported.setdefault(_op_key(node), []).append(name)
    return unsupported


@contextmanager
def _distinct_outputs(model: onnx.ModelProto) -> Iterator[onnx.ModelProto]:
    """``model`` with each graph output coming from its own Identity node, for the duration
    of the block, then as it was (changed in place and put back: a copy would be one more
    copy of every weight).

    onnx2torch returns the *node* behind each output, deduplicated: one output of a
    multi-output node would come back as the whole tuple, a graph input passed straight
    through fails, and two outputs of one node collapse into one.
    """
    graph = model.graph
    nodes = len(graph.node)
    names = [output.name for output in graph.output]
    taken = {v for n in graph.node for v in n.output} | {v.name for v in graph.input}
    try:
        for output in graph.output:
            name = f"{output.name}__output"
            while name in taken:
                name += "_"
            taken.add(name)
            graph.node.append(onnx.helper.make_node("Identity", [output.name], [name], name=name))
            output.name = name
        yield model
    finally:
        del graph.node[nodes:]
        for output, name in zip(graph.output, names, strict=True):
            output.name = name


def _drop_dead_code(module: torch.fx.GraphModule) -> None:
    """Remove what our converters left unused: shape chains, Constant nodes, initializers."""
    graph = module.graph
    graph.eliminate_dead_code()
    module.delete_all_unused_submodules()
    used = {n.target for n in graph.nodes if n.op == "get_attr"}
    # onnx2torch keeps initializers as buffers of one container; it is gone if none is used.
    initializers = getattr(module, "initializers", torch.nn.Module())
    for name in [n for n, _ in initializers.named_buffers(recurse=False)]:
        if f"initializers.{name}" not in used:
            delattr(initializers, name)
    module.recompile()


def _outputs_as_tuple(module: torch.fx.GraphModule) -> None:
    # onnx2torch returns a list for several outputs; a tuple is what torch.export and
    # callers expect of a fixed set of outputs.
    output = next(n for n in module.graph.nodes if n.op == "output")
    if isinstance(output.args[0], list):
        output.args = (tuple(output.args[0]),)
        module.recompile()


def import_onnx(model: onnx.ModelProto) -> torch.fx.GraphModule:
    """Convert ``model`` to a ``torch.fx.GraphModule`` with onnx2torch and our converters.

    Raises :class:`UnsupportedOpsError` ('import', ops) listing every unsupported op at
    once, before converting anything.  The module takes the ONNX graph inputs positionally
    in graph order (same layout), and returns a tensor for a one-output graph, else a tuple
    of tensors in graph output order.  Any other conversion failure is a
    :class:`Tf2TorchError` naming the import stage.  ``model`` is left as it was.
    """
    unsupported = find_unsupported_ops(model)
    if unsupported:
        raise UnsupportedOpsError(_STAGE, unsupported)
    # A Loop's body is imported as a model of its own, with this model's opsets.
    opsets = loop.MODEL_OPSETS.set(tuple((o.domain, o.version) for o in model.opset_import))
    try:
        with _distinct_outputs(model) as distinct:
            module = onnx2torch.convert(distinct)
    except Tf2TorchError:
        raise  # a Loop body's own import failure, already one line
    except (NotImplementedError, ValueError, RuntimeError, KeyError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise Tf2TorchError(f"{_STAGE}: onnx2torch could not convert the graph: {message}") from exc
    finally:
        loop.MODEL_OPSETS.reset(opsets)
    _drop_dead_code(module)
    _outputs_as_tuple(module)
    return module


def _export_inputs(example_inputs: Sequence[np.ndarray]) -> tuple[torch.Tensor, ...]:
    tensors = []
    for array in example_inputs:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        # torch.export specialises a size-1 dim to 1, so trace with a batch of two.
        if tensor.dim() > 0 and tensor.shape[0] == 1:
            tensor = torch.cat([tensor, tensor])
        tensors.append(tensor)
    return tuple(tensors)


@dataclass(frozen=True)
class StaticDim:
    """An input axis the model leaves dynamic that ``model.pt2`` had to fix to ``size``."""

    input: str
    axis: int
    size: int
    reason: str
    """What forced it: the guard torch.export reports when asked to keep the axis dynamic."""

    def to_json(self) -> dict[str, object]:
        """The report's ``static_dims`` entry."""
        return {"input": self.input, "axis": self.axis, "size": self.size, "reason": self.reason}


def _one_line(exc: BaseException) -> str:
    # The first line is often only a heading ("Constraints violated (batch)!"); the second
    # says what happened.  Keep both, on one line.
    lines = [" ".join(line.split()) for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: " + " ".join(lines[:2])[:400]


def _export(module: torch.nn.Module, args: tuple[torch.Tensor, ...], shapes: Any) -> Any:
    with warnings.catch_warnings():
        # nn.LSTM/nn.GRU rebuild their `_flat_weights` list in forward; export notices the
        # list assignment, but the weights themselves are parameters and are exported.
        warnings.filterwarnings("ignore", message=r".*_flat_weights.*assigned during export")
        return torch.export.export(module, args, dynamic_shapes=shapes)


def _specialised(program: Any, dynamic_axes: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
    """(input index, axis, size) of every requested dynamic axis the program made static."""
    user_inputs = list(program.graph_signature.user_inputs)
    values = {
        node.name: node.meta.get("val")
        for node in program.graph.nodes
        if node.op == "placeholder" and node.name in user_inputs
    }
    fixed = []
    for i, axes in enumerate(dynamic_axes):
        value = values.get(user_inputs[i]) if i < len(user_inputs) else None
        if value is None:
            continue
        for axis in axes:
            size = value.shape[axis]
            # A specialised axis may still be a SymInt, one whose value is a known constant.
            constant = size.node.maybe_as_int() if isinstance(size, torch.SymInt) else int(size)
            if constant is not None:
                fixed.append((i, axis, int(constant)))
    return fixed


def export_program(
    module: torch.nn.Module,
    example_inputs: Sequence[np.ndarray],
    path: Path,
    dynamic_axes: Sequence[Sequence[int]] | None = None,
    input_names: Sequence[str] | None = None,
) -> list[StaticDim]:
    """``torch.export`` ``module`` with every dynamic axis of its inputs kept dynamic where the
    module allows it, and ``torch.export.save`` it to ``path`` atomically (a temp file in the
    same directory, then ``os.replace``).

    ``dynamic_axes[i]`` lists the axes of input ``i`` that the model leaves dynamic (default:
    the leading, batch, axis of every input of rank > 0; a Keras ``(None, None)`` token input
    has two).  Each is exported as ``Dim.AUTO``: symbolic unless the module needs a fixed size
    there, in which case the run still succeeds with that axis static, and the returned
    :class:`StaticDim` says which axis and what forced it (the guard a strict re-export
    reports).  Example inputs with batch 1 are repeated to batch 2 for tracing, because export
    specialises size-1 dims.  Raises :class:`ExportError` with a one-line message on failure.
    """
    args = _export_inputs(example_inputs)
    axes = (
        [list(a) for a in dynamic_axes]
        if dynamic_axes is not None
        else [[0] if a.dim() > 0 else [] for a in args]
    )
    names = (
        list(input_names) if input_names is not None else [f"input {i}" for i in range(len(args))]
    )
    shapes = tuple({axis: torch.export.Dim.AUTO for axis in a} or None for a in axes)
    try:
        program = _export(module, args, shapes)
    except Exception as exc:  # torch.export raises many unrelated types; all mean "failed"
        raise ExportError(f"torch.export failed: {_one_line(exc)}") from exc
    static = []
    for i, axis, size in _specialised(program, axes):
        strict = tuple(
            {ax: torch.export.Dim(f"d{j}_{ax}") for ax in a if (j, ax) == (i, axis)} or None
            for j, a in enumerate(axes)
        )
        try:
            _export(module, args, strict)
            reason = "torch.export specialised it"
        except Exception as exc:  # the strict export's complaint names the guard
            reason = _one_line(exc)
        static.append(StaticDim(names[i], axis, size, reason))
    path = Path(path)
    tmp_name: str | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.pt2")
        os.close(fd)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"No complete tensor found in the group")
            torch.export.save(program, tmp_name)
        os.replace(tmp_name, path)
    except OSError as exc:
        raise ExportError(f"could not write {path}: {exc}") from exc
    finally:
        if tmp_name is not None:  # already renamed on success; removed on any failure
            Path(tmp_name).unlink(missing_ok=True)
    return static


def load_program(path: Path) -> torch.nn.Module:
    """The module saved by :func:`export_program`: ``torch.export.load(path).module()``.

    Needs torch only (never TensorFlow).
    """
    with warnings.catch_warnings():
        # Raised for tensors that share storage in the archive (a parameter and a view of
        # it); everything here lives on the CPU, which is the case the warning is about.
        warnings.filterwarnings("ignore", message=r"No complete tensor found in the group")
        return torch.export.load(str(path)).module()
