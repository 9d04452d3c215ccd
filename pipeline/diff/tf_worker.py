"""TensorFlow worker for ``tf2torch diff``: TF's value of every tensor tf2onnx named.

Run as ``python -m pipeline.diff.tf_worker REQUEST.json``, never imported next to torch
(see :mod:`pipeline.export.worker`, whose model loading this reuses).  The worker loads the
model exactly as ``convert`` did and runs the same export path up to the point where
tf2onnx has traced and frozen the model (``tf2onnx.convert._convert_common`` receives the
frozen, grappler-optimised ``GraphDef``); it keeps that graph and stops there.  That graph
is what tf2onnx converted, so an ONNX tensor named ``model_1/dense_1/MatMul:0`` is the TF
tensor of that name in it.  A name that is not in the graph (a node tf2onnx made up, such as
``Transpose__26:0``) is answered ``not_found``, with the TF tensors around its named
neighbours as candidates that the diff process matches by value
(:mod:`pipeline.diff.value_match`), recording that it did.

The graph is run once in a TF1 session on the given inputs, fetching every matched tensor
in one ``Session.run`` (one copy of each), and the values are streamed to an ``.npz``
(keys ``t<i>``, one per requested name, in request order).

Request keys: those :func:`pipeline.export.worker.loading.load_model` reads (``source``,
``input_specs``, ``custom_objects``, ``safe_mode``), ``cwd``, ``opset``, ``inputs_npz``
(arrays keyed by ONNX input name), ``onnx_inputs`` / ``onnx_outputs`` (the ONNX graph's
input and output names, in order), ``names`` (ONNX tensor names wanted), ``node_names``
(ONNX node names, to name the TF op each came from), ``consumers`` (ONNX tensor → the ONNX
nodes reading it), ``aliases`` (ONNX tensor → the TF tensor name to use instead of its own,
where tf2onnx split one TF op into several nodes), ``neighbours`` (ONNX tensor → the named
ONNX nodes near its producer, for tensors tf2onnx may have invented), ``out_npz`` and
``result``.

The answer (``result``) is ``{"ok": true, "tensors": {name: {...}}, "ops": {node: {...}}}``
where each tensor entry has ``status`` (``ok``, ``not_found``, ``not_fetchable``, ``conflict``
with a ``note``: the name matches but the data flow does not, see :func:`_follow_fusion`), and
for ``ok`` the ``key``, ``tf_name``, ``tf_op``, ``tf_type``, ``shape``, ``dtype`` and, when the
ONNX node absorbed later TF ops, ``fused`` (their names); a ``not_found`` tensor with
``neighbours`` gets ``candidates`` (``key``, ``tf_name``, ``tf_op``, ``tf_type``, ``shape``):
the computed floating TF tensors around its neighbours' TF ops, fetched too; or
``{"ok": false, "kind", "message"}`` like :mod:`pipeline.export.worker` (exit 3, 4 on a crash).
"""

from __future__ import annotations

import os
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import BadInputError, OnnxExportError
from pipeline.export.worker.loading import one_line
from pipeline.export.worker.scaling import load_and_scale
from pipeline.export.worker.serve import serve


class _Captured(BaseException):
    """Raised inside tf2onnx once the frozen graph is in hand: the conversion is not needed.
    A control-flow signal, not an error: no ``except Exception`` on the way may swallow it."""

    def __init__(self, graph_def: Any, kwargs: dict[str, Any]) -> None:
        super().__init__("captured")
        self.graph_def = graph_def
        self.kwargs = kwargs


def frozen_graph(loaded: Any, specs: Sequence[Any], opset: int) -> tuple[Any, dict[str, Any]]:
    """The ``GraphDef`` tf2onnx converts for ``loaded`` and the names it was told about
    (``input_names``, ``output_names``, ``tensors_to_rename``), from the model's own export
    path: ``tf2onnx.convert._convert_common`` is intercepted on its first call."""
    import tf2onnx.convert

    original = tf2onnx.convert._convert_common

    def capture(graph_def: Any, **kwargs: Any) -> Any:
        raise _Captured(graph_def, kwargs)

    tf2onnx.convert._convert_common = capture
    try:
        loaded.export(list(specs), opset, fingerprint=False)
    except _Captured as captured:
        return captured.graph_def, captured.kwargs
    except Exception as err:
        raise OnnxExportError(f"tf2onnx could not trace the model: {one_line(err)}") from None
    finally:
        tf2onnx.convert._convert_common = original
    raise OnnxExportError("tf2onnx produced no frozen graph for the model")


_FETCHABLE = {"resource", "variant", "string"}
_FUSION_DEPTH = 4


def _follow_fusion(
    graph: Any, tensor: Any, onnx_consumers: Sequence[str], onnx_nodes: set[str]
) -> tuple[Any, list[str], str | None]:
    """Check a name match against the data flow, and follow a fusion.

    tf2onnx keeps a tensor's name when it fuses the ops *after* it into its producer (a
    Conv absorbs the BatchNorm ``add`` behind it and keeps the ``mul``'s output name).  The
    ONNX consumers of the tensor then read, in TF, a later tensor.  For each ONNX consumer
    that is also a TF op: if it reads ``tensor``, the match stands; if it reads a tensor
    computed from ``tensor`` only through TF ops that have no ONNX node (the fused ones,
    at most a few steps), that tensor is the one to compare, and the fused ops are returned.
    If consumers disagree or nothing links them, the match is refused with a reason.
    """
    replacements: dict[str, Any] = {}
    fused_ops: list[str] = []
    for consumer in onnx_consumers:
        try:
            op = graph.get_operation_by_name(consumer)
        except (KeyError, ValueError):
            continue  # a node tf2onnx made (a layout Transpose): nothing to check against
        if any(i.name == tensor.name for i in op.inputs):
            replacements[tensor.name] = tensor
            continue
        for candidate in op.inputs:
            path = _fused_path(candidate, tensor, onnx_nodes, _FUSION_DEPTH)
            if path is not None:
                replacements[candidate.name] = candidate
                fused_ops = path
                break
        else:
            return (
                tensor,
                [],
                (
                    f"ONNX consumer {consumer} reads this tensor, but TF's {consumer} does not "
                    f"read {tensor.name} or anything computed from it by fused ops: not compared"
                ),
            )
    if len(replacements) > 1:
        names = ", ".join(sorted(replacements))
        return tensor, [], f"ONNX consumers match different TF tensors ({names}): not compared"
    if replacements and (chosen := next(iter(replacements.values()))).name != tensor.name:
        return chosen, fused_ops, None
    return tensor, [], None


def _fused_path(candidate: Any, target: Any, onnx_nodes: set[str], depth: int) -> list[str] | None:
    """The TF ops (no ONNX node of their name) from ``target`` to ``candidate``, or None."""
    if candidate.name == target.name:
        return []
    op = candidate.op
    if depth == 0 or op.name in onnx_nodes:
        return None
    for source in op.inputs:
        path = _fused_path(source, target, onnx_nodes, depth - 1)
        if path is not None:
            return [*path, op.name]
    return None


_CANDIDATE_SKIP = {"Const", "Placeholder", "NoOp", "VarHandleOp", "ReadVariableOp"}
MAX_CANDIDATES = 32


def _near(op: Any) -> list[Any]:
    """The TF tensors around ``op``: its outputs and inputs, its inputs' inputs (two steps
    up) and its consumers' outputs (one step down)."""
    found = [*op.outputs, *op.inputs]
    found += [t for i in op.inputs for t in i.op.inputs]
    found += [t for o in op.outputs for c in o.consumers() for t in c.outputs]
    return found


def _add_candidates(
    graph: Any, tensors: dict[str, dict[str, Any]], neighbours: dict[str, list[str]]
) -> dict[str, Any]:
    """For each ONNX tensor with no TF tensor of its name (a node tf2onnx made), list the
    computed floating TF tensors around the TF ops of its named ONNX neighbours as
    ``candidates`` (the diff process picks the one whose value it computes,
    :mod:`pipeline.diff.value_match`); return the extra fetches, keyed ``c<i>``."""
    keys: dict[str, str] = {}
    fetch: dict[str, Any] = {}
    for onnx_name, near_nodes in neighbours.items():
        entry = tensors.get(onnx_name)
        if entry is None or entry["status"] != "not_found":
            continue
        candidates: list[dict[str, Any]] = []
        for node_name in near_nodes:
            try:
                op = graph.get_operation_by_name(node_name)
            except (KeyError, ValueError):
                continue
            for tensor in _near(op):
                if len(candidates) >= MAX_CANDIDATES:
                    break
                producer = tensor.op
                if (
                    producer.type in _CANDIDATE_SKIP
                    or not tensor.dtype.is_floating
                    or not graph.is_fetchable(tensor)
                    or any(c["tf_name"] == tensor.name for c in candidates)
                    or (producer.type == "Identity" and producer.inputs[0].op.type == "Const")
                ):
                    continue
                key = keys.setdefault(tensor.name, f"c{len(keys)}")
                fetch[key] = tensor
                candidates.append(
                    {
                        "key": key,
                        "tf_name": tensor.name,
                        "tf_op": producer.name,
                        "tf_type": producer.type,
                    }
                )
        if candidates:
            entry["candidates"] = candidates
    return fetch


def _write_npz_streaming(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` into an uncompressed ``.npz`` one array at a time (no in-memory copy of
    the whole archive), through a temporary name and a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, array in arrays.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asarray(array), allow_pickle=False)
    os.replace(tmp, path)


def handle(request: dict[str, Any]) -> dict[str, Any]:
    """Do the request's work and return the JSON-ready answer (see the module docstring)."""
    import tensorflow as tf

    loaded = load_and_scale(request)
    with np.load(request["inputs_npz"], allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    graph_def, names = frozen_graph(loaded, loaded.inputs, int(request["opset"]))
    renames: dict[str, str] = dict(names.get("tensors_to_rename") or {})
    onnx_to_tf = {onnx_name: tf_name for tf_name, onnx_name in renames.items()}
    tf_outputs = list(names.get("output_names") or [])
    # tf2onnx names graph outputs after tensors_to_rename, and tf_worker.rename_outputs may
    # rename them again (SavedModel signatures): graph outputs match by position.
    onnx_outputs = list(request.get("onnx_outputs", []))
    if len(onnx_outputs) == len(tf_outputs):
        onnx_to_tf.update(zip(onnx_outputs, tf_outputs, strict=True))

    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")

    aliases: dict[str, str] = request.get("aliases", {})

    def tf_tensor(onnx_name: str) -> Any:
        for candidate in (onnx_to_tf.get(onnx_name), aliases.get(onnx_name), onnx_name):
            if not candidate or ":" not in candidate:
                continue
            try:
                return graph.get_tensor_by_name(candidate)
            except (KeyError, ValueError):
                continue
        return None

    feed: dict[Any, np.ndarray] = {}
    for onnx_name in request.get("onnx_inputs", []):
        tensor = tf_tensor(onnx_name)
        if tensor is None:
            raise BadInputError(
                f"input {onnx_name!r} of model.onnx is not an input of the TF graph"
            )
        if onnx_name not in arrays:
            raise BadInputError(f"no value for input {onnx_name!r} in the run's golden.npz")
        feed[tensor] = arrays[onnx_name]
    # The export traces the model with its variables (and captured constants) as inputs.
    for tf_name, value in loaded.variable_feeds().items():
        feed[graph.get_tensor_by_name(tf_name)] = value

    onnx_nodes = set(request.get("node_names", []))
    consumers: dict[str, list[str]] = request.get("consumers", {})
    tensors: dict[str, dict[str, Any]] = {}
    fetch: dict[str, Any] = {}
    for index, onnx_name in enumerate(request["names"]):
        tensor = tf_tensor(onnx_name)
        if tensor is None:
            tensors[onnx_name] = {"status": "not_found"}
            continue
        tensor, fused, conflict = _follow_fusion(
            graph, tensor, consumers.get(onnx_name, []), onnx_nodes
        )
        if conflict:
            tensors[onnx_name] = {"status": "conflict", "note": conflict, "tf_name": tensor.name}
            continue
        entry = {
            "tf_name": tensor.name,
            "tf_op": tensor.op.name,
            "tf_type": tensor.op.type,
            **({"fused": fused} if fused else {}),
        }
        if tensor.dtype.name in _FETCHABLE or not graph.is_fetchable(tensor):
            tensors[onnx_name] = {"status": "not_fetchable", **entry}
            continue
        key = f"t{index}"
        tensors[onnx_name] = {"status": "ok", "key": key, **entry}
        fetch[key] = tensor

    fetch |= _add_candidates(graph, tensors, request.get("neighbours", {}))

    with tf.compat.v1.Session(graph=graph) as session:
        try:
            values = session.run(fetch, feed_dict=feed) if fetch else {}
        except Exception as err:
            raise BadInputError(
                f"TensorFlow could not run the frozen graph: {one_line(err)}"
            ) from None
    for entry in tensors.values():
        if entry["status"] == "ok":
            value = np.asarray(values[entry["key"]])
            entry["shape"] = list(value.shape)
            entry["dtype"] = value.dtype.name
        for candidate in entry.get("candidates", []):
            candidate["shape"] = list(np.shape(values[candidate["key"]]))
    _write_npz_streaming(Path(request["out_npz"]), values)
    del values

    ops: dict[str, dict[str, str]] = {}
    for node_name in request.get("node_names", []):
        try:
            op = graph.get_operation_by_name(node_name)
        except (KeyError, ValueError):
            continue
        ops[node_name] = {"tf_op": op.name, "tf_type": op.type}
    return {
        "tensors": tensors,
        "ops": ops,
        "tf_outputs": tf_outputs,
        "versions": {"tensorflow": tf.__version__},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m pipeline.diff.tf_worker REQUEST.json``."""
    return serve(handle, argv)


if __name__ == "__main__":
    sys.exit(main())
