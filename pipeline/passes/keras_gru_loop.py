"""Keras 3 GRU ``Loop`` → ONNX ``GRU``.

tf2onnx 1.17 fuses Keras's LSTM into an ONNX ``LSTM`` but leaves Keras 3's GRU as the
``while`` loop TensorFlow runs (an ONNX ``Loop``): its ``gru_tf2_rewriter`` matches the graph
of Keras 2's ``standard_gru`` (``Split(BiasAdd(MatMul(x, kernel), input_bias))`` with the
two biases unstacked *outside* the loop), whereas Keras 3's ``GRUCell`` splits the stacked
``(2, 3H)`` bias inside the loop body, adds it with ``Add`` and slices the recurrent matmul
with ``StridedSlice``.  No converter handles ``Loop``, so the import stage stops there.

This pass finds such loops and replaces each with ``GRU`` (+ ``Unsqueeze``/``Squeeze`` to keep
the loop's output shapes).  A loop qualifies when its body has Keras's shape:

- loop-carried values: a time counter ``t`` (the ``Gather`` index into a time-major sequence
  ``X`` from the outer graph), the state ``h`` and the cell's weights passed through
  unchanged (initializers: ``kernel (in, 3H)``, ``recurrent_kernel (H, 3H)`` and an optional
  bias ``(2, 3H)`` for ``reset_after=True`` or ``(3H,)`` for ``reset_after=False``);
- one scan output (the new ``h`` of every step), two ``Sigmoid`` and one ``Tanh``.

Keras's gate order ``(z, r, h)`` is ONNX's, so ``W = kernel.T``, ``R = recurrent_kernel.T``
and ``B = [input_bias, recurrent_bias]`` (``[bias, 0]`` without ``reset_after``).
``reset_after=True`` is ``linear_before_reset=1``, ``False`` is 0.  The structure only
*selects* candidates: each replacement is then checked numerically before it is kept, by
running the graph with the loop and the candidate ``GRU`` side by side in ONNX Runtime on
random inputs (both ``linear_before_reset`` values are tried).  A loop that does not match
or whose check fails is left as it is (the import stage then reports ``Loop``).

Keras's ``go_backwards`` (the backward half of ``Bidirectional``) reverses the sequence
outside the loop (``ReverseSequence``), so each direction becomes its own forward ``GRU``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from pipeline.core import onnx_io, provenance
from pipeline.core.onnx_graph import all_nodes, drop_initializers
from pipeline.core.ort_runner import OrtRunner
from pipeline.core.transforms import compose
from pipeline.passes.base import PassResult

_BODY_OPS = {
    "Add",
    "And",
    "Cast",
    "Gather",
    "Identity",
    "Less",
    "MatMul",
    "Mul",
    "Sigmoid",
    "Slice",
    "Split",
    "Squeeze",
    "Sub",
    "Tanh",
}
_CHECK_SEED = 0
_CHECK_BATCH = 3
_CHECK_SEQUENCE = 5  # for a sequence dim that is dynamic
_CHECK_ATOL = 1e-4


@dataclass
class _Candidate:
    loop: onnx.NodeProto
    x: str  # the time-major sequence the body gathers from
    h0: str
    h_index: int  # index of h among the loop-carried values
    t_index: int
    kernel: np.ndarray  # (in, 3H)
    recurrent_kernel: np.ndarray  # (H, 3H)
    bias: np.ndarray | None  # (2, 3H), (3H,) or None
    sources: dict[str, str]  # "kernel", "recurrent_kernel", "bias" -> initializer name


def _match(loop: onnx.NodeProto, initializers: Mapping[str, np.ndarray]) -> _Candidate | None:
    """The GRU roles of ``loop``'s values, or None if it does not look like a Keras GRU."""
    body = next((a.g for a in loop.attribute if a.name == "body"), None)
    if body is None or len(loop.input) < 3:
        return None
    n_carried = len(loop.input) - 2
    if len(body.input) != n_carried + 2 or len(body.output) != n_carried + 2:
        return None  # exactly one scan output
    if any(n.domain not in ("", "ai.onnx") or n.op_type not in _BODY_OPS for n in body.node):
        return None
    counts = Counter(n.op_type for n in body.node)
    if counts["Sigmoid"] != 2 or counts["Tanh"] != 1 or counts["Gather"] != 1:
        return None
    carried_in = [v.name for v in body.input[2:]]
    carried_out = [v.name for v in body.output[1 : 1 + n_carried]]
    produced = {o for n in body.node for o in n.output}

    gather = next(n for n in body.node if n.op_type == "Gather")
    x, index = gather.input[0], gather.input[1]
    if x in produced or x in carried_in or index not in carried_in:
        return None
    t_index = carried_in.index(index)

    matmul_reads = {i for n in body.node if n.op_type == "MatMul" for i in n.input}
    constants: dict[int, np.ndarray] = {}
    changing = []
    for k, (name_in, name_out) in enumerate(zip(carried_in, carried_out, strict=True)):
        if k == t_index:
            continue
        if name_in == name_out:
            value = initializers.get(loop.input[2 + k])
            if value is None and name_in in matmul_reads:
                return None  # a weight computed at run time: not a GRU of constants
            if value is not None:
                constants[k] = value
            # Else a run-time value passed through for the loop condition only (a sequence
            # length from ``x.shape``); the numeric check holds the trip count to it.
        else:
            changing.append(k)
    if len(changing) != 1:
        return None
    h_index = changing[0]

    kernel_k = None
    for node in body.node:
        if (
            node.op_type == "MatMul"
            and node.input[0] == gather.output[0]
            and node.input[1] in carried_in
            and carried_in.index(node.input[1]) in constants
        ):
            kernel_k = carried_in.index(node.input[1])
    if kernel_k is None:
        return None
    sources = {"kernel": loop.input[2 + kernel_k]}
    kernel = constants.pop(kernel_k)
    if kernel.ndim != 2 or kernel.shape[1] % 3:
        return None
    hidden = kernel.shape[1] // 3
    recurrent = [k for k, v in constants.items() if v.shape == (hidden, 3 * hidden)]
    if len(recurrent) > 1:
        # GRU(2): the (2, 3H) bias has the recurrent kernel's shape; the kernel is the one
        # the state is multiplied by.
        state = carried_in[h_index]
        recurrent = [
            k
            for k in recurrent
            if any(
                n.op_type == "MatMul" and n.input[0] == state and n.input[1] == carried_in[k]
                for n in body.node
            )
        ]
    if len(recurrent) != 1:
        return None
    sources["recurrent_kernel"] = loop.input[2 + recurrent[0]]
    recurrent_kernel = constants.pop(recurrent[0])
    bias = None
    if constants:
        if len(constants) != 1:
            return None
        bias_k, bias = next(iter(constants.items()))
        sources["bias"] = loop.input[2 + bias_k]
        if bias.shape not in ((2, 3 * hidden), (3 * hidden,)):
            return None
    if kernel.dtype != np.float32 or recurrent_kernel.dtype != np.float32:
        return None
    return _Candidate(
        loop=loop,
        x=x,
        h0=loop.input[2 + h_index],
        h_index=h_index,
        t_index=t_index,
        kernel=kernel,
        recurrent_kernel=recurrent_kernel,
        bias=bias,
        sources=sources,
    )


class _Names:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.taken = {o for n in all_nodes(model.graph) for o in (*n.output, n.name)}
        self.taken |= {i.name for i in model.graph.initializer}
        self.taken |= {i.name for i in model.graph.input}

    def new(self, base: str) -> str:
        name, i = base, 0
        while name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name


def _replacement(
    c: _Candidate,
    linear_before_reset: int,
    names: _Names,
    outputs: dict[str, str],
    opset: int,
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes and initializers computing the loop's final ``h`` and its scan output.

    ``outputs`` maps "h"/"scan" to the value names to write (a key is absent if unused).
    """
    base = c.loop.name or "keras_gru"
    hidden = c.recurrent_kernel.shape[0]
    w = c.kernel.T[np.newaxis]
    r = c.recurrent_kernel.T[np.newaxis]
    tensors = [
        numpy_helper.from_array(np.ascontiguousarray(w), names.new(f"{base}/W")),
        numpy_helper.from_array(np.ascontiguousarray(r), names.new(f"{base}/R")),
    ]
    gru_inputs = [c.x, tensors[0].name, tensors[1].name]
    if c.bias is not None:
        bias = c.bias if c.bias.ndim == 2 else np.stack([c.bias, np.zeros_like(c.bias)])
        tensors.append(numpy_helper.from_array(bias.reshape(1, -1), names.new(f"{base}/B")))
        gru_inputs.append(tensors[-1].name)
    else:
        gru_inputs.append("")
    axes0 = numpy_helper.from_array(np.array([0], np.int64), names.new(f"{base}/axes0"))
    axes1 = numpy_helper.from_array(np.array([1], np.int64), names.new(f"{base}/axes1"))
    tensors += [axes0, axes1]

    def axes_op(op: str, data: str, axes: onnx.TensorProto, out: str) -> onnx.NodeProto:
        if opset >= 13:
            return helper.make_node(op, [data, axes.name], [out], name=names.new(f"{base}/{op}"))
        axis = int(numpy_helper.to_array(axes)[0])
        return helper.make_node(op, [data], [out], name=names.new(f"{base}/{op}"), axes=[axis])

    initial_h = names.new(f"{base}/initial_h")
    y = names.new(f"{base}/Y") if "scan" in outputs else ""
    y_h = names.new(f"{base}/Y_h") if "h" in outputs else ""
    nodes = [
        axes_op("Unsqueeze", c.h0, axes0, initial_h),
        helper.make_node(
            "GRU",
            [*gru_inputs, "", initial_h],
            [y, y_h],
            name=names.new(f"{base}/GRU"),
            hidden_size=hidden,
            linear_before_reset=linear_before_reset,
        ),
    ]
    if y:
        nodes.append(axes_op("Squeeze", y, axes1, outputs["scan"]))
    if y_h:
        nodes.append(axes_op("Squeeze", y_h, axes0, outputs["h"]))
    return nodes, tensors


def _random_inputs(model: onnx.ModelProto) -> dict[str, np.ndarray] | None:
    rng = np.random.default_rng(_CHECK_SEED)
    initializer_names = {i.name for i in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializer_names:
            continue
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            return None
        dims = [d.dim_value if d.dim_value > 0 else 0 for d in tensor_type.shape.dim]
        shape = [d or (_CHECK_BATCH if i == 0 else _CHECK_SEQUENCE) for i, d in enumerate(dims)]
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            feeds[value.name] = rng.integers(0, 2, shape).astype(dtype)  # valid as any index
        elif dtype == np.bool_:
            feeds[value.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            return None
    return feeds


def _agrees(
    model: onnx.ModelProto,
    c: _Candidate,
    linear_before_reset: int,
    used: dict[str, str],
    opset: int,
    feeds: dict[str, np.ndarray],
) -> bool:
    """Whether the candidate GRU computes the loop's outputs (ONNX Runtime, random inputs)."""
    check = onnx.ModelProto()
    check.CopyFrom(model)
    names = _Names(check)
    probe = {key: names.new(f"{name}__gru_check") for key, name in used.items()}
    nodes, tensors = _replacement(c, linear_before_reset, names, probe, opset)
    position = list(check.graph.node).index(c.loop) + 1
    for offset, node in enumerate(nodes):
        check.graph.node.insert(position + offset, node)
    check.graph.initializer.extend(tensors)
    del check.graph.output[:]
    for key, name in used.items():
        check.graph.output.extend(
            [
                helper.make_empty_tensor_value_info(name),
                helper.make_empty_tensor_value_info(probe[key]),
            ]
        )
    try:
        results = OrtRunner(check, providers=("CPUExecutionProvider",)).run(feeds)
    except Exception:  # ORT cannot run the probe: no evidence, keep the loop
        return False
    for key, name in used.items():
        expected, got = results[name], results[probe[key]]
        if expected.shape != got.shape or not np.allclose(got, expected, atol=_CHECK_ATOL, rtol=0):
            return False
    return True


class KerasGruLoopPass:
    """Replace Keras 3 GRU ``while`` loops (ONNX ``Loop``) with ONNX ``GRU`` nodes."""

    name = "keras_gru_loop"
    description = (
        "Keras 3 GRU Loop -> ONNX GRU: tf2onnx's GRU rewriter only matches Keras 2's graph"
    )

    def apply(self, model: onnx.ModelProto) -> PassResult:
        """Return a rewritten copy of ``model`` and the number of loops replaced."""
        if not any(n.op_type == "Loop" for n in model.graph.node):
            return PassResult(model, 0)
        model = onnx_io.copy(model)
        graph = model.graph
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if opset < 7:
            return PassResult(model, 0)
        initializers = onnx_io.InitializerArrays(graph)
        record = provenance.read(model) or provenance.Provenance()
        feeds = _random_inputs(model)
        if feeds is None:
            return PassResult(model, 0)
        changes = 0
        for loop in [n for n in graph.node if n.op_type == "Loop" and n.domain in ("", "ai.onnx")]:
            c = _match(loop, initializers)
            if c is None:
                continue
            consumed = {i for n in all_nodes(graph) for i in n.input}
            consumed |= {o.name for o in graph.output}
            n_carried = len(loop.input) - 2
            used = {}
            if loop.output[c.h_index] in consumed:
                used["h"] = loop.output[c.h_index]
            if len(loop.output) > n_carried and loop.output[n_carried] in consumed:
                used["scan"] = loop.output[n_carried]
            if c.t_index < len(loop.output) and loop.output[c.t_index] in consumed:
                continue  # the final time counter is read: keep the loop
            if not used:
                continue
            preferred = 1 if c.bias is None or c.bias.ndim == 2 else 0
            chosen = next(
                (
                    lbr
                    for lbr in (preferred, 1 - preferred)
                    if _agrees(model, c, lbr, used, opset, feeds)
                ),
                None,
            )
            if chosen is None:
                continue
            nodes, tensors = _replacement(c, chosen, _Names(model), used, opset)
            # Loop-carried constants that something reads after the loop: the loop's input.
            for k in range(n_carried):
                out = loop.output[k] if k < len(loop.output) else ""
                if k not in (c.h_index, c.t_index) and out in consumed:
                    nodes.append(
                        helper.make_node("Identity", [loop.input[2 + k]], [out], name=f"{out}__id")
                    )
            position = list(graph.node).index(loop)
            graph.node.remove(loop)
            for offset, node in enumerate(nodes):
                graph.node.insert(position + offset, node)
            graph.initializer.extend(tensors)
            _record(record, c, tensors)
            changes += 1
        if changes:
            _drop_unused_initializers(model)
            record.prune(t.name for t in graph.initializer)
            provenance.write(model, record)
        return PassResult(model, changes)


def _record(record: provenance.Provenance, c: _Candidate, tensors: list[onnx.TensorProto]) -> None:
    """Say which variables ``W``, ``R`` and ``B`` (the first three ``tensors``) hold:
    ``W = kernel.T[None]``, ``R = recurrent_kernel.T[None]``, ``B`` the stacked bias (or the
    bias with zeros after it, for a ``(3H,)`` bias)."""
    record.derive(tensors[0].name, c.sources["kernel"], "transpose(1,0),reshape", c.kernel.shape)
    record.derive(
        tensors[1].name,
        c.sources["recurrent_kernel"],
        "transpose(1,0),reshape",
        c.recurrent_kernel.shape,
    )
    if c.bias is None or "bias" not in c.sources:
        return
    if c.bias.ndim == 2:
        record.derive(tensors[2].name, c.sources["bias"], "reshape", c.bias.shape)
        return
    part = record.whole(c.sources["bias"])
    if part is not None:
        region = ((0, 1), (0, c.bias.size))
        record.initializers[tensors[2].name] = [
            provenance.Part(part.variable, compose(part.transform, "reshape", c.bias.shape), region)
        ]


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    """Remove initializers nothing reads any more (the loop's weights), and their inputs."""
    graph = model.graph
    used = {i for n in all_nodes(graph) for i in n.input} | {o.name for o in graph.output}
    drop_initializers(graph, {t.name for t in graph.initializer if t.name not in used})
