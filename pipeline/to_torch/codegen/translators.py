"""One translator per module class of the imported graph: the torch expression it computes.

A translator gets a :class:`NodeContext` (the module, its arguments already rendered as
Python source, the tensor shapes and dtypes seen when the graph ran on the example inputs)
and returns the right-hand side of one statement, e.g. ``conv.permute(0, 3, 1, 2)``.  Its
constant arguments (permutations, axes, shapes) become Python literals.  Modules that hold
weights (``nn.Conv2d``, ``nn.LSTM``, a patch's module) are attributes of the generated class
and are called as ``self.<path>(...)``; :mod:`pipeline.to_torch.codegen.modules` builds them.

An op whose semantics need more than an expression (ONNX ``ReverseSequence``, ONNX-style
``Softmax`` over flattened axes...) calls a helper function that is written into the same
file (:data:`HELPERS`) and listed in the package's report.

This file is long on purpose: it is one table, one short translator per onnx2torch module class
(about sixty), read by looking up the class at hand; splitting it would scatter that table.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from onnx2torch.node_converters.activations import OnnxErf, OnnxHardSigmoid, OnnxSoftmaxV1V11
from onnx2torch.node_converters.binary_math_operations import OnnxBinaryMathOperation
from onnx2torch.node_converters.cast import OnnxCast
from onnx2torch.node_converters.clip import OnnxClip
from onnx2torch.node_converters.comparisons import OnnxCompare
from onnx2torch.node_converters.concat import OnnxConcat
from onnx2torch.node_converters.flatten import OnnxFlatten
from onnx2torch.node_converters.functions import OnnxFunction
from onnx2torch.node_converters.gather import OnnxGather
from onnx2torch.node_converters.gemm import OnnxGemm
from onnx2torch.node_converters.global_average_pool import (
    OnnxGlobalAveragePool,
    OnnxGlobalAveragePoolWithKnownInputShape,
)
from onnx2torch.node_converters.logical import OnnxLogical, OnnxNot
from onnx2torch.node_converters.matmul import OnnxMatMul
from onnx2torch.node_converters.min_max import OnnxMinMax
from onnx2torch.node_converters.neg import OnnxNeg
from onnx2torch.node_converters.pad import OnnxPadStatic
from onnx2torch.node_converters.pow import OnnxPow, OnnxSqrt
from onnx2torch.node_converters.reciprocal import OnnxReciprocal
from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes, OnnxReduceSumStaticAxes
from onnx2torch.node_converters.shape import OnnxShape
from onnx2torch.node_converters.squeeze import OnnxSqueezeStaticAxes
from onnx2torch.node_converters.sum import OnnxSum
from onnx2torch.node_converters.transpose import OnnxTranspose
from onnx2torch.node_converters.unsqueeze import OnnxUnsqueezeStaticAxes
from onnx2torch.node_converters.where import OnnxWhere
from torch import nn
from torch.fx.passes.shape_prop import TensorMetadata

from pipeline.to_torch.codegen import literals
from pipeline.to_torch.codegen.simplify import RecurrentSequence
from pipeline.to_torch.converters.constant_of_shape import StaticConstantOfShape
from pipeline.to_torch.converters.cumsum import StaticCumSum
from pipeline.to_torch.converters.expand import StaticExpand
from pipeline.to_torch.converters.range import StaticRange
from pipeline.to_torch.converters.recurrent import OnnxRecurrent, ReverseSequence
from pipeline.to_torch.converters.reshape import StaticReshape
from pipeline.to_torch.converters.resize import StaticResize, _onnx_mode_to_torch_mode
from pipeline.to_torch.converters.shape_values import DimOf, Expr, ShapeArgs
from pipeline.to_torch.converters.slice import StaticSlice
from pipeline.to_torch.converters.split import SplitChunks
from pipeline.to_torch.converters.tile import StaticTile
from pipeline.to_torch.converters.topk import StaticTopK


class UntranslatableError(Exception):
    """A module of the graph has no translator (raised with the class name)."""


@dataclass
class NodeContext:
    """What a translator sees of one graph node."""

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

    def helper(self, name: str) -> str:
        """Use the helper function ``name`` (written into the file once)."""
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


Translator = Callable[[NodeContext], str]
TRANSLATORS: dict[type, Translator] = {}


def translates(*classes: type) -> Callable[[Translator], Translator]:
    """Register the decorated function as the translator of ``classes``."""

    def deco(function: Translator) -> Translator:
        for cls in classes:
            if cls in TRANSLATORS:
                raise ValueError(f"{cls.__name__} already has a translator")
            TRANSLATORS[cls] = function
        return function

    return deco


def translator_for(module: nn.Module) -> Translator:
    """The translator of ``module``'s class; :class:`UntranslatableError` if none."""
    found = TRANSLATORS.get(type(module))
    if found is None:
        raise UntranslatableError(type(module).__name__)
    return found


def _tuple_or_int(values: Sequence[int]) -> str:
    return literals.int_or_tuple(list(values))


def _dims(axes: Sequence[int]) -> str:
    return str(axes[0]) if len(axes) == 1 else literals.ints(axes)


# -------------------------------------------------------------- modules with weights


@translates(
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.Embedding,
    nn.PReLU,
)
def call_attribute(ctx: NodeContext) -> str:
    """``self.<path>(args)``: a module of the generated class."""
    return f"{ctx.attribute}({', '.join(ctx.args)})"


@translates(OnnxRecurrent)
def _recurrent(ctx: NodeContext) -> str:
    # The module's forward, spelled out: ONNX's Y is (seq, dirs, batch, hidden) in layout 0.
    module = ctx.module
    assert isinstance(module, OnnxRecurrent)
    rnn = module.rnn
    x = ctx.args[0]
    time_axis = module.layout
    if module.reverse:
        x = f"{x}.flip({time_axis})"
    states = ", ".join(ctx.args[1:])
    if len(ctx.args) > 1 and module.layout == 1:
        raise UntranslatableError("OnnxRecurrent with initial states in layout 1")
    if isinstance(rnn, nn.LSTM) and len(ctx.args) > 1:
        if len(ctx.args) != 3:
            raise UntranslatableError("OnnxRecurrent (LSTM) with only one initial state")
        call = f"{ctx.attribute}({x}, ({states}))"
    else:
        call = f"{ctx.attribute}({x}{', ' + states if states else ''})"
    outputs = [f"{call}[0]"]
    y = outputs[0]
    dirs = 2 if rnn.bidirectional else 1
    y = f"{y}.unflatten(-1, ({dirs}, {rnn.hidden_size}))"
    if module.reverse:
        y = f"{y}.flip({time_axis})"
    if module.layout == 0:
        y = f"{y}.transpose(1, 2)"
    if len(module.wanted) == 1:
        return y
    wanted = [w for w in module.wanted if w]
    if wanted != [True] or not module.wanted[0]:
        raise UntranslatableError("OnnxRecurrent returning its final states")
    return f"({y},)"


@translates(RecurrentSequence)
def _recurrent_sequence(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, RecurrentSequence)
    if module.reverse:
        return f"{ctx.attribute}({ctx.args[0]}.flip(0))[0].flip(0)"
    return f"{ctx.attribute}({ctx.args[0]})[0]"


@translates(ReverseSequence)
def _reverse_sequence(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, ReverseSequence)
    name = ctx.helper("reverse_sequence")
    return f"{name}({ctx.args[0]}, {ctx.args[1]}, time_axis={module.time_axis})"


# ---------------------------------------------------------------- activations


_ELEMENTWISE: dict[type, str] = {
    nn.ReLU: "F.relu({x})",
    nn.ReLU6: "F.relu6({x})",
    nn.Sigmoid: "torch.sigmoid({x})",
    nn.Tanh: "torch.tanh({x})",
    nn.SiLU: "F.silu({x})",
    nn.Hardswish: "F.hardswish({x})",
    nn.Hardsigmoid: "F.hardsigmoid({x})",
    nn.Softsign: "F.softsign({x})",
    nn.Mish: "F.mish({x})",
    nn.SELU: "F.selu({x})",
    nn.Identity: "{x}",
    nn.Dropout: "{x}",
    OnnxErf: "torch.erf({x})",
    OnnxNeg: "-{x}",
    OnnxNot: "torch.logical_not({x})",
    OnnxSqrt: "torch.sqrt({x})",
    OnnxReciprocal: "torch.reciprocal({x})",
}


def _elementwise(ctx: NodeContext) -> str:
    return _ELEMENTWISE[type(ctx.module)].format(x=ctx.args[0])


for _cls in _ELEMENTWISE:
    translates(_cls)(_elementwise)


@translates(nn.Softmax, nn.LogSoftmax)
def _softmax(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, nn.Softmax | nn.LogSoftmax)
    function = "softmax" if isinstance(module, nn.Softmax) else "log_softmax"
    return f"torch.{function}({ctx.args[0]}, dim={module.dim})"


@translates(nn.GELU)
def _gelu(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, nn.GELU)
    extra = ', approximate="tanh"' if module.approximate == "tanh" else ""
    return f"F.gelu({ctx.args[0]}{extra})"


@translates(nn.ELU, nn.CELU)
def _elu(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, nn.ELU | nn.CELU)
    name = "elu" if isinstance(module, nn.ELU) else "celu"
    return f"F.{name}({ctx.args[0]}, alpha={literals.number(module.alpha)})"


@translates(nn.LeakyReLU)
def _leaky_relu(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, nn.LeakyReLU)
    return f"F.leaky_relu({ctx.args[0]}, {literals.number(module.negative_slope)})"


@translates(nn.Softplus)
def _softplus(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, nn.Softplus)
    if module.beta != 1 or module.threshold != 20:
        return (
            f"F.softplus({ctx.args[0]}, beta={literals.number(module.beta)}, "
            f"threshold={literals.number(module.threshold)})"
        )
    return f"F.softplus({ctx.args[0]})"


@translates(nn.Hardtanh)
def _hardtanh(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, nn.Hardtanh)
    low, high = literals.number(module.min_val), literals.number(module.max_val)
    return f"F.hardtanh({ctx.args[0]}, {low}, {high})"


@translates(OnnxHardSigmoid)
def _hard_sigmoid(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxHardSigmoid)
    alpha, beta = literals.number(module.alpha), literals.number(module.beta)
    return f"torch.clamp({ctx.args[0]} * {alpha} + {beta}, 0.0, 1.0)"


@translates(OnnxClip)
def _clip(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxClip)
    low, high = module.min_val, module.max_val
    if low == 0 and high == 6:
        return f"F.relu6({ctx.args[0]})"
    if low == 0 and high is None:
        return f"F.relu({ctx.args[0]})"
    bounds = ", ".join(
        f"{key}={literals.number(value)}"
        for key, value in (("min", low), ("max", high))
        if value is not None
    )
    return f"torch.clamp({ctx.args[0]}, {bounds})"


_FUNCTIONS = {
    torch.abs: "abs",
    torch.acos: "acos",
    torch.asin: "asin",
    torch.atan: "atan",
    torch.cos: "cos",
    torch.exp: "exp",
    torch.log: "log",
    torch.sign: "sign",
    torch.sin: "sin",
    torch.tan: "tan",
    torch.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    torch.ceil: "ceil",
    torch.floor: "floor",
    torch.round: "round",
}


@translates(OnnxFunction)
def _function(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxFunction)
    name = _FUNCTIONS.get(module.function)
    if name is None:
        raise UntranslatableError(f"OnnxFunction({module.function})")
    return f"torch.{name}({ctx.args[0]})"


@translates(OnnxSoftmaxV1V11)
def _softmax_v1(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxSoftmaxV1V11)
    name = ctx.helper("onnx_softmax_v1")
    return f"{name}({ctx.args[0]}, axis={module.axis}, log={module.is_log})"


# ------------------------------------------------------------------- arithmetic


_BINARY = {torch.add: "+", torch.sub: "-", torch.mul: "*"}


@translates(OnnxBinaryMathOperation)
def _binary(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxBinaryMathOperation)
    if module.broadcast == 1 and module.axis is not None:
        raise UntranslatableError("OnnxBinaryMathOperation with old-style broadcast")
    a, b = ctx.args
    symbol = _BINARY.get(module.math_op_function)
    if symbol is not None:
        return f"{a} {symbol} {b}"
    if ctx.is_float(0) or ctx.is_float(1):
        return f"{a} / {b}"
    return f'torch.div({a}, {b}, rounding_mode="trunc")'  # ONNX integer Div truncates


@translates(OnnxPow)
def _pow(ctx: NodeContext) -> str:
    return f"torch.pow({ctx.args[0]}, {ctx.args[1]})"


@translates(OnnxMatMul)
def _matmul(ctx: NodeContext) -> str:
    return f"{ctx.args[0]} @ {ctx.args[1]}"


@translates(OnnxGemm)
def _gemm(ctx: NodeContext) -> str:
    # A Gemm whose weight is not one Dense kernel (so no nn.Linear): alpha*A'B' + beta*C.
    gemm = ctx.module
    assert isinstance(gemm, OnnxGemm)
    a = f"{ctx.args[0]}.T" if gemm.trans_a else ctx.args[0]
    b = f"{ctx.args[1]}.T" if gemm.trans_b else ctx.args[1]
    product = f"({a} @ {b})" + (f" * {gemm.alpha!r}" if gemm.alpha != 1.0 else "")
    if len(ctx.args) < 3:
        return product
    bias = ctx.args[2] + (f" * {gemm.beta!r}" if gemm.beta != 1.0 else "")
    return f"{product} + {bias}"


_COMPARE = {
    torch.eq: "==",
    torch.less: "<",
    torch.less_equal: "<=",
    torch.greater: ">",
    torch.greater_equal: ">=",
}


@translates(OnnxCompare)
def _compare(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxCompare)
    return f"{ctx.args[0]} {_COMPARE[module.compare_function]} {ctx.args[1]}"


@translates(OnnxLogical)
def _logical(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxLogical)
    return f"torch.{module.logic_op_function.__name__}({ctx.args[0]}, {ctx.args[1]})"


@translates(OnnxWhere)
def _where(ctx: NodeContext) -> str:
    return f"torch.where({', '.join(ctx.args)})"


@translates(OnnxMinMax)
def _min_max(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxMinMax)
    function = "maximum" if module._operator is torch.max else "minimum"
    result = ctx.args[0]
    for other in ctx.args[1:]:
        result = f"torch.{function}({result}, {other})"
    return result


@translates(OnnxSum)
def _sum(ctx: NodeContext) -> str:
    return " + ".join(ctx.args)


@translates(OnnxCast)
def _cast(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxCast)
    return f"{ctx.args[0]}.to({literals.dtype(module.torch_dtype)})"


# ----------------------------------------------------------- layout and indexing


@translates(OnnxTranspose)
def _transpose(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxTranspose)
    perm = module.perm if module.perm is not None else list(range(ctx.rank()))[::-1]
    layout = _LAYOUTS.get(tuple(perm), "")
    return f"{ctx.args[0]}.permute({', '.join(str(p) for p in perm)}){layout}"


_LAYOUTS = {
    (0, 2, 3, 1): "  # channels first -> channels last",
    (0, 3, 1, 2): "  # channels last -> channels first",
    (0, 2, 1): "  # (batch, channels, length) <-> (batch, length, channels)",
    (1, 0, 2): "  # (batch, time, features) <-> (time, batch, features)",
    (0, 2, 3, 4, 1): "  # channels first -> channels last",
    (0, 4, 1, 2, 3): "  # channels last -> channels first",
}
"""Trailing comments for the layout changes Keras models make (NHWC <-> NCHW)."""


@translates(StaticReshape)
def _reshape(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, StaticReshape)
    shape = ctx.shape_args(module.shape)
    in_meta = ctx.metas[0]
    if (
        in_meta is not None
        and len(in_meta.shape) >= 2
        and len(shape) == 2
        and shape[0] == "-1"
        and shape[1] == str(int(torch.Size(in_meta.shape[1:]).numel()))
    ):
        return f"{ctx.args[0]}.flatten(1)"
    comment = ""
    if in_meta is not None and ctx.out is not None and len(in_meta.shape) >= 3:
        dims = list(in_meta.shape)
        if dims[-1] == 1 and list(ctx.out.shape) == [dims[0], 1, *dims[1:-1]]:
            # tf2onnx writes the NHWC -> NCHW transpose of a one-channel image as a reshape.
            comment = "  # channels last -> channels first (one channel)"
    return f"{ctx.args[0]}.reshape({', '.join(shape)}){comment}"


@translates(OnnxFlatten, nn.Flatten)
def _flatten(ctx: NodeContext) -> str:
    module = ctx.module
    if isinstance(module, nn.Flatten):
        return f"{ctx.args[0]}.flatten({module.start_dim}, {module.end_dim})"
    assert isinstance(module, OnnxFlatten)
    return f"{ctx.args[0]}.flatten(0, {module.axis - 1}).flatten(1)"


@translates(OnnxSqueezeStaticAxes)
def _squeeze(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxSqueezeStaticAxes)
    if not module.axes:
        return f"{ctx.args[0]}.squeeze()"
    return f"{ctx.args[0]}.squeeze({_dims(sorted(module.axes))})"


@translates(OnnxUnsqueezeStaticAxes)
def _unsqueeze(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxUnsqueezeStaticAxes)
    result = ctx.args[0]
    for axis in module._axes:
        result = f"{result}.unsqueeze({axis})"
    return result


@translates(OnnxConcat)
def _concat(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxConcat)
    return f"torch.cat([{', '.join(ctx.args)}], dim={module.axis})"


@translates(StaticSlice)
def _slice(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, StaticSlice)
    x = ctx.args[0]
    if module.flip_dims:
        x = f"{x}.flip({_dims(module.flip_dims)})"
    bounds = ctx.shape_args([e for s in module.slices for e in (s.start, s.end)])
    index = [":"] * module.rank
    for i, s in enumerate(module.slices):
        start, end = bounds[2 * i], bounds[2 * i + 1]
        start = "" if start == "0" else start
        # ONNX writes "to the end" as a huge end (INT32_MAX, INT64_MAX).
        end = "" if end.lstrip("-").isdigit() and int(end) >= 2**31 - 1 else end
        index[s.axis] = f"{start}:{end}" + (f":{s.step}" if s.step != 1 else "")
    while index and index[-1] == ":":
        index.pop()
    return f"{x}[{', '.join(index)}]" if index else x


@translates(OnnxGather)
def _gather(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxGather)
    axis = module._axis
    if axis < 0:
        axis += ctx.rank(0)
    index_meta = ctx.metas[1]
    indices = ctx.args[1]
    if index_meta is not None and index_meta.dtype not in (torch.int64, torch.int32):
        indices = f"{indices}.long()"
    return f"{ctx.args[0]}[{', '.join([':'] * axis + [indices])}]"


@translates(OnnxShape)
def _shape(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxShape)
    x = ctx.args[0]
    start, end = module._start, module._end
    dims = f"{x}.shape"
    if start or end is not None:
        dims += f"[{start or ''}:{'' if end is None else end}]"
    return f"torch.tensor({dims}, device={x}.device)"


@translates(StaticExpand)
def _expand(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, StaticExpand)
    shape = ", ".join(ctx.shape_args(module.shape))
    x = ctx.args[0]
    # ONNX Expand broadcasts both ways: a 1 in the target keeps the input's dim.
    return f"torch.broadcast_to({x}, torch.broadcast_shapes({x}.shape, ({shape},)))"


@translates(StaticTile)
def _tile(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, StaticTile)
    return f"{ctx.args[0]}.repeat({', '.join(ctx.shape_args(module.repeats))})"


@translates(SplitChunks)
def _split(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, SplitChunks)
    x = ctx.args[0]
    size = f"-(-{x}.shape[{module.axis}] // {module.num_outputs})"
    return f"torch.split({x}, {size}, dim={module.axis})"


@translates(StaticTopK)
def _topk(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, StaticTopK)
    return (
        f"torch.topk({ctx.args[0]}, {module.k}, dim={module.axis}, "
        f"largest={module.largest}, sorted={module.sorted})"
    )


@translates(StaticCumSum)
def _cumsum(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, StaticCumSum)
    if not module.exclusive and not module.reverse:
        return f"torch.cumsum({ctx.args[0]}, dim={module.axis})"
    name = ctx.helper("onnx_cumsum")
    return (
        f"{name}({ctx.args[0]}, {module.axis}, exclusive={module.exclusive}, "
        f"reverse={module.reverse})"
    )


@translates(OnnxPadStatic)
def _pad(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxPadStatic)
    pads = list(module.pads)
    while len(pads) > 2 and pads[-2:] == [0, 0]:
        pads = pads[:-2]
    args = f"{ctx.args[0]}, {literals.ints(pads)}"
    if module.mode != "constant":
        return f'F.pad({args}, mode="{module.mode}")'
    if module.constant_value:
        return f"F.pad({args}, value={literals.number(module.constant_value)})"
    return f"F.pad({args})"


# ---------------------------------------------------------------------- reductions


@translates(OnnxReduceStaticAxes, OnnxReduceSumStaticAxes)
def _reduce(ctx: NodeContext) -> str:
    module = ctx.module
    x = ctx.args[0]
    if isinstance(module, OnnxReduceSumStaticAxes):
        operation, axes, keepdims = "ReduceSum", module._axes, bool(module._keepdims)
        if not axes and module._noop_with_empty_axes:
            return x
    else:
        assert isinstance(module, OnnxReduceStaticAxes)
        operation, axes, keepdims = module.operation_type, module.axes, module.keepdims
    axes = list(axes) if axes else list(range(ctx.rank()))
    dims = f"dim={_dims(axes)}, keepdim={keepdims}"
    method = {
        "ReduceMean": "mean",
        "ReduceSum": "sum",
        "ReduceMax": "amax",
        "ReduceMin": "amin",
    }.get(operation)
    if method is not None:
        return f"{x}.{method}({dims})"
    if operation == "ReduceProd" and len(axes) == 1:
        return f"{x}.prod({dims})"
    if operation == "ReduceSumSquare":
        return f"{x}.square().sum({dims})"
    if operation == "ReduceL2":
        return f"torch.linalg.vector_norm({x}, 2, {dims})"
    if operation == "ReduceL1":
        return f"torch.linalg.vector_norm({x}, 1, {dims})"
    if operation == "ReduceLogSumExp":
        return f"torch.logsumexp({x}, {dims})"
    raise UntranslatableError(f"{type(module).__name__}({operation})")


@translates(OnnxGlobalAveragePool, OnnxGlobalAveragePoolWithKnownInputShape)
def _global_average_pool(ctx: NodeContext) -> str:
    axes = list(range(2, ctx.rank()))
    return f"{ctx.args[0]}.mean(dim={_dims(axes)}, keepdim=True)"


# ------------------------------------------------------------------------- pooling


def _pool_args(module: nn.Module, names: Sequence[str], defaults: dict[str, Any]) -> str:
    parts = []
    for name in names:
        value = getattr(module, name)
        if name == "stride" and value == module.kernel_size:
            continue
        value = list(value) if isinstance(value, list | tuple) else value
        if value == defaults.get(name) or (
            isinstance(value, list) and set(value) == {defaults.get(name)}
        ):
            continue
        text = _tuple_or_int(value) if isinstance(value, list) else literals.number(value)
        parts.append(f"{name}={text}")
    return "".join(f", {p}" for p in parts)


@translates(nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
def _max_pool(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, nn.MaxPool1d | nn.MaxPool2d | nn.MaxPool3d)
    spatial = type(module).__name__[-2:].lower()
    kernel = module.kernel_size
    kernel_text = _tuple_or_int(list(kernel)) if isinstance(kernel, list | tuple) else kernel
    extra = _pool_args(
        module,
        ["stride", "padding", "dilation", "ceil_mode"],
        {"padding": 0, "dilation": 1, "ceil_mode": False},
    )
    return f"F.max_pool{spatial}({ctx.args[0]}, {kernel_text}{extra})"


@translates(nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
def _avg_pool(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, nn.AvgPool1d | nn.AvgPool2d | nn.AvgPool3d)
    spatial = type(module).__name__[-2:].lower()
    kernel = module.kernel_size
    kernel_text = _tuple_or_int(list(kernel)) if isinstance(kernel, list | tuple) else kernel
    extra = _pool_args(
        module,
        ["stride", "padding", "ceil_mode", "count_include_pad"],
        {"padding": 0, "ceil_mode": False, "count_include_pad": True},
    )
    return f"F.avg_pool{spatial}({ctx.args[0]}, {kernel_text}{extra})"


# ------------------------------------------------------------ made from shapes


@translates(StaticConstantOfShape)
def _constant_of_shape(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, StaticConstantOfShape)
    shape = ", ".join(ctx.shape_args(module.shape, data_inputs=0))
    return (
        f"torch.full(({shape},), {literals.number(module.fill_value)}, "
        f"dtype={literals.dtype(module.dtype)}, device={ctx.device_of}.device)"
    )


@translates(StaticRange)
def _range(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, StaticRange)
    start, limit, delta = ctx.shape_args(module.bounds, data_inputs=0)
    return (
        f"torch.arange({start}, {limit}, {delta}, dtype={literals.dtype(module.dtype)}, "
        f"device={ctx.device_of}.device)"
    )


@translates(StaticResize)
def _resize(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, StaticResize)
    x = ctx.args[0]
    mode = _onnx_mode_to_torch_mode(module.onnx_mode, ctx.rank() - 2)
    if module.sizes is not None:
        size = f"size=({', '.join(ctx.shape_args(module.sizes))},)"
    else:
        assert module.scales is not None
        size = f"scale_factor=({', '.join(literals.number(s) for s in module.scales)},)"
    corners = f", align_corners={module.align_corners}" if module.align_corners is not None else ""
    return f'F.interpolate({x}, {size}, mode="{mode}"{corners})'


@translates(operator.getitem)  # type: ignore[arg-type]
def _getitem(ctx: NodeContext) -> str:
    return f"{ctx.args[0]}[{ctx.args[1]}]"


HELPERS: dict[str, str] = {
    "reverse_sequence": '''
def reverse_sequence(data: torch.Tensor, lengths: torch.Tensor, time_axis: int) -> torch.Tensor:
    """ONNX ReverseSequence: reverse the first ``lengths[b]`` steps of each sequence."""
    steps = torch.arange(data.shape[time_axis], device=data.device)
    lengths = lengths.to(torch.int64)
    if time_axis == 0:  # (time, batch, ...)
        steps, lengths = steps[:, None], lengths[None, :]
    else:  # (batch, time, ...)
        steps, lengths = steps[None, :], lengths[:, None]
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)
    index = index.reshape(*index.shape, *([1] * (data.dim() - 2))).expand_as(data)
    return torch.gather(data, time_axis, index)
''',
    "onnx_softmax_v1": '''
def onnx_softmax_v1(x: torch.Tensor, axis: int, log: bool) -> torch.Tensor:
    """ONNX Softmax before opset 13: over the input flattened to 2-D at ``axis``."""
    flat = x.flatten(axis) if axis > 0 else x.reshape(1, -1)
    flat = flat.reshape(-1, flat.shape[-1]) if axis > 0 else flat
    result = torch.log_softmax(flat, dim=-1) if log else torch.softmax(flat, dim=-1)
    return result.reshape(x.shape)
''',
    "onnx_cumsum": '''
def onnx_cumsum(x: torch.Tensor, axis: int, exclusive: bool, reverse: bool) -> torch.Tensor:
    """ONNX CumSum with its ``exclusive`` and ``reverse`` attributes."""
    if reverse:
        x = torch.flip(x, (axis,))
    result = torch.cumsum(x, dim=axis)
    if exclusive:
        result = result - x
    return torch.flip(result, (axis,)) if reverse else result
''',
}
"""Helper functions written into ``model.py`` for ops with no one-expression form."""
