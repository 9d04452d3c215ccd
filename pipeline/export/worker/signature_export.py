"""Export a SavedModel's serving signature with every variable it reads as its own initializer.

A SavedModel that Keras cannot load (a ``tf.Module``, a Keras 3 ``model.export()`` artifact)
has no layers to call statelessly, and tf2onnx's ``from_function`` freezes the variables the
signature captures into constants, where TF's and tf2onnx's optimisers may fold them.  Here the
signature's concrete function is frozen the same way (``convert_variables_to_constants_v2``,
which inlines the nested functions of a restored SavedModel and turns each captured variable's
handle into a ``Const`` of the capture placeholder's name), and then each of those constants is
made a ``Placeholder`` again: which placeholder is which variable is read from the function's
own capture list (``fn.graph.captures``: the variable's handle → the placeholder), never from
values.  tf2onnx then sees every variable as a graph input, nothing can fold it, and each input
becomes an initializer named after the variable's path, recorded in the provenance record as
:mod:`.stateless_export` does for Keras models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.core import provenance
from pipeline.core.fingerprint import fingerprints_for
from pipeline.core.signature import TensorSpec
from pipeline.core.weight_store import WeightStore
from pipeline.export.worker.stateless_export import (
    VARIABLE_INPUT,
    _inputs_to_initializers,
    _without_transpose_optimizer,
    decode_fingerprints,
)

SIGNATURE_ROUTE = "signature+variables"


class RouteUnavailable(Exception):
    """The signature cannot be exported with its variables as inputs (the caller falls back to
    the frozen route and says so)."""


def _flat_keys(structure: Any) -> list[str]:
    """The keys of a signature's dict of inputs or outputs, in TF's flattening order (the order
    of the concrete function's ``inputs``/``outputs``)."""
    import tensorflow as tf

    return [str(k) for k in tf.nest.flatten({k: k for k in structure})]


def _placeholder(node: Any, variable: Any) -> None:
    """Make the frozen ``Const`` node ``node`` a ``Placeholder`` of ``variable``'s dtype and
    shape, in place (its name, which its readers use, stays)."""
    import tensorflow as tf

    node.op = "Placeholder"
    node.ClearField("input")
    node.ClearField("attr")
    node.attr["dtype"].type = tf.as_dtype(variable.dtype).as_datatype_enum
    node.attr["shape"].shape.CopyFrom(tf.TensorShape(variable.shape).as_proto())


_LOOPS = {"While", "StatelessWhile"}
_PASS_THROUGH = {"Identity", "IdentityN"}


def _read_by_loops(graph_def: Any, names: set[str]) -> set[str]:
    """The nodes of ``names`` whose value a while loop of ``graph_def`` takes as an input
    (directly or through ``Identity`` nodes, which is what a frozen ``ReadVariableOp`` is)."""
    consumers: dict[str, list[Any]] = {}
    for node in graph_def.node:
        for name in node.input:
            if not name.startswith("^"):
                consumers.setdefault(name.split(":")[0], []).append(node)
    found = set()
    for start in names:
        frontier, seen = [start], {start}
        while frontier and start not in found:
            for node in consumers.get(frontier.pop(), []):
                if node.op in _LOOPS:
                    found.add(start)
                    break
                if node.op in _PASS_THROUGH and node.name not in seen:
                    seen.add(node.name)
                    frontier.append(node.name)
    return found


def export_signature_variables(
    signature: Any,
    specs: Sequence[TensorSpec],
    output_names: Sequence[str],
    opset: int,
    variables: Sequence[tuple[str, Any]],
    *,
    feeds: dict[str, np.ndarray] | None = None,
    note: str | None = None,
    fingerprint: bool = True,
    store: WeightStore | None = None,
) -> Any:
    """Export the concrete function ``signature`` (a SavedModel's ``serving_default``) for the
    inputs ``specs`` with each of ``variables`` (path, ``tf.Variable``) a named initializer of
    its own, and the provenance recorded.  ``feeds`` (if given) receives the value of each
    variable placeholder of the traced graph by TF tensor name (what a run of it must be fed).
    ``note`` (why the model went this way) is appended to the recorded route.

    A variable that a while loop reads (a recurrent layer's weights) stays a constant, as in
    :mod:`.stateless_export`: tf2onnx fuses a recurrent loop into an ONNX ``LSTM``/``GRU`` only
    when its weights are constants.  It holds fingerprints during the export (real values with
    ``fingerprint`` False, what ``tf2torch diff`` wants), decoded afterwards to the record.

    Raises :class:`RouteUnavailable` where a captured variable does not arrive as a constant of
    its own in the frozen graph."""
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )
    from tf2onnx import tf_loader

    index_of = {id(v.handle): i for i, (_, v) in enumerate(variables)}
    placeholders: dict[str, int] = {}
    for external, internal in signature.graph.captures:
        i = index_of.get(id(external))
        if i is not None:
            placeholders[internal.op.name] = i
    missing = sorted(set(range(len(variables))) - set(placeholders.values()))
    if missing:
        raise RouteUnavailable(f"the signature does not capture {variables[missing[0]][0]} itself")

    frozen = convert_variables_to_constants_v2(
        signature, lower_control_flow=False, aggressive_inlining=True
    )
    graph_def = tf_loader.fix_freezing_errors_part2(frozen.graph.as_graph_def(add_shapes=True))
    nodes = {node.name: node for node in graph_def.node}
    real = [np.asarray(v.numpy()) for _, v in variables]
    looped = _read_by_loops(graph_def, set(placeholders))
    captured = sorted(i for name, i in placeholders.items() if name in looped)
    prints = fingerprints_for([real[i] for i in captured])
    fed: dict[str, int] = {}
    for name, i in placeholders.items():
        node = nodes.get(name)
        if node is None:  # the function never reads it: pruned with what it fed
            continue
        if node.op != "Const":
            raise RouteUnavailable(f"{variables[i][0]} froze into a {node.op}, not a constant")
        if name in looped:
            k = captured.index(i)
            value = prints.value(k) if fingerprint and prints.supported(k) else real[i]
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
            continue
        _placeholder(node, variables[i][1])
        fed[f"{name}:0"] = i

    input_keys = _flat_keys(signature.structured_input_signature[1])
    graph_inputs = dict(zip(input_keys, signature.inputs, strict=False))
    output_keys = _flat_keys(signature.structured_outputs)
    graph_outputs = dict(zip(output_keys, frozen.outputs, strict=True))
    unknown = [s.name for s in specs if s.name not in graph_inputs]
    if unknown:
        raise RouteUnavailable(f"the signature has no input {unknown[0]!r}")
    input_names = [graph_inputs[s.name].name for s in specs]
    renames = {graph_inputs[s.name].name: s.name for s in specs}
    renames |= {tensor: VARIABLE_INPUT.format(i) for tensor, i in fed.items()}
    for s in specs:  # --input-spec may give a shape the signature leaves open
        node = nodes.get(graph_inputs[s.name].op.name)
        if node is not None and node.op == "Placeholder":
            node.attr["shape"].shape.CopyFrom(tf.TensorShape(s.shape).as_proto())
    if feeds is not None:
        feeds.update({tensor: real[i] for tensor, i in fed.items()})

    with _without_transpose_optimizer():
        proto, _ = tf2onnx.convert.from_graph_def(
            graph_def,
            name=str(signature.name),
            input_names=input_names + list(fed),
            output_names=[graph_outputs[name].name for name in output_names],
            opset=opset,
            tensors_to_rename=renames,
        )
    record = provenance.Provenance(route=f"{SIGNATURE_ROUTE}: {note}" if note else SIGNATURE_ROUTE)
    paths = [path for path, _ in variables]
    _inputs_to_initializers(
        proto, {VARIABLE_INPUT.format(i): i for i in fed.values()}, paths, real, record, store
    )
    if fingerprint and captured:
        decode_fingerprints(
            proto, prints, [paths[i] for i in captured], [real[i] for i in captured], record
        )
    provenance.write(proto, record)
    return proto
