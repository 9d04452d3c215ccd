"""ONNX Runtime's own float32 noise floor: its float32 run against its float64 run of the graph.

ONNX Runtime's float32 kernels do not round as torch's do (MLAS's ``Tanh`` is an
approximation, its GEMMs block sums differently), and on a chaotic model its outputs sit
several times further from the exact result than torch's.  Taking its floor to be torch's
then fails correct conversions on the ort-* pairs.  So the ONNX graph is widened to float64
(initializers, constants, value types and casts) and run by ONNX Runtime on the same inputs;
``max |ort_float32 - ort_float64|`` is its own floor.  Both runs use the same graph, so a
fault in it moves them alike and cannot widen the floor.

ONNX Runtime has no float64 kernel for many ops (``Conv``, ``AveragePool``, ``Erf``, …).  A
weightless copy of the widened graph is opened first, so a model that cannot run in float64
costs one cheap failed session, not a float64 copy of its weights; its floor stays torch's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from pipeline.core import onnx_io
from pipeline.core.ort_runner import CPU, OrtRunner
from pipeline.core.weight_store import WeightStore
from pipeline.verify.noise import NoiseFloors, own_floors

log = logging.getLogger(__name__)

_NARROW = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)
_DTYPE_ATTRIBUTES = ("to", "dtype")
"""Attributes that name an element type (``Cast.to``; ``EyeLike``/``Random*.dtype``)."""


@dataclass
class OrtFloors:
    """ONNX Runtime's own floor per output where it is above torch's, or why unmeasured."""

    floors: dict[str, float] = field(default_factory=dict)
    unmeasured: str | None = None


def _widen_tensor(tensor: TensorProto, store: WeightStore | None = None) -> None:
    if tensor.data_type in _NARROW:
        wide = numpy_helper.from_array(onnx_io.array(tensor).astype(np.float64))
        wide.name = tensor.name
        if store is not None:  # before it joins the graph (WeightStore.offload_tensors)
            store.offload_tensors([wide])
        tensor.CopyFrom(wide)


def _widen_value(value: onnx.ValueInfoProto) -> None:
    tensor_type = value.type.tensor_type
    if value.type.HasField("tensor_type") and tensor_type.elem_type in _NARROW:
        tensor_type.elem_type = TensorProto.DOUBLE


def _widen_graph(graph: onnx.GraphProto) -> None:
    """Widen ``graph`` and its subgraphs in place."""
    for tensor in graph.initializer:
        _widen_tensor(tensor)
    for value in (*graph.input, *graph.output, *graph.value_info):
        _widen_value(value)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.name in _DTYPE_ATTRIBUTES and attribute.i in _NARROW:
                attribute.i = TensorProto.DOUBLE
            elif attribute.type == AttributeProto.TENSOR:
                _widen_tensor(attribute.t)
            elif attribute.type == AttributeProto.GRAPH:
                _widen_graph(attribute.g)
            elif attribute.type == AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    _widen_graph(sub)


def float64_onnx(model: onnx.ModelProto, weights: bool = True) -> onnx.ModelProto:
    """A float64 copy of ``model``: every float32/float16/bfloat16 initializer, constant,
    value type and cast target made float64.  Without ``weights`` the copy's initializers
    are graph inputs instead (built without touching their data: cheap, and enough to ask a
    runtime whether it has every kernel).  A model whose weights are in a
    :class:`~pipeline.core.weight_store.WeightStore` gets its float64 weights stored there,
    each as soon as it is widened."""
    if weights:
        wide = onnx_io.copy(model)
        store = WeightStore.holding(wide)
        if store is not None:
            for tensor in wide.graph.initializer:
                _widen_tensor(tensor, store)
    else:
        wide = onnx.ModelProto(
            ir_version=model.ir_version,
            opset_import=model.opset_import,
            functions=model.functions,
        )
        graph = model.graph
        wide.graph.CopyFrom(
            onnx.GraphProto(
                name=graph.name,
                node=graph.node,
                input=graph.input,
                output=graph.output,
                value_info=graph.value_info,
            )
        )
        for tensor in graph.initializer:
            elem = TensorProto.DOUBLE if tensor.data_type in _NARROW else tensor.data_type
            wide.graph.input.append(helper.make_tensor_value_info(tensor.name, elem, tensor.dims))
    _widen_graph(wide.graph)
    return wide


def ort_own_floors(
    model: onnx.ModelProto,
    inputs: Mapping[str, np.ndarray],
    output_names: Sequence[str],
    float32_outputs: Mapping[str, np.ndarray],
    torch_floors: NoiseFloors,
) -> OrtFloors:
    """ONNX Runtime's own float32 floor of each output of ``model`` (``float32_outputs``, its
    float32 run on ``inputs``) where it is above the graph's floor and its float64 run is
    trusted (:func:`pipeline.verify.noise.own_floor`).  Never raises: a graph that cannot
    run in float64 gives no floors and says why."""
    if not torch_floors.floors:
        return OrtFloors(unmeasured="no torch floor to compare with")
    try:
        # The graph's own lightweight copy (no weights) finds missing float64 kernels cheaply.
        OrtRunner(float64_onnx(model, weights=False), providers=(CPU,))
        runner = OrtRunner(float64_onnx(model), providers=(CPU,))
        wide_inputs = {
            k: v.astype(np.float64) if np.asarray(v).dtype.kind == "f" else v
            for k, v in inputs.items()
        }
        high = runner.run(wide_inputs)
    except Exception as err:  # no float64 kernel, or no float64 run: torch's floor applies
        text = " ".join(str(err).split())[:200]
        log.info("ONNX Runtime's float64 run failed: %s", text)
        return OrtFloors(unmeasured=f"float64 run failed: {type(err).__name__}: {text}")
    return OrtFloors(own_floors(float32_outputs, high, torch_floors))
