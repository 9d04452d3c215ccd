"""``BitwiseAnd(Bitcast(x, int32), INT32_MIN)`` -> ``Where(signbit(x), INT32_MIN, 0)``.

Keras 3's TF backend computes ``signbit`` of a float32 tensor by reinterpreting its bits:
``tf.bitwise.bitwise_and(tf.bitcast(x, tf.int32), INT32_MIN) < 0``.  ``keras.ops.argmax``
and ``argmin`` call it on every float input (to order -0.0 below 0.0), so any model with an
``ops.argmax`` head holds one.  tf2onnx has no handler for TF's ``Bitcast`` (nor, below
opset 18, for ``BitwiseAnd``) and leaves both in the graph, not valid ONNX.

The replacement computes the sign bit from values: ``x < 0 or 1/x < 0`` (``1/-0.0`` is
``-inf``), so -0.0 and -inf have it and +0.0 has not, exactly as the bits say; the one
difference is a NaN with its sign bit set, which this calls positive.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnxscript.rewriter import pattern

from pipeline.passes.base import PassResult

_INT32_MIN = np.iinfo(np.int32).min


def _bit_and_sign(op: pattern.OpsetPatternBuilder, x: ir.Value, mask: ir.Value) -> ir.Value:
    return op.BitwiseAnd(op.Bitcast(x, type=int(ir.DataType.INT32)), mask)


def _sign_from_values(op: pattern.OpsetPatternBuilder, x: ir.Value, mask: ir.Value) -> ir.Value:
    zero = op.Constant(value=ir.tensor(np.array(0, dtype=np.float32)))
    one = op.Constant(value=ir.tensor(np.array(1, dtype=np.float32)))
    negative = op.Or(op.Less(x, zero), op.Less(op.Div(one, x), zero))
    return op.Where(
        negative,
        op.Constant(value=ir.tensor(np.array(_INT32_MIN, dtype=np.int32))),
        op.Constant(value=ir.tensor(np.array(0, dtype=np.int32))),
    )


def _is_float_sign_mask(context: object, x: ir.Value, mask: ir.Value) -> pattern.MatchResult:
    result = pattern.MatchResult()
    if x.dtype != ir.DataType.FLOAT:
        return result.fail(f"Bitcast input is {x.dtype}, not float32")
    value = mask.const_value
    if value is None:
        return result.fail("BitwiseAnd's mask is not a constant")
    array = value.numpy()
    if array.dtype != np.int32 or array.size != 1 or int(array.reshape(-1)[0]) != _INT32_MIN:
        return result.fail("BitwiseAnd's mask is not the int32 sign bit")
    return result


SIGNBIT_RULE = pattern.RewriteRule(_bit_and_sign, _sign_from_values, _is_float_sign_mask)


class SignbitPass:
    """Rewrite Keras's bit-level ``signbit`` (TF ``Bitcast`` + ``BitwiseAnd``, which tf2onnx
    leaves unconverted) into comparisons ONNX and torch run."""

    name = "signbit"
    description = (
        "BitwiseAnd(Bitcast(x, int32), INT32_MIN) -> Where(x < 0 or 1/x < 0, INT32_MIN, 0): "
        "Keras's signbit in ops.argmax/argmin, left unconverted by tf2onnx"
    )

    def apply(self, model: onnx.ModelProto) -> PassResult:
        """Return the rewritten copy of ``model`` and the number of sign tests replaced."""
        if not any(node.op_type == "Bitcast" for node in model.graph.node):
            return PassResult(model, 0)
        ir_model = ir.serde.deserialize_model(model)
        changes = SIGNBIT_RULE.apply_to_model(ir_model)
        return PassResult(ir.serde.serialize_model(ir_model), int(changes))
