"""Shared machinery of the custom-op patches in ``patches/``.

A patch rewrites the nodes of one custom op into a single node of the ``tf2torch`` domain.
The node's meaning is a model-local ONNX function (``model.functions``), which ONNX Runtime
inlines, so the patched graph still runs; its weights are node inputs (initializers).  On
import, an onnx2torch converter registered for ``tf2torch::<Op>`` turns the node into an
``nn.Module`` holding those weights as ``nn.Parameter``\\ s.

This module gives the patches:

- :func:`analysed` / :func:`serialized` / :func:`without_inferred_value_info`: an
  ``onnx_ir`` copy of the graph with inferred shapes to match on and edit, and the edited
  proto back (with the patch's functions; then without the inferred ``value_info``);
- :func:`remove_matched`: drop a match's nodes, what only they used (shape chains) and the
  initializers nothing uses any more;
- :func:`add_function`: put a function (and the domain's opset import) into a model;
- :func:`register_converter`: register an onnx2torch converter once, tolerating re-imports;
- :func:`verify_converter`: run one rewritten node through ONNX Runtime (its function) and
  through its torch module on the same random inputs, and raise :class:`PassError` naming
  the patch if they disagree or the weights did not become parameters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import onnx
import onnx.inliner
import onnx_ir as ir
import torch
from onnx import helper
from onnx2torch.node_converters.registry import (
    _CONVERTER_REGISTRY,
    OperationDescription,
    TConverter,
    add_converter,
)

from pipeline.core import compare, provenance
from pipeline.core.errors import PassError
from pipeline.core.ort_runner import OrtRunner
from pipeline.passes import variables

DOMAIN = "tf2torch"
"""The ONNX domain of every op our patches create."""
DOMAIN_VERSION = 1

# tf2onnx names a frozen variable after the op that read it: ``.../ReadVariableOp:0`` (TF2
# resource variables, Keras 2 and 3, SavedModels) or ``.../read:0`` (TF1 reference
# variables).  Constants the user wrote (``x / np.sqrt(d)``, ``Rescaling``) and tensors TF or
# tf2onnx folded from variables (BatchNorm's ``gamma * rsqrt(var)``, LayerNorm's reshaped
# gamma, PReLU's ``-alpha``) are named after a ``Const`` or the folding op instead.
_VARIABLE_READ = re.compile(r"(?:^|/)(?:ReadVariableOp(?:_\d+)?|read)(?::\d+)?$")


def hand_over_uses(old: ir.Value, new: ir.Value) -> None:
    """Every reader of ``old`` reads ``new`` instead.  A graph output keeps its name,
    position and type: ``new`` takes them over (a new node's value has no type of its own),
    ``old`` is renamed out of the way."""
    if not old.is_graph_output():
        old.replace_all_uses_with(new)
        return
    name = old.name
    old.replace_all_uses_with(new, replace_graph_outputs=True)
    old.name, new.name = f"{name}__replaced", name
    if new.type is None:
        new.type, new.shape = old.type, old.shape


def is_variable_read(value: ir.Value, record: provenance.Provenance | None = None) -> bool:
    """Whether initializer ``value`` is a TF variable as read (not a constant, not folded).

    With the model's provenance ``record`` (every tf2torch export has one), that is whether
    the record says the initializer is one whole variable; without (a graph from elsewhere),
    whether tf2onnx named it after the op that read a variable."""
    if record is not None and (record.initializers or record.lost):
        return variables.variable_of(record, value) is not None
    return bool(value.name) and _VARIABLE_READ.search(value.name or "") is not None


def default_opset(model: onnx.ModelProto) -> int:
    """The model's opset version of the default ONNX domain (0 if it imports none)."""
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return int(opset.version)
    return 0


# -- matching and editing -----------------------------------------------------------------


def analysed(model: onnx.ModelProto) -> ir.Model:
    """An ``onnx_ir`` copy of ``model`` with shapes inferred (symbolic dims propagated
    through shape arithmetic), to match on and edit; ``model`` is left as it is."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, ValueError):
        inferred = model  # no shapes (e.g. a model over 2 GB): the patches match nothing
    return ir.serde.deserialize_model(inferred)


def serialized(ir_model: ir.Model, *functions: onnx.FunctionProto) -> onnx.ModelProto:
    """The edited ``ir_model`` as a proto, with ``functions`` added (see :func:`add_function`).

    It still carries the ``value_info`` of :func:`analysed` (what :func:`verify_converter`
    needs); :func:`without_inferred_value_info` drops it afterwards.
    """
    proto = ir.serde.serialize_model(ir_model)
    for function in functions:
        add_function(proto, function)
    return proto


def finish_patch(
    patch_name: str,
    ir_model: ir.Model,
    original: onnx.ModelProto,
    new_names: Sequence[str],
    *functions: onnx.FunctionProto,
    record: provenance.Provenance | None = None,
) -> onnx.ModelProto:
    """The patched model as a proto: ``functions`` added, every node named in ``new_names``
    checked with :func:`verify_converter`, and the inferred ``value_info`` dropped again.
    ``record`` (see :func:`variable_record`) is saved into it when given."""
    if record is not None:
        variables.save(ir_model, record)
    out = serialized(ir_model, *functions)
    wanted = set(new_names)
    for node in out.graph.node:
        if node.name in wanted:
            verify_converter(patch_name, out, node)
    return without_inferred_value_info(out, original)


def without_inferred_value_info(
    model: onnx.ModelProto, original: onnx.ModelProto
) -> onnx.ModelProto:
    """``model`` (changed in place and returned) keeping only the ``value_info`` entries
    ``original`` had: the rest came from :func:`analysed`'s shape inference."""
    keep = {v.name for v in original.graph.value_info}
    kept = [v for v in model.graph.value_info if v.name in keep]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    return model


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """``value``'s constant contents (initializer or ``Constant`` node), else None."""
    if value is None or value.is_graph_input():
        return None
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


def weight(value: ir.Value | None) -> ir.Value | None:
    """``value`` if it is an initializer a user cannot override (not also a graph input)."""
    if value is None or not value.is_initializer() or value.is_graph_input():
        return None
    return value if value.const_value is not None else None


def dims(value: ir.Value | None) -> list[int | str | None] | None:
    """``value``'s inferred dims (int, symbolic name, or None when unknown), or None."""
    if value is None or value.shape is None:
        return None
    out: list[int | str | None] = []
    for d in value.shape:
        if isinstance(d, int):
            out.append(d)
        else:
            out.append(d.value if isinstance(d.value, str) else None)
    return out


def same_dims(a: Sequence[int | str | None], b: Sequence[int | str | None]) -> bool:
    """Whether two dim lists are provably equal (an unknown dim equals nothing)."""
    return len(a) == len(b) and all(x is not None and x == y for x, y in zip(a, b, strict=True))


def int_attr(node: ir.Node, name: str, default: int) -> int:
    """An INT attribute of ``node``, or ``default``."""
    attr = node.attributes.get(name)
    return default if attr is None else int(attr.as_int())


def own_initializer(
    graph: ir.Graph,
    value: ir.Value,
    user_count: int = 1,
    record: provenance.Provenance | None = None,
) -> ir.Value:
    """``value`` itself if the rewritten node will be its only user, else a copy of it.

    A constant shared by several ops (tf2onnx merges equal constants; a Keras layer called
    twice reads its variable twice) gives each patched node its own; the copy of a TF
    variable is recorded in ``record`` as the same variable (the import stage then makes
    both modules share one parameter).
    """
    if len(value.uses()) <= user_count:
        return value
    base = f"{value.name}__copy"
    name, k = base, 1
    while name in graph.initializers:
        name, k = f"{base}{k}", k + 1
    assert value.const_value is not None
    copy = ir.Value(name=name, type=value.type, shape=value.shape, const_value=value.const_value)
    graph.register_initializer(copy)
    if record is not None and value.name:
        record.derive(name, value.name, "identity", value.const_value.shape.numpy())
    return copy


def variable_record(ir_model: ir.Model) -> provenance.Provenance:
    """The model's provenance record (which initializers are TF variables), to pass to
    :func:`is_variable_read`, :func:`own_initializer` and :func:`finish_patch`."""
    return variables.record_of(ir_model)


def new_initializer(graph: ir.Graph, base: str, array: np.ndarray) -> ir.Value:
    """A new initializer holding ``array`` under a free name derived from ``base``."""
    name, k = base, 1
    while name in graph.initializers:
        name, k = f"{base}_{k}", k + 1
    tensor = ir.tensor(array, name=name)
    value = ir.Value(
        name=name, type=ir.TensorType(tensor.dtype), shape=ir.Shape(array.shape), const_value=tensor
    )
    graph.register_initializer(value)
    return value


def layer_scope(nodes: Iterable[ir.Node], fallback: str) -> str:
    """The TF name scope the matched nodes share (their layer), e.g. ``model/scale_layer``.

    tf2onnx names nodes after their TF ops, so the common ``/``-prefix of the matched nodes
    is the Keras layer's scope; a single node's scope is its name minus the op part.
    """
    paths = [n.name.split("/") for n in nodes if n.name]
    if not paths:
        return fallback
    if len(paths) == 1:
        common = paths[0][:-1]
    else:
        common = []
        for parts in zip(*paths, strict=False):
            if len(set(parts)) != 1:
                break
            common.append(parts[0])
    return "/".join(common) or fallback


def unique_node_name(graph: ir.Graph, base: str) -> str:
    """``base``, or ``base_<k>``, whichever no node of ``graph`` has."""
    taken = {n.name for n in graph}
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def removal_set(
    core: Sequence[ir.Node], keep: Iterable[ir.Value], result: ir.Value
) -> list[ir.Node] | None:
    """The nodes to delete when ``core`` becomes one node computing ``result`` from ``keep``.

    That is ``core`` plus every node that only ``core`` (transitively) uses, e.g. the
    ``Shape → Gather → Concat`` chain of a Tensordot.  Returns None when something outside
    the match uses an intermediate value of ``core`` (the match is not exclusive and must
    not be rewritten).
    """
    keep_set = set(keep)
    removed: set[ir.Node] = set(core)
    order = list(core)
    changed = True
    while changed:
        changed = False
        for node in list(order):
            for value in node.inputs:
                producer = value.producer() if value is not None else None
                if producer is None or producer in removed:
                    continue
                if any(v in keep_set or v.is_graph_output() for v in producer.outputs):
                    continue
                if all(use.node in removed for v in producer.outputs for use in v.uses()):
                    removed.add(producer)
                    order.append(producer)
                    changed = True
    for node in order:
        for value in node.outputs:
            if value is result:
                continue
            if value.is_graph_output() or any(use.node not in removed for use in value.uses()):
                return None
    return order


def replace_match(
    graph: ir.Graph, removed: Sequence[ir.Node], new_node: ir.Node, result: ir.Value
) -> None:
    """Put ``new_node`` (computing ``result``'s value) in place of the nodes ``removed``, and
    delete the initializers only those nodes used."""
    last = result.producer()
    assert last is not None and last in removed
    inputs_before = {v for n in removed for v in n.inputs if v is not None}
    ir.convenience.replace_nodes_and_values(
        graph, last, [], [new_node], [result], [new_node.outputs[0]]
    )
    graph.remove(removed, safe=True)
    for value in inputs_before:
        if value.is_initializer() and not value.uses() and not value.is_graph_output():
            assert value.name is not None
            del graph.initializers[value.name]


# -- the ONNX form ------------------------------------------------------------------------


def add_function(model: onnx.ModelProto, function: onnx.FunctionProto) -> None:
    """Add ``function`` to ``model`` (in place) with the opset import of its domain.

    A function of the same domain and name already there is kept if identical (a second
    patched node of the same op) and is an error otherwise.
    """
    for existing in model.functions:
        if (existing.domain, existing.name) == (function.domain, function.name):
            if existing.SerializeToString() != function.SerializeToString():
                raise ValueError(
                    f"the model already has a different function {function.domain}::{function.name}"
                )
            break
    else:
        model.functions.append(function)
    if not any(o.domain == function.domain for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(function.domain, DOMAIN_VERSION))


def parse_function(text: str) -> onnx.FunctionProto:
    """An ONNX function from its text form (``onnx.parser`` syntax)."""
    return onnx.parser.parse_function(text)


# -- the torch form -----------------------------------------------------------------------


def register_converter(op_type: str) -> Callable[[TConverter], TConverter]:
    """Register the decorated onnx2torch converter for ``tf2torch::op_type`` (version 1).

    Importing a patch module twice (e.g. ``importlib.reload``) replaces its own converter;
    a converter from different code for the same op raises ``ValueError``.
    """

    def deco(converter: TConverter) -> TConverter:
        description = OperationDescription(DOMAIN, op_type, DOMAIN_VERSION)
        existing = _CONVERTER_REGISTRY.get(description)
        if existing is None:
            return add_converter(operation_type=op_type, version=DOMAIN_VERSION, domain=DOMAIN)(
                converter
            )
        ours = (converter.__module__, converter.__qualname__)
        if (existing.__module__, existing.__qualname__) != ours:
            raise ValueError(
                f"{DOMAIN}::{op_type} already has a converter "
                f"({existing.__module__}.{existing.__qualname__})"
            )
        _CONVERTER_REGISTRY[description] = converter
        return converter

    return deco


def _value_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    graph = model.graph
    return {v.name: v.type for v in [*graph.input, *graph.value_info, *graph.output]}


def _random_input(elem_type: int, shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    dtype = helper.tensor_dtype_to_np_dtype(elem_type)
    if dtype == np.bool_:
        return rng.random(shape) < 0.7
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 10, shape).astype(dtype)
    return rng.normal(0.0, 1.0, shape).astype(dtype)


def verify_converter(
    patch_name: str,
    model: onnx.ModelProto,
    node: onnx.NodeProto,
    *,
    seed: int = 0,
    unknown_dim: int = 3,
) -> float:
    """Check that ``node``'s torch module computes what its ONNX function does.

    Builds a one-node model (``node``, its weights, ``model``'s functions and opsets; every
    unknown or symbolic dim of its inputs set to ``unknown_dim``), runs it in ONNX Runtime
    with the function inlined and through ``onnx2torch`` (our registered converter) on the
    same seeded random inputs.  Returns the largest absolute difference.

    Raises :class:`PassError` naming ``patch_name`` when the two disagree beyond the
    per-dtype tolerances of :mod:`pipeline.core.compare`, when either side fails, or when the
    node's weights (initializer inputs) did not all become ``nn.Parameter``\\ s.
    ``model`` must carry the type of each non-initializer input of ``node`` (graph input or
    ``value_info``).
    """
    what = f"patch {patch_name!r}: {node.domain}::{node.op_type} node {node.name!r}"
    types = _value_types(model)
    initializers = {t.name: t for t in model.graph.initializer}
    rng = np.random.default_rng(seed)
    graph_inputs, feeds, weights = [], {}, []
    for name in node.input:
        if not name:
            continue
        if name in initializers:
            weights.append(initializers[name])
            continue
        if name not in types or not types[name].HasField("tensor_type"):
            raise PassError(f"{what}: the type of input {name!r} is unknown")
        tensor_type = types[name].tensor_type
        shape_dims = [
            d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim
        ]
        graph_inputs.append(helper.make_tensor_value_info(name, tensor_type.elem_type, shape_dims))
        concrete = [d if d is not None else unknown_dim for d in shape_dims]
        feeds[name] = _random_input(tensor_type.elem_type, concrete, rng)
    graph_outputs = []
    for name in node.output:
        elem = types[name].tensor_type.elem_type if name in types else onnx.TensorProto.FLOAT
        graph_outputs.append(helper.make_tensor_value_info(name, elem, None))
    one = helper.make_model(
        helper.make_graph([node], "verify", graph_inputs, graph_outputs, initializer=weights),
        opset_imports=list(model.opset_import),
        functions=list(model.functions),
        ir_version=10,
    )
    try:
        ort_outputs = OrtRunner(onnx.inliner.inline_local_functions(one)).run(feeds)
    except Exception as err:  # ORT's errors share no useful base class
        raise PassError(f"{what}: ONNX Runtime cannot run its function: {err}") from err

    import onnx2torch  # imported here: keeps this module importable cheaply for typing

    try:
        module = onnx2torch.convert(one)
        with torch.no_grad():
            result = module(
                *(torch.from_numpy(np.ascontiguousarray(feeds[i.name])) for i in graph_inputs)
            )
    except Exception as err:  # the converter or module is patch code: name the patch
        raise PassError(f"{what}: its torch module failed: {type(err).__name__}: {err}") from err
    results = list(result) if isinstance(result, list | tuple) else [result]
    torch_outputs = {
        name: r.detach().cpu().numpy() for name, r in zip(node.output, results, strict=True)
    }

    n_weights = sum(int(np.prod(w.dims)) for w in weights)
    n_params = sum(p.numel() for p in module.parameters())
    if n_params != n_weights:
        raise PassError(
            f"{what}: its torch module holds {n_params} parameter values for "
            f"{n_weights} weight values; weights must become nn.Parameters"
        )
    worst = 0.0
    for c in compare.compare_all(
        {"onnx": ort_outputs, "torch": torch_outputs}, compare.Tolerances(), [("onnx", "torch")]
    ):
        if not c:
            raise PassError(f"{what}: its torch module disagrees with its ONNX function: {c}")
        worst = max(worst, c.max_abs or 0.0)
    return worst
