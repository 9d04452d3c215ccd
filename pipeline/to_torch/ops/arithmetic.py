"""Arithmetic: ONNX ``Add``, ``Sub``, ``Mul``, ``Div``, ``Pow``, ``Sqrt``, ``Neg``,
``Reciprocal``, ``MatMul``, ``Gemm``, ``Max``, ``Min``, ``Sum``, ``Mean``, ``Mod``,
``Cast``, ``Where``, ``And``, ``Or``, ``Xor``, ``Not``, the roundings (``Ceil``, ``Floor``,
``Round``) and the unary functions (``Abs``, ``Exp``, ``Log``, ``Tanh``, ``Sin``...).

Converters: onnx2torch's as they are, but ``Pow`` (7+): ours (:func:`convert_pow`, module
:class:`Power`), since ONNX's result has the base's type and torch promotes
(``int64 ** float32`` is float32 in torch, int64 in ONNX); and ``Cast`` to BFLOAT16
(:func:`convert_cast`; onnx2torch's ``OnnxCast`` lacks the type; ``x.to(torch.bfloat16)``).  Code forms: Python operators
where they mean the same (``a + b``, ``a @ b``, ``a / b``; ONNX integer ``Div`` truncates,
so ``torch.div(..., rounding_mode="trunc")``), else ``torch.<function>(...)``: ``Max`` is
``torch.maximum``, ``Mod`` ``torch.remainder`` (sign of the divisor, ``fmod=0``) or
``torch.fmod`` (``fmod=1``), ``Round`` ``torch.round`` (half to even, as ONNX).  A ``Gemm`` that
is one Dense kernel is onnx2torch's ``nn.Linear``, written in :mod:`pipeline.to_torch.ops.weighted`.
"""

from __future__ import annotations

import re

import torch
from onnx import TensorProto
from onnx2torch.node_converters.binary_math_operations import OnnxBinaryMathOperation
from onnx2torch.node_converters.cast import OnnxCast
from onnx2torch.node_converters.functions import OnnxFunction
from onnx2torch.node_converters.gemm import OnnxGemm
from onnx2torch.node_converters.logical import OnnxLogical, OnnxNot
from onnx2torch.node_converters.matmul import OnnxMatMul
from onnx2torch.node_converters.mean import OnnxMean
from onnx2torch.node_converters.min_max import OnnxMinMax
from onnx2torch.node_converters.mod import OnnxMod
from onnx2torch.node_converters.neg import OnnxNeg
from onnx2torch.node_converters.pow import OnnxPow, OnnxSqrt
from onnx2torch.node_converters.reciprocal import OnnxReciprocal
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.node_converters.roundings import OnnxRound
from onnx2torch.node_converters.sum import OnnxSum
from onnx2torch.node_converters.where import OnnxWhere
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import (
    OnnxMapping,
    OperationConverterResult,
    onnx_mapping_from_node,
)
from torch import nn

from pipeline.to_torch.codegen import literals
from pipeline.to_torch.ops.registry import (
    NodeContext,
    UntranslatableError,
    override_converter,
    translates,
    use_fallback,
    uses_onnx2torch,
)

uses_onnx2torch(__name__, ("Add", "Sub", "Mul", "Div"), OnnxBinaryMathOperation)
uses_onnx2torch(__name__, ("Sqrt",), OnnxSqrt)
uses_onnx2torch(__name__, ("Neg",), OnnxNeg)
uses_onnx2torch(__name__, ("Reciprocal",), OnnxReciprocal)
uses_onnx2torch(__name__, ("MatMul",), OnnxMatMul)
uses_onnx2torch(__name__, ("Gemm",), OnnxGemm, nn.Linear)
uses_onnx2torch(__name__, ("Max", "Min"), OnnxMinMax)
uses_onnx2torch(__name__, ("Sum",), OnnxSum)
uses_onnx2torch(__name__, ("Mean",), OnnxMean)
uses_onnx2torch(__name__, ("Mod",), OnnxMod)
uses_onnx2torch(__name__, ("Ceil", "Floor", "Round"), OnnxRound)
uses_onnx2torch(__name__, ("Where",), OnnxWhere)
uses_onnx2torch(__name__, ("And", "Or", "Xor"), OnnxLogical)
uses_onnx2torch(__name__, ("Not",), OnnxNot)
uses_onnx2torch(
    __name__,
    ("Abs", "Acos", "Asin", "Atan", "Cos", "Exp", "Log", "Sign", "Sin", "Tan", "Tanh"),
    OnnxFunction,
)


_UNARY: dict[type, str] = {
    OnnxNeg: "-{x}",
    OnnxNot: "torch.logical_not({x})",
    OnnxSqrt: "torch.sqrt({x})",
    OnnxReciprocal: "torch.reciprocal({x})",
}


def _unary(ctx: NodeContext) -> str:
    return _UNARY[type(ctx.module)].format(x=ctx.args[0])


for _cls in _UNARY:
    translates(_cls)(_unary)


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


class Power(nn.Module):
    """ONNX ``Pow``: ``base ** exponent`` with the base's dtype (torch would promote)."""

    def forward(self, base: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
        """``torch.pow`` cast back to ``base.dtype``."""
        return torch.pow(base, exponent).to(base.dtype)


@override_converter("Pow", versions=(7, 12, 13, 15), produces=(Power, OnnxPow))
def convert_pow(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Pow → :class:`Power` (onnx2torch's ``OnnxPow`` keeps torch's promoted dtype)."""
    del graph, fallback
    return OperationConverterResult(torch_module=Power(), onnx_mapping=onnx_mapping_from_node(node))


uses_onnx2torch(__name__, ("Pow",), OnnxPow)  # Pow 1 (old-style broadcast attributes)


def _promoted(ctx: NodeContext) -> torch.dtype | None:
    """The dtype ``torch.pow(arg 0, arg 1)`` gives (None if arg 0's is unknown)."""
    base, exponent = ctx.metas[0], ctx.metas[1]
    if base is None:
        return None

    def like(meta: object, dtype: torch.dtype) -> torch.Tensor:  # rank 0 or not is what counts
        shape = getattr(meta, "shape", ())
        return torch.ones((1,) if len(shape) else (), dtype=dtype)

    literal: float | int = 1.0 if ctx.is_float(1) else 1
    other = literal if exponent is None else like(exponent, exponent.dtype)
    return torch.pow(like(base, base.dtype), other).dtype


@translates(Power, OnnxPow)
def _pow(ctx: NodeContext) -> str:
    power = f"torch.pow({ctx.args[0]}, {ctx.args[1]})"
    base = ctx.metas[0]
    if isinstance(ctx.module, Power) and base is not None and _promoted(ctx) != base.dtype:
        return f"{power}.to({literals.dtype(base.dtype)})"
    return power


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


@translates(OnnxLogical)
def _logical(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxLogical)
    return f"torch.{module.logic_op_function.__name__}({ctx.args[0]}, {ctx.args[1]})"


@translates(OnnxWhere)
def _where(ctx: NodeContext) -> str:
    return f"torch.where({', '.join(ctx.args)})"


_NUMBER = re.compile(r'-?(\d[\d.e+-]*|float\("(inf|nan)"\))|True|False')
"""An argument inlined as a Python number (:func:`pipeline.to_torch.codegen.literals.number`)."""


@translates(OnnxMinMax)
def _min_max(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxMinMax)
    # onnx2torch keeps the reduction over the stacked inputs: torch.amax for Max.
    is_max = module._operator is torch.amax
    function = "maximum" if is_max else "minimum"
    # A small constant operand is inlined as a Python number, which torch.maximum/minimum
    # refuse: against a number, Max is clamp(min=...) and Min is clamp(max=...).
    numbers = [a for a in ctx.args if _NUMBER.fullmatch(a)]
    tensors = [a for a in ctx.args if not _NUMBER.fullmatch(a)]
    if not tensors:
        raise UntranslatableError(f"OnnxMinMax of numbers only ({', '.join(ctx.args)})")
    result = tensors[0]
    for other in tensors[1:]:
        result = f"torch.{function}({result}, {other})"
    bound = "min" if is_max else "max"
    for number in numbers:
        result = f"{result}.clamp({bound}={number})"
    return result


@translates(OnnxSum)
def _sum(ctx: NodeContext) -> str:
    return " + ".join(ctx.args)


@translates(OnnxMean)
def _mean(ctx: NodeContext) -> str:
    if len(ctx.args) == 1:
        return ctx.args[0]
    return f"({' + '.join(ctx.args)}) / {len(ctx.args)}"


@translates(OnnxMod)
def _mod(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxMod)
    function = "fmod" if module.fmod else "remainder"  # remainder: the divisor's sign
    return f"torch.{function}({ctx.args[0]}, {ctx.args[1]})"


@translates(OnnxRound)
def _round(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxRound)
    name = _FUNCTIONS.get(module.round_function)
    if name is None:
        raise UntranslatableError(f"OnnxRound({module.round_function})")
    return f"torch.{name}({ctx.args[0]})"  # torch.round: half to even, as ONNX Round


@override_converter("Cast", versions=(9, 13), produces=(OnnxCast,))
def convert_cast(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Cast → onnx2torch's ``OnnxCast``, also to BFLOAT16 (which its dtype table lacks)."""
    if node.attributes.get("to") != TensorProto.BFLOAT16:
        return use_fallback(fallback, node, graph, "no converter")
    module = OnnxCast(TensorProto.FLOAT)
    module.torch_dtype = torch.bfloat16
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values),
    )


@translates(OnnxCast)
def _cast(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxCast)
    return f"{ctx.args[0]}.to({literals.dtype(module.torch_dtype)})"
