"""The registries every op module writes into: converters, code forms, helpers, op homes.

**Converters.**  onnx2torch's ``add_converter`` raises on a duplicate (domain, op, version),
so an override has to write its registry dict directly.  :func:`override_converter` does that
in one place and hands each of our converters the converter it replaced (or None), so ours
can fall back to onnx2torch's module where its inputs are not known at import time.
:func:`new_converter` registers a converter for an (op, version) onnx2torch lacks.
:func:`uses_onnx2torch` is the note that onnx2torch's converter is used as it is.  All three
record the calling module as the op's home (:data:`OPS`); a second module claiming the same
op raises.

**Code forms.**  A code form (a :data:`Translator`) gets a :class:`NodeContext` (the module,
its arguments already rendered as Python source, the tensor shapes and dtypes seen when the
graph ran on the example inputs) and returns the right-hand side of one statement of
``torch_model/model.py``, e.g. ``conv.permute(0, 3, 1, 2)``.  :func:`translates` registers
one per torch module class.  Modules that hold weights are attributes of the generated class
and are called as ``self.<path>(...)`` (:func:`call_attribute`).  An op whose semantics need
more than an expression calls a helper function written into the same file; its op module
registers the helper's source with :func:`register_helper`.

**Refused.**  :data:`REFUSED` lists, with the reason, each module class the importer can
produce that has no code form (tests/to_torch/test_op_registry.py holds the registry to it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from onnx import defs
from onnx2torch.node_converters.base_element_wise import OnnxBaseElementWise
from onnx2torch.node_converters.constant import OnnxConstant
from onnx2torch.node_converters.constant_of_shape import OnnxConstantOfShape
from onnx2torch.node_converters.cumsum import OnnxCumSum
from onnx2torch.node_converters.dropout import OnnxDropoutDynamic
from onnx2torch.node_converters.expand import OnnxExpand
from onnx2torch.node_converters.gather import OnnxGatherElements, OnnxGatherND
from onnx2torch.node_converters.identity import OnnxCopyIdentity
from onnx2torch.node_converters.layer_norm import OnnxLayerNorm
from onnx2torch.node_converters.nms import OnnxNonMaxSuppression
from onnx2torch.node_converters.nonzero import OnnxNonZero
from onnx2torch.node_converters.pad import OnnxPadDynamic
from onnx2torch.node_converters.range import OnnxRange
from onnx2torch.node_converters.reduce import OnnxReduceSumDynamicAxes
from onnx2torch.node_converters.registry import (
    _CONVERTER_REGISTRY,
    OperationDescription,
    TConverter,
    add_converter,
)
from onnx2torch.node_converters.reshape import OnnxReshape
from onnx2torch.node_converters.resize import OnnxResize, OnnxResizeV10
from onnx2torch.node_converters.roialign import OnnxRoiAlign
from onnx2torch.node_converters.scatter_nd import OnnxScatterND
from onnx2torch.node_converters.slice import OnnxSlice, OnnxSliceV9
from onnx2torch.node_converters.split import OnnxSplit13
from onnx2torch.node_converters.squeeze import OnnxSqueezeDynamicAxes
from onnx2torch.node_converters.tile import OnnxTile
from onnx2torch.node_converters.topk import OnnxTopK
from onnx2torch.node_converters.unsqueeze import OnnxUnsqueezeDynamicAxes
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult
from torch import nn
from torch.fx.passes.shape_prop import TensorMetadata

# Imported as a module (not its names): ops and codegen import each other's modules, and
# either package may be the one imported first (see pipeline/to_torch/ops/__init__.py).
from pipeline.to_torch.codegen import literals
from pipeline.to_torch.ops.shape_values import DimOf, Expr, ShapeArgs

# ------------------------------------------------------------------------------ op homes

Converter = Literal["ours", "onnx2torch"]


@dataclass(frozen=True)
class OpEntry:
    """Where one ONNX op type is handled."""

    home: str
    """The op module (``pipeline.to_torch.ops.<name>``) holding its converter and code forms."""
    converter: Converter
    """``ours`` if any version's converter is ours (it may fall back to onnx2torch's for
    data-dependent inputs), else ``onnx2torch`` (used as it is)."""
    classes: tuple[type, ...]
    """The torch module classes its converter(s) can produce."""


OPS: dict[str, OpEntry] = {}


def claim_op(op_type: str, home: str, converter: Converter, classes: Iterable[type]) -> None:
    """Record ``home`` as the module of ``op_type``; ValueError if another module has it.

    The same module may claim an op more than once (several versions, ours and onnx2torch's):
    the entry becomes ``ours`` if any claim is, and collects the classes."""
    entry = OPS.get(op_type)
    if entry is not None and entry.home != home:
        raise ValueError(f"{op_type} has two homes: {entry.home} and {home}")
    if entry is not None:
        converter = "ours" if "ours" in (converter, entry.converter) else "onnx2torch"
        classes = [*entry.classes, *(c for c in classes if c not in entry.classes)]
    OPS[op_type] = OpEntry(home, converter, tuple(classes))


def uses_onnx2torch(home: str, op_types: Iterable[str], *classes: type) -> None:
    """Note that onnx2torch's converter of each of ``op_types`` is used as it is, producing
    ``classes``, and that ``home`` holds their code forms."""
    for op_type in op_types:
        claim_op(op_type, home, "onnx2torch", classes)


# ---------------------------------------------------------------------------- converters

OverridingConverter = Callable[[OnnxNode, OnnxGraph, TConverter | None], OperationConverterResult]
"""``(node, graph, fallback) -> result``; ``fallback`` is onnx2torch's converter or None."""

_OVERRIDDEN: dict[OperationDescription, TConverter | None] = {}


def override_converter(
    operation_type: str,
    versions: Iterable[int],
    domain: str = defs.ONNX_DOMAIN,
    produces: Sequence[type] = (),
) -> Callable[[OverridingConverter], OverridingConverter]:
    """Register the decorated converter for ``operation_type`` at each ``since_version`` in
    ``versions``, replacing onnx2torch's entry; a second override of one entry raises.
    ``produces``: the module classes it (or its fallback) can build."""

    def deco(converter: OverridingConverter) -> OverridingConverter:
        claim_op(operation_type, converter.__module__, "ours", produces)
        for version in versions:
            description = OperationDescription(domain, operation_type, version)
            if description in _OVERRIDDEN:
                raise ValueError(f'Operation "{description}" already overridden')
            fallback = _CONVERTER_REGISTRY.get(description)
            _OVERRIDDEN[description] = fallback

            def registered(
                node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None = fallback
            ) -> OperationConverterResult:
                return converter(node, graph, fallback)

            _CONVERTER_REGISTRY[description] = registered
        return converter

    return deco


def new_converter(
    operation_type: str, versions: Iterable[int], produces: Sequence[type] = ()
) -> Callable[[TConverter], TConverter]:
    """Register the decorated converter for an (op, version) onnx2torch has no converter for
    (onnx2torch's ``add_converter``, which raises on a duplicate)."""

    def deco(converter: TConverter) -> TConverter:
        claim_op(operation_type, converter.__module__, "ours", produces)
        for version in versions:
            add_converter(operation_type=operation_type, version=version)(converter)
        return converter

    return deco


def use_fallback(
    fallback: TConverter | None, node: OnnxNode, graph: OnnxGraph, why: str
) -> OperationConverterResult:
    """onnx2torch's converter for ``node``; NotImplementedError naming ``why`` if none."""
    if fallback is None:
        raise NotImplementedError(f"{node.operation_type} ({node.name}): {why}")
    return fallback(node, graph)


def static_dims(graph: OnnxGraph, name: str, start: int = 0) -> list[int] | None:
    """The sizes of dims ``start``... of the graph value ``name`` when every one is known at
    import (from the shape inference the importer ran), else None."""
    info = graph.value_info.get(name)
    if info is None or not info.type.tensor_type.HasField("shape"):
        return None
    dims = info.type.tensor_type.shape.dim[start:]
    return [d.dim_value for d in dims] if all(d.HasField("dim_value") for d in dims) else None


# ---------------------------------------------------------------------------- code forms


class UntranslatableError(Exception):
    """A module of the graph has no code form (raised with the class name)."""


@dataclass
class NodeContext:
    """What a code form sees of one graph node."""

    node: torch.fx.Node
    module: nn.Module | None
    args: list[str]
    """Each argument as Python source (a variable, a literal or ``self.<path>``)."""
    metas: list[TensorMetadata | None]
    """Each argument's shape and dtype on the example inputs (None for non-tensors)."""
    out: TensorMetadata | None
    """The node's output shape and dtype on the example inputs (None for tuples)."""
    attribute: str = ""
    """``self.<path>`` of the module when it is an attribute of the generated class."""
    device_of: str = ""
    """A tensor variable whose ``.device`` new tensors are made on."""
    helpers: set[str] = field(default_factory=set)
    write_method: Callable[[nn.Module, Sequence[torch.Tensor], str, Sequence[str]], str] | None = (
        None
    )
    """``write_method(graph_module, example_args, base_name, param_names)``: write a graph
    module (a loop body) as a method of the generated class; returns the method's name."""
    fresh: Callable[[str], str] | None = None
    """``fresh(base)``: a new variable name of ``forward`` for a :class:`Block`'s own
    statements (never reused)."""

    def helper(self, name: str) -> str:
        """Use the helper function ``name`` (written into the file once)."""
        if name not in HELPERS:
            raise KeyError(f"no helper function {name!r} registered")
        self.helpers.add(name)
        return name

    def rank(self, index: int = 0) -> int:
        """The rank of argument ``index``."""
        meta = self.metas[index]
        if meta is None:
            raise UntranslatableError(f"{type(self.module).__name__}: argument {index} rank")
        return len(meta.shape)

    def is_float(self, index: int) -> bool:
        """Whether argument ``index`` is a floating-point tensor (a float literal counts)."""
        meta = self.metas[index]
        if meta is None:
            return "." in self.args[index] or "e" in self.args[index]
        return meta.dtype.is_floating_point

    def shape_args(self, exprs: Sequence[Expr], data_inputs: int = 1) -> list[str]:
        """Render ``exprs`` of a :class:`ShapeArgs` module whose sources follow
        ``data_inputs`` data arguments."""
        assert isinstance(self.module, ShapeArgs)
        sources = self.module.sources

        def dim_of(dim: DimOf) -> str:
            return f"{self.args[data_inputs + sources.index(dim.value)]}.shape[{dim.axis}]"

        return [literals.shape_expr(e, dim_of) for e in exprs]


@dataclass
class Block:
    """A code form of several statements (a loop): ``lines`` (indented with four spaces per
    level, relative to ``forward``) run first, then the node's value is ``value``."""

    lines: list[str]
    value: str


Translator = Callable[[NodeContext], str | Block]
TRANSLATORS: dict[type, Translator] = {}


def translates(*classes: type) -> Callable[[Translator], Translator]:
    """Register the decorated function as the code form of ``classes``."""

    def deco(function: Translator) -> Translator:
        for cls in classes:
            if cls in TRANSLATORS:
                raise ValueError(f"{cls.__name__} already has a translator")
            TRANSLATORS[cls] = function
        return function

    return deco


def translator_for(module: nn.Module) -> Translator:
    """The code form of ``module``'s class, or the module's own ``code_form(args)`` method (a
    weightless custom op of a patch); :class:`UntranslatableError` if neither."""
    found = TRANSLATORS.get(type(module))
    if found is None and callable(getattr(module, "code_form", None)):
        return _own_code_form
    if found is None:
        raise UntranslatableError(type(module).__name__)
    return found


def _own_code_form(ctx: NodeContext) -> str:
    # A weightless patch module (patches/fourier_mix.py) writes itself: ``code_form(args)``
    # returns the expression.  Patches belong to the fixup stage and cannot import this one.
    return str(ctx.module.code_form(ctx.args))  # type: ignore[union-attr,operator]


def call_attribute(ctx: NodeContext) -> str:
    """``self.<path>(args)``: a module of the generated class."""
    return f"{ctx.attribute}({', '.join(ctx.args)})"


HELPERS: dict[str, str] = {}
"""Helper functions written into ``model.py`` for ops with no one-expression form."""


def register_helper(name: str, source: str) -> Callable[..., Any]:
    """Register ``source`` (a ``def name(...)`` using ``torch`` and ``F``) as the helper
    function ``name`` written into ``model.py``, and return that function, compiled from the
    same source: the imported module calls it, so the two can never differ."""
    if name in HELPERS:
        raise ValueError(f"helper {name!r} registered twice")
    HELPERS[name] = source
    namespace: dict[str, Any] = {"torch": torch, "F": torch.nn.functional}
    exec(source, namespace)
    return namespace[name]


def dim_arg(axes: Sequence[int]) -> str:
    """``2`` for one axis, ``(1, 2)`` for several (a ``dim=`` argument)."""
    return str(axes[0]) if len(axes) == 1 else literals.ints(axes)


# ------------------------------------------------------------------------------ refused

_FALLBACK = (
    "onnx2torch's module, built only when our converter falls back (an input computed from "
    "tensor data); it reads that input at run time, so it neither exports nor has a code form"
)
_NOT_WRITTEN = (
    "no code form written yet (no Keras model here has produced it); code generation reports "
    "it as missing and writes no package"
)
_REPLACED = "never built: our converter makes its own module instead"

REFUSED: dict[type, str] = {
    # Fallbacks of our converters.
    OnnxConstantOfShape: _REPLACED + " (StaticConstantOfShape, or DynamicConstantOfShape)",
    OnnxCumSum: _REPLACED + " (StaticCumSum, or DynamicCumSum for a run-time axis)",
    OnnxExpand: _FALLBACK,
    OnnxPadDynamic: _FALLBACK,
    OnnxRange: _REPLACED + " (StaticRange, or DynamicRange for bounds from tensor data)",
    OnnxReduceSumDynamicAxes: _FALLBACK,
    OnnxReshape: _FALLBACK,
    OnnxResize: _FALLBACK + " (or Resize with both scales and sizes, or a ROI)",
    OnnxSlice: _FALLBACK,
    OnnxSplit13: _FALLBACK,
    OnnxSqueezeDynamicAxes: _FALLBACK,
    OnnxTile: _FALLBACK,
    OnnxTopK: _REPLACED + " (StaticTopK, or DynamicTopK for a run-time k)",
    OnnxUnsqueezeDynamicAxes: _FALLBACK,
    OnnxDropoutDynamic: "Dropout with a run-time ratio or training mode: not inference",
    # Never reach the code-form lookup.
    OnnxConstant: "written by codegen/emit.py as a literal or a buffer, not a statement",
    OnnxCopyIdentity: "removed by codegen/simplify.py (drop_copies)",
    nn.Sequential: "split into its children by codegen/simplify.py (pad + conv/pool)",
    nn.LSTM: "never a graph node: held by OnnxRecurrent/RecurrentSequence (ops/recurrent.py)",
    nn.GRU: "never a graph node: held by OnnxRecurrent/RecurrentSequence (ops/recurrent.py)",
    OnnxBaseElementWise: "abstract base of onnx2torch's element-wise modules",
    ShapeArgs: "base class of our modules with shape arguments (StaticSlice, StaticReshape...)",
    # Gaps: onnx2torch produces them, nothing here writes them yet.
    OnnxGatherElements: _REPLACED + " (ops/gather_scatter.py)",
    OnnxGatherND: _REPLACED + " (ops/gather_scatter.py)",
    OnnxLayerNorm: _REPLACED + " (ops/normalization.py)",
    OnnxNonMaxSuppression: _NOT_WRITTEN + "; data-dependent output shape",
    OnnxNonZero: _REPLACED + " (ops/eye_like.py)",
    OnnxResizeV10: _NOT_WRITTEN + " (Resize at opset 10)",
    OnnxRoiAlign: _NOT_WRITTEN,
    OnnxScatterND: _REPLACED + " (ops/gather_scatter.py)",
    OnnxSliceV9: _NOT_WRITTEN + " (Slice before opset 10)",
}
"""Module classes the importer can produce that have no code form, each with the reason."""


def refuse(cls: type, reason: str) -> None:
    """Add one of an op module's own classes to :data:`REFUSED`."""
    if cls in REFUSED:
        raise ValueError(f"{cls.__name__} refused twice")
    REFUSED[cls] = reason
