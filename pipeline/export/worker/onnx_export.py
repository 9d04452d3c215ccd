"""Export with tf2onnx: the call for each kind of source, and the ONNX output names."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pipeline.core.signature import TensorSpec


@contextmanager
def _grouped_convolutions_without_xla() -> Iterator[None]:
    """While tracing for export, run Keras 3 grouped convolutions as plain TF ops.

    On CPU, Keras 3's TensorFlow backend runs grouped convolutions (ConvNeXt's depthwise
    ``Conv2D(groups=C)``) inside ``tf.function(jit_compile=True)``; tf2onnx cannot see into
    that and leaves an unconverted ``StatefulPartitionedCall``.  Export only traces, so the
    plain ``tf.nn.convolution`` it wraps is what we hand to tf2onnx.  The TF reference run
    still uses Keras's own code path.
    """
    try:
        import keras
        import tensorflow as tf
        from keras.src.backend.tensorflow import nn as tf_nn
    except ImportError:  # another Keras layout: nothing to patch
        yield
        return
    original = tf_nn.conv

    def conv(
        inputs: Any,
        kernel: Any,
        strides: Any = 1,
        padding: str = "valid",
        data_format: str | None = None,
        dilation_rate: Any = 1,
    ) -> Any:
        data_format = data_format or keras.config.image_data_format()
        return tf.nn.convolution(
            inputs,
            kernel,
            strides,
            padding.upper(),
            data_format=tf_nn._convert_data_format(data_format, len(inputs.shape)),
            dilations=dilation_rate,
        )

    tf_nn.conv = conv
    try:
        yield
    finally:
        tf_nn.conv = original


def distinct_names(names: Sequence[str]) -> list[str]:
    """``names`` with each repeat numbered (``lstm, lstm, lstm`` -> ``lstm, lstm_1, lstm_2``):
    Keras names every output of a layer after the layer (an LSTM's ``return_state``), and
    graph outputs must be distinct values."""
    taken = set(names)
    out: list[str] = []
    seen: set[str] = set()
    for name in names:
        unique, n = name, 0
        while unique in seen:  # a repeat: the next number no output carries
            n += 1
            unique = f"{name}_{n}"
            if unique in taken:
                unique = name
        seen.add(unique)
        out.append(unique)
    return out


def rename_outputs(proto: Any, names: Sequence[str]) -> None:
    """Give the ONNX graph outputs the TF signature's output names (repeats numbered), in
    place."""
    graph = proto.graph
    if len(names) != len(graph.output):
        return
    names = distinct_names(names)
    inputs = {i.name for i in graph.input}
    passed_through = {o.name for o, new in zip(graph.output, names, strict=True) if new in inputs}
    _output_inputs_directly(graph, passed_through)
    renames = {o.name: new for o, new in zip(graph.output, names, strict=True) if o.name != new}
    if not renames:
        return
    for node in graph.node:
        for i, name in enumerate(node.output):
            node.output[i] = renames.get(name, name)
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
    for value in graph.output:
        value.name = renames.get(value.name, value.name)


def _output_inputs_directly(graph: Any, outputs: set[str]) -> None:
    """A model that returns an input unchanged: tf2onnx writes an ``Identity`` of the graph
    input, which the TF name would then give the input's own name (two values, one name: an
    invalid graph).  Drop the Identity nodes that only feed these outputs, so the graph
    output is the graph input itself."""
    producers = {out: node for node in graph.node for out in node.output}
    read = {name for node in graph.node for name in node.input}
    for output in outputs:
        node = producers.get(output)
        while node is not None and node.op_type == "Identity" and node.output[0] not in read:
            graph.node.remove(node)
            read = {name for n in graph.node for name in n.input}
            source = node.input[0]
            for value in graph.output:
                if value.name == node.output[0]:
                    value.name = source
            node = producers.get(source)


def _tf_specs(specs: Sequence[TensorSpec]) -> list[Any]:
    import tensorflow as tf

    return [tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=s.name) for s in specs]


def export_keras(model: Any, specs: list[TensorSpec], opset: int) -> Any:
    """Export a Keras model with ``tf2onnx.convert.from_keras``; returns the ``ModelProto``."""
    import tf2onnx

    with _grouped_convolutions_without_xla():
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=_tf_specs(specs), opset=opset)
    return proto


def export_saved_model(
    loaded: Any, specs: list[TensorSpec], output_names: list[str], opset: int
) -> Any:
    """Export a loaded SavedModel's ``serving_default`` signature; returns the ``ModelProto``."""
    import tensorflow as tf
    import tf2onnx

    tf_specs = _tf_specs(specs)

    # Signatures take keyword arguments; tf2onnx wants positional ones.  The outputs
    # get the signature's names through Identity ops that `rename_outputs` resolves.
    @tf.function(input_signature=tf_specs)
    def positional(*args: Any) -> list[Any]:
        signature = loaded.signatures["serving_default"]
        result = signature(**{s.name: a for s, a in zip(specs, args, strict=True)})
        return [result[name] for name in output_names]

    proto, _ = tf2onnx.convert.from_function(positional, input_signature=tf_specs, opset=opset)
    return proto
