"""``Erfc(x) -> Sub(1, Erf(x))``.

tf2onnx has no handler for TensorFlow's ``Erfc`` and leaves it in the graph as an op of the
default domain, which is not valid ONNX; every Keras ``gelu`` (exact form) produces one,
e.g. ``keras.applications.ConvNeXtTiny``.  ``1 - erf(x)`` loses relative precision where
erfc(x) is tiny (x > ~3), which is harmless in gelu, where it is multiplied by x/2 and
added nowhere near 1.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnxscript.rewriter import pattern

from pipeline.passes.base import PassResult


def _erfc(op: pattern.OpsetPatternBuilder, x: ir.Value) -> ir.Value:
    return op.Erfc(x)


def _one_minus_erf(op: pattern.OpsetPatternBuilder, x: ir.Value) -> ir.Value:
    dtype = x.dtype or ir.DataType.FLOAT
    one = op.Constant(value=ir.tensor(np.array(1, dtype=dtype.numpy())))
    return op.Sub(one, op.Erf(x))


def _is_float(context: object, x: ir.Value) -> pattern.MatchResult:
    result = pattern.MatchResult()
    if x.dtype is not None and not x.dtype.is_floating_point():
        return result.fail(f"Erfc input is {x.dtype}, not floating point")
    return result


ERFC_RULE = pattern.RewriteRule(_erfc, _one_minus_erf, _is_float)


class ErfcPass:
    """Rewrite TF's ``Erfc`` (left unconverted by tf2onnx) into ``1 - Erf(x)``."""

    name = "erfc"
    description = "Erfc(x) -> Sub(1, Erf(x)): tf2onnx leaves TF's Erfc (Keras gelu) unconverted"

    def apply(self, model: onnx.ModelProto) -> PassResult:
        """Return the rewritten copy of ``model`` and the number of Erfc nodes replaced."""
        if not any(
            node.op_type == "Erfc" and node.domain in ("", "ai.onnx") for node in model.graph.node
        ):
            return PassResult(model, 0)
        ir_model = ir.serde.deserialize_model(model)
        changes = ERFC_RULE.apply_to_model(ir_model)
        return PassResult(ir.serde.serialize_model(ir_model), int(changes))
