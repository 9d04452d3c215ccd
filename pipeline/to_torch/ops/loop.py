"""ONNX ``Loop`` (1, 11, 13, 16, 19, 21): a Python loop calling the body as a torch module.

Keras runs masked LSTM/GRU/SimpleRNN, ``ConvLSTM*D``, custom ``keras.layers.RNN`` cells and
RNNs over a run-time sequence length as a TensorFlow ``while`` loop, which tf2onnx writes as
an ONNX ``Loop``.

Converter: ours (:func:`convert_loop`; onnx2torch has none).  The body subgraph is imported
by the same importer (our converters included, so a nested ``Loop`` converts the same way)
as a ``torch.fx.GraphModule`` taking ``(iteration_num, cond, *carried, *outer)`` and
returning ``(cond, *carried, *scan)``.  ``outer`` are the values of enclosing graphs the body
reads by name (ONNX subgraphs may): they become explicit inputs of the :class:`OnnxLoop`, so
a Keras variable the body reads (passed in as a loop-carried or an outer value) stays the one
``nn.Parameter`` of the outer module, read through the call.

ONNX semantics (:class:`OnnxLoop`): the loop runs while ``iteration < M`` (when the trip count
``M`` is given) and ``cond`` (when given); the carried values' final values are the first
outputs, then each scan output stacked along a new axis 0.  The trip count is a Python value
where the import knows it (a constant, or shape arithmetic on ``x.shape``, which
``torch.export`` sees as an int or a ``SymInt``), else it is read from its tensor at run time.
Keras's loop conditions (``step < n and time + 1 < n``) test the same bound as the trip count:
where the import proves that ``cond`` stays true on every iteration but the last one and on
entry (:func:`_cond_redundant`), the loop runs ``M`` iterations without reading it, which is
what lets ``torch.export`` unroll it.  A condition that really depends on data is read with
``bool(cond)`` each step: that runs eagerly but does not export (the import stage reports it).

Code form: a ``for`` loop in ``forward`` around a method of the generated class that is the
body, written by the same code generator (:class:`~pipeline.to_torch.ops.registry.Block`).
A run-time sequence length makes ``torch.export`` unroll the loop for the traced length: the
run's ``static_dims`` says so, as for ``GruResetBefore``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from pipeline.to_torch.ops.registry import (
    Block,
    NodeContext,
    UntranslatableError,
    new_converter,
    translates,
)
from pipeline.to_torch.ops.shape_values import BinOp, Expr, ShapeArgs, known_int_value

_VERSIONS = (1, 11, 13, 16, 19, 21)

MODEL_OPSETS: contextvars.ContextVar[tuple[tuple[str, int], ...]] = contextvars.ContextVar(
    "loop_model_opsets", default=(("", 17),)
)
"""The opset imports of the model being imported (set by the importer): a body is imported
as a model of its own with the same opsets."""


class OnnxLoop(ShapeArgs):
    """An ONNX ``Loop`` node: ``body`` called in a Python loop.

    ``forward(*args)`` takes, in order: the trip count tensor when it is read at run time
    (``trip_input``), the initial ``cond`` when it is checked (``cond_input``), the
    ``carried`` initial values, the ``outer`` values the body reads, and the tensors whose
    shapes the trip count expression reads (``sources``).  It returns the final carried
    values then the stacked scan outputs (a tensor when there is one output in all).
    """

    def __init__(
        self,
        body: nn.Module,
        carried: int,
        scans: int,
        outer: int,
        trip: Expr | None,
        trip_input: bool,
        cond_input: bool,
        outputs: int,
    ) -> None:
        super().__init__([trip] if trip is not None else [])
        self.body = body
        self.carried = carried
        self.scans = scans
        self.outer = outer
        self.trip = trip
        self.trip_input = trip_input
        self.cond_input = cond_input
        self.outputs = outputs
        # Codegen writes the body as a method and runs it once on real values for shapes.
        self.recording = False
        self.example: tuple[torch.Tensor, ...] | None = None

    def extra_repr(self) -> str:
        return (
            f"carried={self.carried}, scans={self.scans}, outer={self.outer}, "
            f"trip={self.trip!r}, trip_input={self.trip_input}, cond_input={self.cond_input}"
        )

    def trip_count(self, args: Sequence[Any]) -> Any:
        """The number of iterations allowed (None: unbounded) given forward's arguments."""
        if self.trip_input:
            return int(args[0].item())
        if self.trip is None:
            return None
        return self.resolve([self.trip], args[len(args) - len(self.sources) :])[0]

    def forward(self, *args: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The loop's outputs (ONNX semantics)."""
        trips = self.trip_count(args)
        position = int(self.trip_input)
        cond: torch.Tensor | None = args[position] if self.cond_input else None
        position += int(self.cond_input)
        carried = list(args[position : position + self.carried])
        position += self.carried
        outer = list(args[position : position + self.outer])
        device = carried[0].device if carried else (outer[0].device if outer else None)
        flag = torch.ones((), dtype=torch.bool, device=device) if cond is None else cond
        steps: list[list[torch.Tensor]] = [[] for _ in range(self.scans)]
        step = 0
        while (trips is None or step < trips) and (cond is None or bool(cond)):
            iteration = torch.tensor(step, dtype=torch.int64, device=device)
            if self.recording and self.example is None:
                self.example = (iteration, flag, *carried, *outer)
            results = self.body(iteration, flag, *carried, *outer)
            results = results if isinstance(results, tuple | list) else (results,)
            flag = results[0]
            if self.cond_input:
                cond = flag
            carried = list(results[1 : 1 + self.carried])
            for collected, value in zip(steps, results[1 + self.carried :], strict=True):
                collected.append(value)
            step += 1
        if any(not collected for collected in steps):
            raise NotImplementedError("Loop: zero iterations with scan outputs (shape unknown)")
        outputs = [*carried, *(torch.stack(collected) for collected in steps)]
        return outputs[0] if self.outputs == 1 else tuple(outputs)


# ------------------------------------------------------------------------------ converter


def _subgraphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every graph nested in its nodes' attributes."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _subgraphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _subgraphs(sub)


def outer_names(body: onnx.GraphProto) -> list[str]:
    """The values ``body`` (or a graph nested in it) reads that none of them defines: names
    of enclosing graphs, in order of first use.  ONNX names are unique across a model, so a
    name defined at any depth is never also an outer one."""
    defined: set[str] = set()
    used: dict[str, None] = {}
    for graph in _subgraphs(body):
        defined.update(v.name for v in graph.input)
        defined.update(t.name for t in graph.initializer)
        defined.update(t.values.name for t in graph.sparse_initializer)
        for node in graph.node:
            defined.update(node.output)
            used.update((name, None) for name in node.input if name)
    for graph in _subgraphs(body):
        used.update((v.name, None) for v in graph.output)
    return [name for name in used if name not in defined]


def _value_info(graph: OnnxGraph, name: str) -> onnx.ValueInfoProto:
    """``name``'s type as the enclosing graph knows it (elem type only if that is all)."""
    if name in graph.initializers:
        tensor = graph.initializers[name].proto
        return helper.make_tensor_value_info(name, tensor.data_type, list(tensor.dims))
    info = graph.value_info.get(name)
    if info is not None and info.type.HasField("tensor_type"):
        copy = onnx.ValueInfoProto()
        copy.CopyFrom(info)
        return copy
    return helper.make_tensor_value_info(name, TensorProto.UNDEFINED, None)


def _body_model(body: onnx.GraphProto, outer: Sequence[str], graph: OnnxGraph) -> onnx.ModelProto:
    """The body as a model of its own: its inputs, then the outer values it reads."""
    copy = onnx.GraphProto()
    copy.CopyFrom(body)
    copy.input.extend(_value_info(graph, name) for name in outer)
    if not copy.name:
        copy.name = "loop_body"
    opsets = [helper.make_opsetid(domain, version) for domain, version in MODEL_OPSETS.get()]
    model = helper.make_model(copy, opset_imports=opsets)
    model.ir_version = 8
    return model


def import_body(body: onnx.GraphProto, outer: Sequence[str], graph: OnnxGraph) -> nn.Module:
    """The body subgraph as a ``torch.fx.GraphModule`` (imported like a whole model)."""
    # The importer imports this package: imported here, when a Loop is converted.
    from pipeline.to_torch.importer import import_onnx

    return import_onnx(_body_model(body, outer, graph))


# A linear form ``k * step + m * M + c``: the value at iteration ``step`` of a loop whose trip
# count is ``M``.  Enough to decide Keras's loop conditions (``step < n``, ``time + 1 < n``).
_Linear = tuple[int, int, int]
_PASS_THROUGH = {"Identity", "Cast", "Squeeze", "Unsqueeze", "Reshape"}
_COMPARISONS = {"Less", "Greater", "LessOrEqual", "GreaterOrEqual"}


class _ConditionProof:
    """Decides whether a ``Loop``'s condition is true whenever it matters (see
    :func:`_cond_redundant`); every method returns None where it cannot tell."""

    def __init__(self, node: OnnxNode, graph: OnnxGraph, trip: Expr) -> None:
        self.graph = graph
        self.trip = trip
        self.body: onnx.GraphProto = node.attributes["body"].g
        self.producers = {out: n for n in self.body.node for out in n.output}
        self.constants = {t.name: numpy_helper.to_array(t) for t in self.body.initializer}
        for n in self.body.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.constants[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        inputs = [v.name for v in self.body.input]
        self.iteration = inputs[0]
        self.carried = {name: j for j, name in enumerate(inputs[2:])}
        self.initial = list(node.input_values[2:])
        self.updated = [v.name for v in self.body.output[1 : 1 + len(self.carried)]]

    # --------------------------------------------------------------- linear values

    def _expr(self, expr: Expr) -> _Linear | None:
        if isinstance(expr, int):
            return (0, 0, expr)
        if expr == self.trip:
            return (0, 1, 0)
        if isinstance(expr, BinOp) and expr.op in ("add", "sub"):
            lhs, rhs = self._expr(expr.lhs), self._expr(expr.rhs)
            if lhs is None or rhs is None:
                return None
            sign = 1 if expr.op == "add" else -1
            return (lhs[0] + sign * rhs[0], lhs[1] + sign * rhs[1], lhs[2] + sign * rhs[2])
        return None

    def outer(self, name: str) -> _Linear | None:
        """An enclosing graph's value, which is the same on every iteration."""
        value = known_int_value(self.graph, name)
        if value is None or len(value.elems) != 1:
            return None
        return self._expr(value.elems[0])

    def _constant(self, name: str) -> _Linear | None:
        array = self.constants[name]
        if array.size != 1:
            return None
        number = float(array.reshape(-1)[0])
        return (0, 0, int(number)) if number.is_integer() else None

    def value(self, name: str, depth: int = 0) -> _Linear | None:
        """The body value ``name`` at iteration ``step``."""
        if depth > 32:
            return None
        if name == self.iteration:
            return (1, 0, 0)
        if name in self.carried:
            return self._carried(self.carried[name], depth)
        if name in self.constants:
            return self._constant(name)
        node = self.producers.get(name)
        if node is None:
            return self.outer(name)
        if node.op_type in _PASS_THROUGH and node.input:
            return self.value(node.input[0], depth + 1)
        if node.op_type in ("Add", "Sub") and len(node.input) == 2:
            lhs, rhs = (self.value(v, depth + 1) for v in node.input)
            if lhs is None or rhs is None:
                return None
            sign = 1 if node.op_type == "Add" else -1
            return (lhs[0] + sign * rhs[0], lhs[1] + sign * rhs[1], lhs[2] + sign * rhs[2])
        return None

    def _carried(self, j: int, depth: int) -> _Linear | None:
        # A value passed through unchanged keeps its initial value; a counter (``t + c``)
        # starting at a value that does not depend on the step is ``initial + c * step``.
        initial = self.outer(self.initial[j])
        if initial is None or initial[0] != 0:
            return None
        name = list(self.carried)[j]
        updated = self.updated[j]
        if updated == name:
            return initial
        step = self._increment(updated, name, depth)
        return None if step is None else (step, initial[1], initial[2])

    def _increment(self, updated: str, carried: str, depth: int) -> int | None:
        node = self.producers.get(updated)
        while node is not None and node.op_type in ("Identity", "Cast"):
            node = self.producers.get(node.input[0])
        if node is None or node.op_type != "Add" or len(node.input) != 2:
            return None
        for this, other in (node.input, node.input[::-1]):
            source = this
            while (p := self.producers.get(source)) is not None and p.op_type in (
                "Identity",
                "Cast",
            ):
                source = p.input[0]
            if source == carried and other in self.constants:
                constant = self._constant(other)
                return None if constant is None else constant[2]
        return None

    # ------------------------------------------------------------------ truth

    def _below(self, difference: _Linear, first: int) -> bool | None:
        """Whether ``difference < 0`` for every step in ``[0, M - first]`` (for every
        ``M >= first``, or the known ``M``)."""
        dk, dm, dc = difference
        trip = self.trip

        def worst(m: int) -> int:  # the largest value over the steps, for trip count m
            return dk * (m - first) + dm * m + dc if dk > 0 else dm * m + dc

        if isinstance(trip, int):
            return trip < first or worst(trip) < 0
        slope = (dk + dm) if dk > 0 else dm
        return slope <= 0 and worst(first) < 0

    def true(self, name: str, values: Any, first: int, depth: int = 0) -> bool:
        """Whether the boolean ``name`` is true for every step in ``[0, M - first]``;
        ``values`` is :meth:`value` (in the body) or :meth:`outer` (before the loop)."""
        producer = self.producers if values == self.value else self._outer_producers()
        node = producer.get(name)
        if node is None or depth > 32:
            known = known_int_value(self.graph, name) if values != self.value else None
            return known is not None and known.ints() == [1]
        if node.op_type in ("Identity",):
            return self.true(node.input[0], values, first, depth + 1)
        if node.op_type == "And":
            return all(self.true(v, values, first, depth + 1) for v in node.input)
        if node.op_type in _COMPARISONS and len(node.input) == 2:
            a, b = (values(v) for v in node.input)
            if a is None or b is None:
                return False
            if node.op_type in ("Greater", "GreaterOrEqual"):
                a, b = b, a
            strict = node.op_type in ("Less", "Greater")
            difference = (a[0] - b[0], a[1] - b[1], a[2] - b[2] - (0 if strict else 1))
            return bool(self._below(difference, first))
        return False

    def _outer_producers(self) -> dict[str, onnx.NodeProto]:
        return {out: n.proto for n in self.graph.nodes.values() for out in n.output_values}


def _cond_redundant(node: OnnxNode, graph: OnnxGraph, trip: Expr | None) -> bool:
    """Whether the loop may ignore ``cond``: the trip count is known (``trip``), the
    initial ``cond`` is true whenever ``M >= 1`` and the body's ``cond`` output is true on
    every iteration but the last (whose ``cond`` ends nothing ``M`` does not end)."""
    if trip is None:
        return False
    proof = _ConditionProof(node, graph, trip)
    cond_out = proof.body.output[0].name
    return proof.true(node.input_values[1], proof.outer, 1) and proof.true(cond_out, proof.value, 2)


def _trip_expr(graph: OnnxGraph, name: str) -> Expr | None:
    value = known_int_value(graph, name)
    if value is None or len(value.elems) != 1:
        return None
    return value.elems[0]


@new_converter("Loop", versions=_VERSIONS, produces=(OnnxLoop,))
def convert_loop(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """ONNX ``Loop`` → :class:`OnnxLoop` around the imported body."""
    body: onnx.GraphProto = node.attributes["body"].g
    inputs = list(node.input_values)
    trip_name = inputs[0] if inputs else ""
    cond_name = inputs[1] if len(inputs) > 1 else ""
    carried = inputs[2:]
    scans = len(body.output) - 1 - len(carried)
    if len(body.input) != 2 + len(carried) or scans < 0:
        raise NotImplementedError(
            f"Loop ({node.name}): body has {len(body.input)} inputs and {len(body.output)} "
            f"outputs for {len(carried)} loop-carried values"
        )
    for value in [*body.input, *body.output]:
        if not value.type.HasField("tensor_type") and value.type.WhichOneof("value") is not None:
            raise NotImplementedError(
                f"Loop ({node.name}): {value.name} is not a tensor (sequence/optional values "
                "are not supported)"
            )
    trip = _trip_expr(graph, trip_name) if trip_name else None
    trip_input = bool(trip_name) and trip is None
    cond_input = bool(cond_name) and not _cond_redundant(node, graph, trip)
    outer = outer_names(body)
    module = OnnxLoop(
        import_body(body, outer, graph),
        carried=len(carried),
        scans=scans,
        outer=len(outer),
        trip=trip,
        trip_input=trip_input,
        cond_input=cond_input,
        outputs=len(node.output_values),
    )
    mapped = [
        *([trip_name] if trip_input else []),
        *([cond_name] if cond_input else []),
        *carried,
        *outer,
        *module.sources,
    ]
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=tuple(mapped), outputs=tuple(node.output_values)),
    )


# ------------------------------------------------------------------------------ code form


def _short(argument: str, fallback: str) -> str:
    """A parameter name for the body method from the outer argument's source."""
    name = argument.rsplit(".", 1)[-1]
    return name if name.isidentifier() and not name[0].isdigit() else fallback


def _unique(names: Iterable[str]) -> list[str]:
    seen: dict[str, int] = {}
    result = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        result.append(name if count == 0 else f"{name}_{count}")
    return result


@translates(OnnxLoop)
def _loop(ctx: NodeContext) -> Block:
    """A ``for`` loop (``while`` without a trip count) calling the body method."""
    module = ctx.module
    assert isinstance(module, OnnxLoop)
    if ctx.write_method is None or ctx.fresh is None or module.example is None:
        raise UntranslatableError("OnnxLoop (its body never ran on the example inputs)")
    args = list(ctx.args)
    position = 0
    trip_arg = args[position] if module.trip_input else None
    position += int(module.trip_input)
    cond_arg = args[position] if module.cond_input else None
    position += int(module.cond_input)
    initial = args[position : position + module.carried]
    position += module.carried
    outer = args[position : position + module.outer]
    params = _unique(
        [
            "step",
            "cond",
            *(_short(a, f"state_{j}") for j, a in enumerate(initial)),
            *(_short(a, f"outer_{j}") for j, a in enumerate(outer)),
        ]
    )
    method = ctx.write_method(module.body, module.example, "loop_body", params)

    fresh = ctx.fresh
    state = [fresh(p) for p in params[2 : 2 + module.carried]]
    scans = [fresh(f"scan_{j}") for j in range(module.scans)]
    step, cond = fresh("step"), fresh("cond")
    device = f"{ctx.device_of}.device"
    lines = []
    if state:
        lines.append(f"{', '.join(state)} = {', '.join(initial)}")
    lines.extend(f"{s}_steps = []" for s in scans)
    lines.append(
        f"{cond} = {cond_arg}"
        if cond_arg is not None
        else f"{cond} = torch.ones((), dtype=torch.bool, device={device})"
    )
    if module.trip is not None:
        trips = ctx.shape_args([module.trip], data_inputs=len(args) - len(module.sources))[0]
        lines.append(f"for {step} in range({trips}):")
    elif trip_arg is not None:
        lines.append(f"for {step} in range(int({trip_arg})):  # read from tensor data")
    else:
        lines.extend([f"{step} = -1", "while True:", f"    {step} += 1"])
    call = ", ".join([f"torch.tensor({step}, device={device})", cond, *state, *outer])
    lines.append(f"    {', '.join([cond, *state, *scans])} = self.{method}({call})")
    lines.extend(f"    {s}_steps.append({s})" for s in scans)
    if cond_arg is not None:
        lines.append(f"    if not bool({cond}):  # a condition from tensor data: does not export")
        lines.append("        break")
    values = [*state, *(f"torch.stack({s}_steps)" for s in scans)]
    value = values[0] if module.outputs == 1 else f"({', '.join(values)})"
    return Block(lines, value)
