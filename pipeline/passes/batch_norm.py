"""Keras ``BatchNormalization`` (inference, as TF computes it) → ONNX ``BatchNormalization``.

In inference Keras calls ``tf.nn.batch_normalization``, which tf2onnx exports as primitive ops
on the layer's four variables (kept apart by the stateless export)::

    m = Reciprocal(Sqrt(Add(moving_variance, eps)))      # Mul(., gamma) when scale=True
    y = Add(Mul(x, m), Sub(beta, Mul(moving_mean, m)))   # Mul(Neg(moving_mean), m) when center=False

This pass matches that (every Add/Mul operand order) and replaces it with
``BatchNormalization(x', gamma, beta, moving_mean, moving_variance, epsilon=eps)`` with the
four variables as 1-D initializers (the move recorded in the provenance record), so onnx2torch
imports an ``nn.BatchNorm*d`` whose weight, bias and running statistics *are* the Keras
variables.  ONNX normalises axis 1: when the variables broadcast along another axis ``k`` of
``x`` (Keras's NHWC last axis), ``x`` is transposed to put ``k`` at 1 and the result
transposed back; the layout pass then cancels those transposes against the convolution's.

Matched only when ``x``'s rank is known (2 to 5), ``eps`` is a finite non-negative
one-element constant, and each variable is a whole TF variable of ``C`` elements laid out
along one axis ``k`` of ``x`` (``(C,)`` for the last axis, ``(1, C, 1, 1)``, ...).  Without
``scale`` (or ``center``) the missing gamma (beta) is a constant of ones (zeros): it is no
Keras variable, so the import stage keeps it frozen.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass
from onnxscript.rewriter import pattern

from pipeline.core import provenance
from pipeline.passes import variables
from pipeline.passes.base import PassResult
from pipeline.passes.custom_ops import const_array

_FLOAT_TYPES = {ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.FLOAT16}
MIN_OPSET = 9


def _channel_axis(array_shape: tuple[int, ...], rank: int, channels: int) -> int | None:
    """The axis of a rank-``rank`` tensor along which a constant of ``array_shape`` (with
    ``channels`` elements) varies, broadcast; None when it is not laid out along one axis."""
    if len(array_shape) > rank or int(np.prod(array_shape)) != channels:
        return None
    aligned = (1,) * (rank - len(array_shape)) + tuple(array_shape)
    axes = [i for i, d in enumerate(aligned) if d != 1]
    if channels == 1:
        return rank - 1
    return axes[0] if len(axes) == 1 else None


class _KerasBatchNorm(pattern.RewriteRuleClassBase):
    """``tf.nn.batch_normalization`` with or without ``scale`` and ``offset``."""

    def __init__(self, scale: bool, center: bool, record: provenance.Provenance) -> None:
        super().__init__(f"batch_norm{'_scale' if scale else ''}{'_center' if center else ''}")
        self.scale = scale
        self.center = center
        self.record = record
        self._axis = 1
        self._epsilon = 0.0

    def pattern(self, op: Any, x: Any, mean: Any, var: Any, eps: Any, gamma: Any, beta: Any) -> Any:
        factor = op.Reciprocal(op.Sqrt(op.Add(var, eps)))
        if self.scale:
            factor = op.Mul(factor, gamma)
        # TF: ``offset - mean * inv``, or ``-mean * inv`` without an offset.
        shift = op.Sub(beta, op.Mul(mean, factor)) if self.center else op.Mul(op.Neg(mean), factor)
        return op.Add(op.Mul(x, factor), shift)

    def check(  # type: ignore[override]
        self,
        context: Any,
        x: ir.Value,
        mean: ir.Value,
        var: ir.Value,
        eps: ir.Value,
        gamma: ir.Value | None = None,
        beta: ir.Value | None = None,
        **_: Any,
    ) -> Any:
        result = pattern.MatchResult()
        if x.dtype not in _FLOAT_TYPES:
            return result.fail(f"input is {x.dtype}, not floating point", x)
        if x.shape is None or not 2 <= len(x.shape) <= 5:
            return result.fail("input rank unknown or not 2 to 5", x)
        rank = len(x.shape)
        eps_value = const_array(eps)
        if eps_value is None or eps_value.size != 1 or variables.variable_of(self.record, eps):
            return result.fail("epsilon is not a one-element constant", eps)
        self._epsilon = float(eps_value.reshape(()))
        if not np.isfinite(self._epsilon) or self._epsilon < 0:
            return result.fail("epsilon is not finite and non-negative", eps)
        axes = set()
        named = {"moving_mean": mean, "moving_variance": var, "gamma": gamma, "beta": beta}
        channels = None
        for role, value in named.items():
            if value is None:
                continue
            if variables.variable_of(self.record, value) is None:
                return result.fail(f"{role} is not a TF variable's initializer", value)
            assert value.const_value is not None
            shape = tuple(value.const_value.shape.numpy())
            size = int(np.prod(shape))
            channels = size if channels is None else channels
            if size != channels:
                return result.fail(f"{role} has {size} elements, not {channels}", value)
            axis = _channel_axis(shape, rank, size)
            if axis is None:
                return result.fail(f"{role} of shape {shape} is not along one axis", value)
            axes.add(axis)
        if len(axes) != 1:
            return result.fail(f"the variables lie along different axes {sorted(axes)}")
        axis = axes.pop()
        dim = x.shape[axis]
        if isinstance(dim, int) and dim != channels:
            return result.fail(f"input's axis {axis} has {dim} elements, not {channels}", x)
        if axis == 0:
            return result.fail("the variables lie along the batch axis", x)
        self._axis = axis
        return result

    def _vector(self, op: Any, value: ir.Value, role: str) -> ir.Value:
        assert value.const_value is not None
        array = value.const_value.numpy()
        if array.ndim == 1:
            return value
        graph = value.graph
        assert graph is not None
        return variables.derived(
            graph, self.record, value, array.reshape(-1), "reshape", f"{value.name}/{role}"
        )

    def _constant(self, op: Any, x: ir.Value, channels: int, fill: float, role: str) -> ir.Value:
        dtype = x.dtype.numpy() if x.dtype is not None else np.float32
        return op.initializer(
            ir.tensor(np.full((channels,), fill, dtype=dtype)), f"batch_norm_{role}_{id(x)}"
        )

    def rewrite(
        self,
        op: Any,
        x: ir.Value,
        mean: ir.Value,
        var: ir.Value,
        gamma: ir.Value | None = None,
        beta: ir.Value | None = None,
        **_: Any,
    ) -> ir.Value:
        assert x.shape is not None and mean.const_value is not None
        channels = int(np.prod(mean.const_value.shape.numpy()))
        inputs = [
            self._vector(op, gamma, "gamma")
            if gamma is not None
            else self._constant(op, x, channels, 1.0, "ones"),
            self._vector(op, beta, "beta")
            if beta is not None
            else self._constant(op, x, channels, 0.0, "zeros"),
            self._vector(op, mean, "moving_mean"),
            self._vector(op, var, "moving_variance"),
        ]
        rank = len(x.shape)
        if self._axis == 1:
            return op.BatchNormalization(x, *inputs, epsilon=self._epsilon)
        perm = [0, self._axis, *[d for d in range(1, rank) if d != self._axis]]
        inverse = [int(i) for i in np.argsort(perm)]
        normalised = op.BatchNormalization(
            op.Transpose(x, perm=perm), *inputs, epsilon=self._epsilon
        )
        return op.Transpose(normalised, perm=inverse)


def _default_opset(model: onnx.ModelProto) -> int:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


class BatchNormPass:
    """Fuse Keras's primitive inference BatchNorm into ONNX ``BatchNormalization``."""

    name = "batch_norm"
    description = (
        "Keras BatchNormalization (tf.nn.batch_normalization's primitive ops on the layer's "
        "variables) -> ONNX BatchNormalization (nn.BatchNorm*d on import, variables intact)"
    )

    def apply(self, model: onnx.ModelProto) -> PassResult:
        """Return the rewritten copy of ``model`` and the number of BatchNorms fused."""
        ops = {n.op_type for n in model.graph.node}
        if _default_opset(model) < MIN_OPSET or not {"Reciprocal", "Sqrt"} <= ops:
            return PassResult(model, 0)
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
            inferred = model
        ir_model = ir.serde.deserialize_model(inferred)
        record = variables.record_of(ir_model)
        rules = pattern.RewriteRuleSet(
            [
                _KerasBatchNorm.rule(scale, center, record)
                for scale in (True, False)
                for center in (True, False)
            ],
            commute=True,
        )
        changes = int(rules.apply_to_model(ir_model))
        if changes == 0:
            return PassResult(model, 0)
        RemoveUnusedNodesPass()(ir_model)
        variables.save(ir_model, record)
        out = ir.serde.serialize_model(ir_model)
        kept = {vi.name for vi in model.graph.value_info}
        infos = [vi for vi in out.graph.value_info if vi.name in kept]
        del out.graph.value_info[:]
        out.graph.value_info.extend(infos)
        return PassResult(out, changes)
