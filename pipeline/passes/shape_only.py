"""Values computed only for their shape: read the shape of an equal-shaped live value.

Keras's RNN layer runs the cell once *before* its ``while`` loop when the input is masked
(``keras.src.backend.tensorflow.rnn``: the first step's output only serves
``zeros_like(output)``, the initial value of the loop's last-output carry).  In ONNX that is
``ConstantOfShape(Shape(step))`` where ``step`` is a whole GRU/LSTM step: matmuls of the
kernels and the bias.  tf2onnx folds the bias rows that step reads into constants of their
own, so the Keras bias is then held by three initializers in different layouts, and the
parameter check fails ("they would train apart").  The numbers are right; the graph does
work nobody reads.

This pass finds ``Shape(v)`` where ``v`` is read by nothing but ``Shape`` nodes, and whose
producer is elementwise (broadcasting ``Add``/``Mul``/…, unary ``Sigmoid``/``Tanh``/…).
The output of such a chain has the broadcast shape of its operands, so one of those operands
often has ``v``'s shape: the candidates are the operands met walking back through the chain
that the graph computes anyway (the RNN's zero initial state, which the ``Mul`` by the update
gate broadcasts against).  Which candidate has ``v``'s shape is not provable from ONNX's
shape inference (the batch dims carry different symbols), so, as
:mod:`pipeline.passes.keras_gru_loop` does, the structure only *selects* candidates and ONNX
Runtime decides: the graph is run on random inputs at two different sets of sizes for the
dynamic dims (a distinct size per dim symbol, none of them 1, so a broadcast dim cannot pass
for a real one), and a candidate is kept only if its shape equals ``v``'s on both.  The ``Shape`` nodes then read
the candidate, and every node left without a reader is removed, with the initializers only it
read (and their provenance records).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper

from pipeline.core import onnx_io, provenance
from pipeline.core.onnx_graph import all_nodes, drop_initializers
from pipeline.core.ort_runner import OrtRunner
from pipeline.passes.base import PassResult

# Ops whose output has the broadcast shape of their (data) inputs.
_ELEMENTWISE = {
    "Abs",
    "Add",
    "And",
    "Cast",
    "Div",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Greater",
    "HardSigmoid",
    "Identity",
    "LeakyRelu",
    "Less",
    "Log",
    "Max",
    "Min",
    "Mul",
    "Neg",
    "Not",
    "Or",
    "Pow",
    "Reciprocal",
    "Relu",
    "Sigmoid",
    "Softplus",
    "Sqrt",
    "Sub",
    "Tanh",
    "Where",
}
_MAX_CANDIDATES = 8  # per Shape: the nearest operands (an RNN step needs two or three)
_SIZES = ((2, 3, 4, 5, 6, 7), (3, 5, 7, 9, 11, 13))  # the two sets of dynamic-dim sizes


def _used_names(graph: onnx.GraphProto) -> dict[str, list[int]]:
    """Every value name read anywhere (subgraphs included, read by name from outside) →
    the positions of the main-graph nodes holding the reads (the node itself, or the
    Loop/If/Scan around it)."""
    readers: dict[str, list[int]] = defaultdict(list)
    for index, node in enumerate(graph.node):
        for inner in [node, *_nested(node)]:
            for name in inner.input:
                if name:
                    readers[name].append(index)
        for sub in _subgraphs(node):
            for value in sub.output:
                readers[value.name].append(index)
    return readers


def _subgraphs(node: onnx.NodeProto) -> Iterable[onnx.GraphProto]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _nested(node: onnx.NodeProto) -> Iterable[onnx.NodeProto]:
    for sub in _subgraphs(node):
        yield from all_nodes(sub)


def _dead_after(
    graph: onnx.GraphProto, readers: dict[str, list[int]], released: set[int]
) -> set[int]:
    """Positions of the main-graph nodes nothing would read once the ``released`` nodes
    stop reading what they read now."""
    outputs = {v.name for v in graph.output}
    dead = set(released)
    changed = True
    while changed:
        changed = False
        for index, node in enumerate(graph.node):
            if index in dead or any(o in outputs for o in node.output):
                continue
            if all(all(r in dead for r in readers.get(o, [])) for o in node.output if o):
                dead.add(index)
                changed = True
    return dead - released


def _candidates(
    value: str, producers: dict[str, int], nodes: list[onnx.NodeProto], dead: set[int]
) -> list[str]:
    """Operands of the elementwise chain producing ``value`` that stay computed (not
    produced by a node in ``dead``), nearest first."""
    found: list[str] = []
    frontier = [value]
    seen = {value}
    while frontier and len(found) < _MAX_CANDIDATES:
        position = producers.get(frontier.pop(0))
        if position is None:
            continue
        node = nodes[position]
        if node.op_type not in _ELEMENTWISE or node.domain not in ("", "ai.onnx"):
            continue
        for operand in node.input:
            if not operand or operand in seen:
                continue
            seen.add(operand)
            if producers.get(operand) not in dead:
                found.append(operand)
            else:
                frontier.append(operand)
    return found[:_MAX_CANDIDATES]


def _feeds(model: onnx.ModelProto, sizes: tuple[int, ...]) -> dict[str, np.ndarray] | None:
    """Random inputs; each distinct dynamic dim (by symbol) gets the next size of ``sizes``."""
    rng = np.random.default_rng(0)
    initializers = {t.name for t in model.graph.initializer}
    symbols: dict[str, int] = {}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        if not value.type.HasField("tensor_type"):
            return None
        shape = []
        for j, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                shape.append(dim.dim_value)
                continue
            key = dim.dim_param or f"{value.name}:{j}"
            if key not in symbols:
                symbols[key] = sizes[len(symbols) % len(sizes)]
            shape.append(symbols[key])
        dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        elif np.issubdtype(dtype, np.integer) or dtype == np.bool_:
            feeds[value.name] = rng.integers(0, 2, shape).astype(dtype)  # valid as any index
        else:
            return None
    return feeds


def _equal_shapes(model: onnx.ModelProto, probes: dict[str, list[str]]) -> dict[str, str]:
    """For each value of ``probes``, its first candidate whose shape ONNX Runtime finds
    equal to the value's on both sets of sizes (values with none are left out)."""
    check = onnx.ModelProto()
    check.CopyFrom(model)
    del check.graph.output[:]
    shape_of: dict[str, str] = {}
    for name in {n for value, cands in probes.items() for n in [value, *cands]}:
        shape_of[name] = f"{name}__shape_probe"
        check.graph.node.append(helper.make_node("Shape", [name], [shape_of[name]]))
        check.graph.output.append(helper.make_empty_tensor_value_info(shape_of[name]))
    results = []
    for sizes in _SIZES:
        feeds = _feeds(model, sizes)
        if feeds is None:
            return {}
        try:
            results.append(OrtRunner(check, providers=("CPUExecutionProvider",)).run(feeds))
        except Exception:  # ORT cannot run the probe: no evidence, change nothing
            return {}
    chosen = {}
    for value, cands in probes.items():
        for cand in cands:
            if all(np.array_equal(r[shape_of[value]], r[shape_of[cand]]) for r in results):
                chosen[value] = cand
                break
    return chosen


def _drop_unread(model: onnx.ModelProto, doomed: set[str]) -> None:
    """Remove the main-graph nodes named by their first output in ``doomed`` once nothing
    reads them, then the initializers they alone read.  Nodes and initializers that were
    unread before this pass are not its business (the import drops dead code itself)."""
    graph = model.graph
    outputs = {v.name for v in graph.output}
    read_before = set(_used_names(graph)) | outputs
    while True:
        readers = _used_names(graph)
        dead = [
            n
            for n in graph.node
            if n.output
            and n.output[0] in doomed
            and not any(o in outputs or readers.get(o) for o in n.output if o)
        ]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    readers = _used_names(graph)
    unread = {
        t.name
        for t in graph.initializer
        if t.name in read_before and t.name not in readers and t.name not in outputs
    }
    drop_initializers(graph, unread)


class ShapeOnlyPass:
    """``Shape(v)`` of a value computed only for its shape → ``Shape`` of an equal-shaped
    value the graph computes anyway; the computation that made ``v`` is removed."""

    name = "shape_only"
    description = (
        "Shape of a value computed only for its shape (Keras's peeled first RNN step) -> "
        "Shape of an equal-shaped live value, checked in ONNX Runtime; the dead step removed"
    )

    def apply(self, model: onnx.ModelProto) -> PassResult:
        """Return a rewritten copy of ``model`` and the number of ``Shape`` inputs moved."""
        graph = model.graph
        shapes = [
            i
            for i, n in enumerate(graph.node)
            if n.op_type == "Shape" and n.domain in ("", "ai.onnx")
        ]
        if not shapes:
            return PassResult(model, 0)
        nodes = list(graph.node)
        readers = _used_names(graph)
        producers = {o: i for i, n in enumerate(nodes) for o in n.output}
        outputs = {v.name for v in graph.output}
        by_value: dict[str, set[int]] = defaultdict(set)
        for index in shapes:
            by_value[nodes[index].input[0]].add(index)
        probes: dict[str, list[str]] = {}
        dies_with: dict[str, set[int]] = {}
        for value, shape_nodes in by_value.items():
            producer = producers.get(value)
            if producer is None or nodes[producer].op_type not in _ELEMENTWISE:
                continue
            if value in outputs or set(readers.get(value, [])) != shape_nodes:
                continue  # read by something else than Shape: it stays computed anyway
            dead = _dead_after(graph, readers, shape_nodes)
            if producer not in dead:
                continue
            cands = _candidates(value, producers, nodes, dead)
            if cands:
                probes[value] = cands
                dies_with[value] = dead
        if not probes:
            return PassResult(model, 0)
        chosen = _equal_shapes(model, probes)
        if not chosen:
            return PassResult(model, 0)
        model = onnx_io.copy(model)
        changes = 0
        for node in model.graph.node:
            if node.op_type == "Shape" and node.input[0] in chosen:
                node.input[0] = chosen[node.input[0]]
                changes += 1
        doomed = {nodes[i].output[0] for v in chosen for i in dies_with[v] if nodes[i].output}
        _drop_unread(model, doomed)
        record = provenance.read(model)
        if record is not None:
            record.prune(t.name for t in model.graph.initializer)
            provenance.write(model, record)
        return PassResult(model, changes)
