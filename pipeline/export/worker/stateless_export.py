"""Export a Keras model with every variable as its own ONNX initializer, by construction.

tf2onnx's ``from_keras`` freezes the model: grappler and tf2onnx's constant folding then
merge variables into other constants (BatchNorm into the convolution, two chained scale
weights into one), and what is left can only be found again by value.  Here the model is
exported through Keras 3's ``model.stateless_call(trainable, non_trainable, inputs)`` inside a
``tf.function`` that takes every variable as an *input*: a graph input is not a constant, so
nothing can fold it, and each variable arrives in ONNX as the graph input we named.  Those
inputs then become initializers named after the variable's path, and the provenance record
(:mod:`pipeline.core.provenance`) says so.

One exception: tf2onnx fuses Keras's LSTM into an ONNX ``LSTM`` only when its weights are
constants (it reorders gates and stacks directions in numpy).  Variables of recurrent layers
are therefore captured as constants holding *fingerprints* (:mod:`pipeline.core.fingerprint`):
after export, each initializer is decoded element by element to the variables it holds and
their layout, and the fingerprints are replaced by the real values.  A captured variable whose
fingerprints vanished (an optimiser computed with it) is recorded as lost, never guessed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from pipeline.core import provenance
from pipeline.core.fingerprint import Fingerprints, fingerprints_for
from pipeline.core.signature import TensorSpec
from pipeline.core.weight_store import WeightStore
from pipeline.export.worker.onnx_export import _grouped_convolutions_without_xla, rename_outputs

STATELESS_ROUTE = "stateless"
VARIABLE_INPUT = "tf2torch_variable_{}"
"""The ONNX graph input name of variable ``i`` (of ``model.weights``) during export."""


@dataclass
class StatelessExport:
    """The exported graph (variables already initializers, provenance recorded) and, for the
    diff worker, the name each variable had as a graph input of the traced function."""

    proto: onnx.ModelProto
    variable_inputs: dict[str, int]
    """Graph input name (as tf2onnx saw it) → index of the variable in ``model.weights``."""


def _recurrent_variable_ids(model: Any) -> set[int]:
    """Variables tf2onnx's LSTM rewriter must see as constants: those of recurrent layers."""
    import keras

    found: set[int] = set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.RNN):
            found.update(id(v) for v in layer.weights)
    return found


@contextmanager
def _without_transpose_optimizer() -> Iterator[None]:
    """Run tf2onnx without its transpose optimiser.  With the variables as graph inputs it
    can only push NHWC↔NCHW transposes halfway (not past an op reading a variable), which
    leaves layer norms and scale layers half in one layout and half in the other; our
    ``transposes`` pass moves them once the variables are initializers."""
    from tf2onnx import optimizer

    saved = optimizer._optimizers
    optimizer._optimizers = OrderedDict(
        (name, factory) for name, factory in saved.items() if name != "optimize_transpose"
    )
    try:
        yield
    finally:
        optimizer._optimizers = saved


def variable_inputs(model: Any) -> dict[str, int]:
    """Graph input name → index in ``model.weights`` of every variable the export feeds as an
    input (all but the recurrent layers' captured ones)."""
    recurrent = _recurrent_variable_ids(model)
    return {
        VARIABLE_INPUT.format(i): i for i, v in enumerate(model.weights) if id(v) not in recurrent
    }


def pack_inputs(model: Any, flat: Sequence[Any]) -> Any:
    """The model's inputs in the structure it was built with (a tensor, a list, a dict)."""
    import keras

    struct = getattr(model, "_inputs_struct", None)
    if struct is not None and len(keras.tree.flatten(struct)) == len(flat):
        return keras.tree.pack_sequence_as(struct, list(flat))
    return flat[0] if len(flat) == 1 else list(flat)


def flat_outputs(result: Any) -> list[Any]:
    """A model's outputs as a list (a dict's values in order, a single tensor alone)."""
    if isinstance(result, dict):
        return list(result.values())
    if isinstance(result, list | tuple):
        return list(result)
    return [result]


def export_stateless(
    model: Any,
    specs: list[TensorSpec],
    opset: int,
    paths: Sequence[str],
    *,
    fingerprint: bool = True,
    feeds: dict[str, Any] | None = None,
    store: WeightStore | None = None,
) -> StatelessExport:
    """Export ``model`` (a built ``keras.Model``) for inputs ``specs``; ``paths`` name the
    variables of ``model.weights`` in order.

    With ``fingerprint`` False, captured (recurrent) variables hold their real values during
    the trace and get no provenance (what ``tf2torch diff`` wants: TF's own graph).  ``feeds``
    (if given) receives, before tf2onnx runs, the value of every placeholder of the traced
    graph that is not a model input (TF tensor name → value, or the ``tf.Variable`` holding
    it, read when the feeds are used): a run of that graph needs them.  With a ``store``,
    each variable's initializer goes to it as it is made: the graph never holds the
    weights beside the model."""
    import tensorflow as tf
    import tf2onnx

    weights = list(model.weights)
    if len(weights) != len(paths):
        raise ValueError(f"{len(paths)} variable paths for {len(weights)} model weights")
    index_of = {id(v): i for i, v in enumerate(weights)}
    inputs_of = variable_inputs(model)
    fed = sorted(inputs_of.values())
    captured = [i for i in range(len(weights)) if i not in set(fed)]
    # A value is read from its variable when needed and not kept: at LLM scale a list of
    # every value would be one more copy of the model beside the variables and the graph.
    real = {i: np.asarray(weights[i].numpy()) for i in captured}
    prints = fingerprints_for([real[i] for i in captured])

    input_specs = [tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=s.name) for s in specs]
    variable_specs = [
        tf.TensorSpec(weights[i].shape, weights[i].dtype, name=VARIABLE_INPUT.format(i))
        for i in fed
    ]
    # numpy here, made tf.constant inside the trace: a tensor captured from outside would
    # be a placeholder to tf2onnx, which its LSTM rewriter refuses.
    constants = {
        i: prints.value(k) if fingerprint and prints.supported(k) else real[i]
        for k, i in enumerate(captured)
    }

    def function(*args: Any) -> list[Any]:
        given = dict(zip(fed, args[len(specs) :], strict=True))

        def value_of(variable: Any) -> Any:
            i = index_of.get(id(variable))
            if i is None:
                return variable.value  # state that is not a weight (a seed): traced as is
            return given[i] if i in given else tf.constant(constants[i])

        # stateless_call hands its keyword arguments to `call` as they are (Layer.__call__
        # would drop `training` for a call that does not take it): pass it only when taken.
        takes_training = getattr(model, "_call_has_training_arg", True)
        outputs, _ = model.stateless_call(
            [value_of(v) for v in model.trainable_variables],
            [value_of(v) for v in model.non_trainable_variables],
            pack_inputs(model, args[: len(specs)]),
            **({"training": False} if takes_training else {}),
        )
        if isinstance(outputs, dict):  # keras-hub style: the outputs keep their keys
            output_keys[:] = [str(k) for k in outputs]
        return flat_outputs(outputs)

    output_keys: list[str] = []

    signature = input_specs + variable_specs
    with _grouped_convolutions_without_xla(), _without_transpose_optimizer():
        # Keras's layers need no autograph, and converting the whole stateless_call chain
        # costs more than a small model's export; a layer with Python control flow on
        # tensors does need it.
        try:
            traced = tf.function(function, input_signature=signature, autograph=False)
            captures = _captured_constants(traced, signature)
        except (TypeError, ValueError, tf.errors.OperatorNotAllowedInGraphError):
            traced = tf.function(function, input_signature=signature)
            captures = _captured_constants(traced, signature)
        if feeds is not None:
            feeds.update({f"{VARIABLE_INPUT.format(i)}:0": weights[i] for i in fed})
            feeds.update(captures)
        proto, _ = tf2onnx.convert.from_function(traced, input_signature=signature, opset=opset)
    names = output_keys or list(getattr(model, "output_names", None) or [])
    if names:
        rename_outputs(proto, names)
    _captures_to_initializers(proto, captures)

    record = provenance.Provenance(route=STATELESS_ROUTE)
    _inputs_to_initializers(proto, inputs_of, paths, weights, record, store)
    if fingerprint and captured:
        decode_fingerprints(
            proto, prints, [paths[i] for i in captured], [real[i] for i in captured], record
        )
    provenance.write(proto, record)
    return StatelessExport(proto, inputs_of)


def _captured_constants(traced: Any, signature: list[Any]) -> dict[str, np.ndarray]:
    """TF tensor name → value of every tensor the traced function captured from outside
    (constants a layer holds as eager tensors, e.g. ``Normalization(mean=...)``)."""
    function = traced.get_concrete_function(*signature)
    extra = function.inputs[len(signature) :]
    return {
        tensor.name: np.asarray(value.numpy())
        for tensor, value in zip(extra, function.captured_inputs, strict=False)
        if tensor.dtype.name != "resource" and hasattr(value, "numpy")
    }


def _captures_to_initializers(proto: onnx.ModelProto, values: dict[str, np.ndarray]) -> None:
    """Captured constants arrive as extra graph inputs (tf2onnx makes every input of the
    concrete function one): make each the constant it is."""
    kept = []
    for graph_input in proto.graph.input:
        value = values.get(graph_input.name)
        if value is None:
            kept.append(graph_input)
        else:
            proto.graph.initializer.append(numpy_helper.from_array(value, graph_input.name))
    del proto.graph.input[:]
    proto.graph.input.extend(kept)


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 0
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    taken.add(candidate)
    return candidate


def _inputs_to_initializers(
    proto: onnx.ModelProto,
    variable_inputs: dict[str, int],
    paths: Sequence[str],
    variables: Sequence[Any],
    record: provenance.Provenance,
    store: WeightStore | None = None,
) -> None:
    """Each variable's graph input becomes an initializer named after its path, holding the
    variable's value (a variable the traced graph never read has no input: it is simply not
    recorded); with a ``store``, its data goes there at once."""
    graph = proto.graph
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    taken |= {i.name for i in graph.input if i.name not in variable_inputs}
    renames: dict[str, str] = {}
    kept = []
    for graph_input in graph.input:
        index = variable_inputs.get(graph_input.name)
        if index is None:
            kept.append(graph_input)
            continue
        name = _unique(paths[index], taken)
        renames[graph_input.name] = name
        tensor = numpy_helper.from_array(np.asarray(variables[index]), name)
        if store is not None:  # before it joins the graph (WeightStore.offload_tensors)
            store.offload([tensor])  # a small one stays, where shape inference reads it
        graph.initializer.append(tensor)
        del tensor
        record.initializers[name] = [provenance.Part(paths[index])]
    del graph.input[:]
    graph.input.extend(kept)
    _rename_uses(graph, renames)


def _rename_uses(graph: onnx.GraphProto, renames: dict[str, str]) -> None:
    """Rename tensor uses in ``graph`` and in the subgraphs that read it from outside."""
    if not renames:
        return
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename_uses(attr.g, renames)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    _rename_uses(sub, renames)
    for output in graph.output:
        if output.name in renames:
            output.name = renames[output.name]


def _tensors(graph: onnx.GraphProto, top: bool) -> list[tuple[onnx.TensorProto, bool]]:
    """Every tensor constant of ``graph`` and its subgraphs (initializers and ``Constant``
    values), each with whether it is a top-level initializer."""
    found = [(t, top) for t in graph.initializer]
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.type == onnx.AttributeProto.TENSOR:
                found.append((attr.t, False))
            elif attr.type == onnx.AttributeProto.GRAPH:
                found += _tensors(attr.g, False)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    found += _tensors(sub, False)
    return found


def decode_fingerprints(
    proto: onnx.ModelProto,
    prints: Fingerprints,
    paths: Sequence[str],
    values: Sequence[np.ndarray],
    record: provenance.Provenance,
) -> None:
    """Find the captured variables' fingerprints in the graph's constants, record the parts
    of top-level initializers, and put the real values back everywhere."""
    flat_values = [np.asarray(v).reshape(-1) for v in values]
    found: set[str] = set()
    for tensor, top in _tensors(proto.graph, True):
        array = numpy_helper.to_array(tensor)
        if array.dtype.kind != "f":
            continue
        owner, flat = prints.decode(array)
        if not np.any(owner >= 0):
            continue
        if top:
            parts, problems = provenance.decode_parts(array, prints, paths)
            for path, why in problems.items():
                record.lost.setdefault(path, f"found in {tensor.name} {why}")
            if parts:
                record.initializers[tensor.name] = parts
                found.update(p.variable for p in parts)
        else:
            for k in np.unique(owner[owner >= 0]):
                record.lost.setdefault(
                    paths[int(k)], f"held by a constant inside {tensor.name or 'a node'}"
                )
        restored = array.copy()
        for k in np.unique(owner[owner >= 0]):
            mask = owner == k
            restored[mask] = flat_values[int(k)][flat[mask]]
        tensor.CopyFrom(numpy_helper.from_array(restored, tensor.name))
    for path in found:  # also somewhere odd: the gradient check will tell
        record.lost.pop(path, None)
    for k, path in enumerate(paths):
        if path not in found and path not in record.lost:
            reason = (
                "its dtype cannot be fingerprinted"
                if not prints.supported(k)
                else "tf2onnx computed with it while exporting (folded into another constant)"
            )
            record.lost[path] = reason
