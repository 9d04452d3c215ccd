"""Keras ``LayerNormalization`` (decomposed by tf2onnx) → ONNX ``LayerNormalization``.

TF computes a layer normalisation as ``tf.nn.moments`` + ``tf.nn.batch_normalization`` and
tf2onnx exports that decomposed (grappler has already folded ``Reshape(gamma)`` into a
constant of shape ``(1, ..., 1, C)``)::

    mean = R(x)                       # R: GlobalAveragePool, or ReduceMean(axes=[k], keepdims=1)
    d    = Sub(x, mean)               # ConvNeXt: Sub(x, Reshape(mean, <mean's own shape>))
    var  = R(Mul(d, d))
    inv  = Reciprocal(Sqrt(Add(var, eps)))
    m    = Mul(inv, gamma)            # scale=True
    y    = Add(Mul(x, m), Add(Mul(Neg(mean), m), beta))    # center=False: no ``Add(., beta)``

This pass matches that (every commutative Add/Mul in either operand order) and replaces it by
``LayerNormalization(x, gamma_1d, beta_1d, axis=-1, epsilon=eps)`` with ``gamma``/``beta`` as
new 1-D initializers holding the Keras variables' values, so onnx2torch imports an
``nn.LayerNorm`` (Keras's epsilon, as the float32 ONNX stores) and parameter adoption maps
``gamma``/``beta`` to its ``weight``/``bias`` with transform ``identity``.  When the one
normalised axis ``k`` is not the last (tf2onnx's transpose optimizer moves ConvNeXt's NHWC
last-axis norm to NCHW axis 1), ``x`` is transposed to put ``k`` last and the result
transposed back; transpose pairs that then cancel (the NHWC transpose that followed) are
bypassed.

It rewrites only what is provably a normalisation over one axis ``k`` with ``C`` elements:
- opset ≥ 17 (where ``LayerNormalization`` exists); float or double input;
- the rank of ``x`` and its dimension ``k`` are known (shape inference);
- both reductions are over axis ``k`` alone: ``GlobalAveragePool`` (means over every
  axis ≥ 2) only on rank-3 inputs (``k = 2``), ``ReduceMean`` only with constant ``axes``
  naming one axis (negative axes normalised) and ``keepdims=1``;
- a reshaped mean is reshaped to its own shape (every dimension but one ``-1`` provably kept);
- ``eps`` is a finite, non-negative one-element constant (initializer that is not a graph
  input, or ``Constant``) that broadcasts without changing the shape; ``gamma`` and ``beta``
  are such constants with ``C`` elements laid out along axis ``k`` only (``(C,)`` for the
  last axis, ``(1, ..., 1, C)``, ``(1, C, 1, 1)``, ...).

Not rewritten: ``scale=False`` (ONNX ``LayerNormalization`` needs a scale, and an all-ones
torch weight no TF variable maps to would break the trainable-parameter count),
``rms_scaling=True`` (no mean subtraction), normalisations over several axes.  Matched nodes
whose results are also used elsewhere (grappler merges the moments of layer norms on one
tensor) stay in the graph for those users; only unused nodes are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass
from onnxscript.rewriter import pattern

from pipeline.core import provenance
from pipeline.passes import variables
from pipeline.passes.base import PassResult

MIN_OPSET = 17
_FLOAT_TYPES = {ir.DataType.FLOAT, ir.DataType.DOUBLE}


def _constant(value: ir.Value | None) -> np.ndarray | None:
    """The value of a true constant (initializer not overridable as a graph input, or the
    output of a ``Constant`` node), else None."""
    if value is None or value.is_graph_input():
        return None
    producer = value.producer()
    if producer is not None:
        if producer.op_type != "Constant" or producer.domain not in ("", "ai.onnx"):
            return None
        attr = producer.attributes.get("value")
        if attr is None or attr.type != ir.AttributeType.TENSOR:
            return None
        return np.asarray(attr.as_tensor().numpy())
    if value.const_value is None:
        return None
    try:
        return np.asarray(value.const_value.numpy())
    except (FileNotFoundError, OSError):  # external data that is not there
        return None


def _reduced_axis(value: ir.Value, rank: int, opset: int) -> int | str:
    """The one axis (non-negative) ``value`` is a keepdims mean over, for a rank-``rank``
    input; else a string saying why not."""
    node = value.producer()
    if node is None:
        return "no producer"
    if node.op_type == "GlobalAveragePool":
        # GlobalAveragePool averages over every axis from 2 on: the last axis alone iff rank 3.
        return 2 if rank == 3 else f"GlobalAveragePool on a rank-{rank} input"
    if node.op_type != "ReduceMean":
        return f"{node.op_type} is not a mean"
    keepdims = node.attributes.get("keepdims")
    if keepdims is not None and keepdims.as_int() != 1:
        return "ReduceMean without keepdims"
    axes: Sequence[int] | None
    if opset >= 18:
        axes_input = node.inputs[1] if len(node.inputs) > 1 else None
        if axes_input is None:
            axes = None
        else:
            found = _constant(axes_input)
            if found is None:
                return "ReduceMean axes are not constant"
            axes = [int(a) for a in found.reshape(-1)]
    else:
        attr = node.attributes.get("axes")
        axes = None if attr is None else list(attr.as_ints())
    if axes is None or len(axes) == 0:
        # Every axis (noop_with_empty_axes=1 would make it an identity: not a mean either).
        noop = node.attributes.get("noop_with_empty_axes")
        if noop is not None and noop.as_int() == 1:
            return "ReduceMean with noop_with_empty_axes"
        axes = list(range(rank))
    normalised = sorted({a + rank if a < 0 else a for a in axes})
    if len(normalised) != 1 or not 0 <= normalised[0] < rank:
        return f"ReduceMean over axes {axes} of a rank-{rank} input, not one axis"
    return normalised[0]


def _axis_vector(array: np.ndarray, channels: int, rank: int, axis: int) -> np.ndarray | None:
    """``array`` as a ``(C,)`` vector when, broadcast against a rank-``rank`` tensor, it varies
    along ``axis`` only (shape ``(C,)`` for the last axis, ``(C, 1, 1)``, ``(1, C, 1, 1)``, ...),
    else None."""
    if array.size != channels or array.ndim > rank:
        return None
    aligned = (1,) * (rank - array.ndim) + array.shape
    if channels > 1 and any(d != (channels if i == axis else 1) for i, d in enumerate(aligned)):
        return None
    return array.reshape(channels)


class _LayerNormDecomposition(pattern.RewriteRuleClassBase):
    """One form of the decomposition: ``center`` says whether ``beta`` is added; bit ``i`` of
    ``swaps`` swaps the operands of the ``i``-th commutative node (all orders are rules of
    their own, as ``commute=True`` would make, without the symmetric ``Mul(d, d)``)."""

    def __init__(self, center: bool, swaps: int, opset: int, names: _InitializerNames) -> None:
        super().__init__(f"layer_norm{'_center' if center else ''}_{swaps:02x}", remove_nodes=False)
        self.center = center
        self.swaps = swaps
        self.opset = opset
        self.names = names
        self._axis = -1
        self._epsilon = 0.0
        self._scale: np.ndarray | None = None
        self._bias: np.ndarray | None = None

    def _binary(self, op: Any, op_type: str, bit: int, a: Any, b: Any) -> Any:
        return getattr(op, op_type)(*((b, a) if self.swaps >> bit & 1 else (a, b)))

    def pattern(self, op: Any, x: Any, eps: Any, gamma: Any, beta: Any, mean_shape: Any) -> Any:
        mean = _mean_of(op, x, "mean")
        # tf2onnx's transpose optimizer may reshape the mean to its own shape before the Sub.
        subtracted = pattern.OrValue(
            [mean, op.Reshape(mean, mean_shape, _outputs=["reshaped"])],
            tag_var="mean_reshaped",
            tag_values=[False, True],
        )
        deviation = op.Sub(x, subtracted)
        variance = _mean_of(op, op.Mul(deviation, deviation), "variance")
        inv = op.Reciprocal(op.Sqrt(self._binary(op, "Add", 0, variance, eps)))
        factor = self._binary(op, "Mul", 1, inv, gamma)
        shift = self._binary(op, "Mul", 2, op.Neg(mean), factor)
        if self.center:
            shift = self._binary(op, "Add", 3, shift, beta)
        return self._binary(op, "Add", 4, self._binary(op, "Mul", 5, x, factor), shift)

    def check(  # type: ignore[override]
        self,
        context: Any,
        x: ir.Value,
        mean: ir.Value,
        variance: ir.Value,
        eps: ir.Value,
        gamma: ir.Value,
        beta: ir.Value | None = None,
        mean_reshaped: bool = False,
        mean_shape: ir.Value | None = None,
        reshaped: ir.Value | None = None,
        **_: Any,
    ) -> Any:
        result = pattern.MatchResult()
        if x.dtype not in _FLOAT_TYPES:
            return result.fail(f"input is {x.dtype}, not float or double", x)
        shape = x.shape
        if shape is None or len(shape) == 0:
            return result.fail("input rank unknown", x)
        rank = len(shape)
        # Mul(d, d) has x's shape (the mean keeps dims), so both reductions see rank ``rank``.
        axes = []
        for value in (mean, variance):
            axis = _reduced_axis(value, rank, self.opset)
            if isinstance(axis, str):
                return result.fail(axis, value)
            axes.append(axis)
        if axes[0] != axes[1]:
            return result.fail(f"mean over axis {axes[0]}, variance over axis {axes[1]}")
        axis = axes[0]
        channels = shape[axis]
        if not isinstance(channels, int):
            return result.fail(f"input's dimension {axis} (normalised) is not static", x)
        if mean_reshaped:
            problem = _identity_reshape(reshaped, mean_shape, [*shape], axis)
            if problem is not None:
                return result.fail(problem, mean_shape)
        eps_value = _constant(eps)
        if eps_value is None or eps_value.size != 1 or eps_value.ndim > rank:
            return result.fail("epsilon is not a one-element constant", eps)
        self._epsilon = float(eps_value.reshape(()))
        if not np.isfinite(self._epsilon) or self._epsilon < 0:
            return result.fail("epsilon is not a finite non-negative number", eps)
        vectors: list[np.ndarray | None] = []
        named: tuple[tuple[str, ir.Value | None], ...] = (("gamma", gamma), ("beta", beta))
        for name, operand in named:
            if operand is None:
                vectors.append(None)
                continue
            array = _constant(operand)
            if array is None:
                return result.fail(f"{name} is not a constant", operand)
            if array.dtype != x.dtype.numpy():
                return result.fail(f"{name} is {array.dtype}, input {x.dtype}", operand)
            vector = _axis_vector(array, channels, rank, axis)
            if vector is None:
                return result.fail(f"{name} of shape {array.shape} is not along axis {axis}")
            vectors.append(vector)
        self._scale, self._bias = vectors
        self._axis = axis - rank  # negative: the transposes below only need it relative
        return result

    def rewrite(
        self,
        op: Any,
        x: ir.Value,
        gamma: ir.Value,
        beta: ir.Value | None = None,
        **_: Any,
    ) -> ir.Value:
        assert self._scale is not None and x.shape is not None
        inputs = [x, self.names.vector(op, gamma, self._scale, "scale")]
        if beta is not None and self._bias is not None:
            inputs.append(self.names.vector(op, beta, self._bias, "bias"))
        stash = ir.DataType.DOUBLE if x.dtype == ir.DataType.DOUBLE else ir.DataType.FLOAT
        rank = len(x.shape)
        axis = self._axis + rank
        if axis == rank - 1:
            return op.LayerNormalization(
                *inputs, axis=-1, epsilon=self._epsilon, stash_type=int(stash)
            )
        # A single inner axis (tf2onnx moved an NHWC last-axis norm to NCHW's axis 1):
        # transpose it last, normalise, transpose back.
        perm = [d for d in range(rank) if d != axis] + [axis]
        inverse = [int(i) for i in np.argsort(perm)]
        inputs[0] = op.Transpose(x, perm=perm)
        normalised = op.LayerNormalization(
            *inputs, axis=-1, epsilon=self._epsilon, stash_type=int(stash)
        )
        return op.Transpose(normalised, perm=inverse)


def _mean_of(op: Any, value: Any, name: str) -> Any:
    """``GlobalAveragePool(value)`` or ``ReduceMean(value, ...)``, bound to ``name`` (the
    reduced axes are checked later)."""
    return pattern.OrValue(
        [op.GlobalAveragePool(value), op.ReduceMean(value, _allow_other_inputs=True)], name=name
    )


def _identity_reshape(
    reshaped: ir.Value | None, target: ir.Value | None, x_shape: list[Any], axis: int
) -> str | None:
    """None when ``Reshape(mean, target)`` provably keeps the mean's shape (``x``'s with
    ``axis`` set to 1), else why not."""
    if reshaped is None or target is None:
        return "reshape not bound"
    node = reshaped.producer()
    allowzero = node.attributes.get("allowzero") if node is not None else None
    dims = _constant(target)
    if dims is None or dims.ndim != 1 or len(dims) != len(x_shape):
        return "mean reshaped to a non-constant or different-rank shape"
    expected = [1 if i == axis else d for i, d in enumerate(x_shape)]
    open_dims = 0
    for wanted, have in zip(dims.tolist(), expected, strict=True):
        if wanted == -1:
            open_dims += 1
        elif wanted == 0 and (allowzero is None or allowzero.as_int() == 0):
            continue  # copies the input dimension, which is the expected one
        elif not isinstance(have, int) or wanted != have:
            return f"mean reshaped to {dims.tolist()}, not its own shape"
    if open_dims > 1:
        return f"mean reshaped to {dims.tolist()}: more than one -1"
    return None  # every other dimension is kept, so a single -1 is the kept one too


class _InitializerNames:
    """New 1-D initializers, named after the constant they reshape; one per source value.
    A source that is a TF variable's initializer stays that variable (recorded in ``record``)."""

    def __init__(self, taken: set[str], record: provenance.Provenance) -> None:
        self.taken = taken
        self.record = record
        self.made: dict[int, ir.Value] = {}

    def vector(self, op: Any, source: ir.Value, array: np.ndarray, role: str) -> ir.Value:
        cached = self.made.get(id(source))
        if cached is not None:
            return cached
        base = f"{(source.name or 'layer_norm').removesuffix(':0')}/{role}"
        name, n = base, 0
        while name in self.taken:
            n += 1
            name = f"{base}_{n}"
        self.taken.add(name)
        value: ir.Value = op.initializer(ir.tensor(np.ascontiguousarray(array), name=name), name)
        if source.const_value is not None and source.name:
            self.record.derive(name, source.name, "reshape", source.const_value.shape.numpy())
        self.made[id(source)] = value
        return value


def _perm(node: ir.Node) -> list[int] | None:
    attr = node.attributes.get("perm")
    return None if attr is None else list(attr.as_ints())


def _cancel_transposes(graph: ir.Graph, existing: set[int]) -> int:
    """Bypass ``Transpose(Transpose(v, p), q)`` pairs that are the identity and that this pass
    made (one of the two is new): ConvNeXt's NCHW layer norms are followed by a transpose
    back to NHWC for the pointwise convolution."""
    cancelled = 0
    for node in list(graph):
        if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx"):
            continue
        inner = node.inputs[0].producer() if node.inputs[0] is not None else None
        if inner is None or inner.op_type != "Transpose" or inner.domain not in ("", "ai.onnx"):
            continue
        if id(node) in existing and id(inner) in existing:
            continue
        outer_perm, inner_perm = _perm(node), _perm(inner)
        if outer_perm is None or inner_perm is None or len(outer_perm) != len(inner_perm):
            continue
        source = inner.inputs[0]
        output = node.outputs[0]
        if source is None or output.is_graph_output():
            continue
        if [inner_perm[i] for i in outer_perm] == list(range(len(outer_perm))):
            output.replace_all_uses_with(source)
            cancelled += 1
    return cancelled


def _default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def _with_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
        # Only the shapes the graph declares are known: fewer matches, never wrong ones.
        copy = onnx.ModelProto()
        copy.CopyFrom(model)  # the IR may share the proto's buffers: never touch the input
        return copy


def _candidate(model: onnx.ModelProto) -> bool:
    ops = {n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")}
    return {"Reciprocal", "Sqrt", "Neg", "Sub"} <= ops and bool(
        ops & {"GlobalAveragePool", "ReduceMean"}
    )


class LayerNormPass:
    """Fuse tf2onnx's decomposed Keras ``LayerNormalization`` into ONNX ``LayerNormalization``."""

    name = "layer_norm"
    description = (
        "Keras LayerNormalization (tf2onnx's moments + batch_normalization decomposition over "
        "one axis) -> ONNX LayerNormalization with 1-D scale/bias (nn.LayerNorm on import)"
    )

    def apply(self, model: onnx.ModelProto) -> PassResult:
        """Return the rewritten copy of ``model`` and the number of layer norms fused."""
        opset = _default_opset(model)
        if opset < MIN_OPSET or not _candidate(model):
            return PassResult(model, 0)
        ir_model = ir.serde.deserialize_model(_with_shapes(model))
        record = variables.record_of(ir_model)
        names = _InitializerNames(
            {v.name for v in ir_model.graph.initializers.values() if v.name}
            | {v.name for n in ir_model.graph for v in n.outputs if v.name}
            | {v.name for v in ir_model.graph.inputs if v.name},
            record,
        )
        rules = pattern.RewriteRuleSet(
            [
                _LayerNormDecomposition.rule(center, swaps, opset, names)
                for center in (True, False)
                for swaps in range(64)
                if center or not swaps & 8  # bit 3 is the beta Add
            ]
        )
        # Held (not just their ids) so that no new node can reuse the id of a dropped one.
        transposes = [node for node in ir_model.graph if node.op_type == "Transpose"]
        existing = {id(node) for node in transposes}
        changes = int(rules.apply_to_model(ir_model))
        if changes == 0:
            return PassResult(model, 0)
        if _cancel_transposes(ir_model.graph, existing):
            RemoveUnusedNodesPass()(ir_model)
        RemoveUnusedNodesPass()(ir_model)
        variables.save(ir_model, record)
        out = ir.serde.serialize_model(ir_model)
        # Keep the value_info the input had (shape inference only served the checks).
        kept = {vi.name for vi in model.graph.value_info}
        infos = [vi for vi in out.graph.value_info if vi.name in kept]
        del out.graph.value_info[:]
        out.graph.value_info.extend(infos)
        return PassResult(out, changes)
