"""Give a TF tensor to the nodes tf2onnx invented, by value, so diff can blame them.

tf2onnx keeps TF's names on most tensors, but some it makes up (the layout ``Transpose``
back to NHWC after a ``DepthwiseConv2D``, ``depthwise_1/depthwise__18:0``), and our fixup
passes rename the outputs of nodes they rewrite (the depthwise ``Conv`` with the ``BiasAdd``
folded in writes ``val_1``): no TF tensor has those names.  Without a TF value such a node is
"not comparable", and a fault in it surfaces one node later, at the next named node.

For each floating ONNX tensor without a TF tensor of its name, the TF worker lists the
computed TF tensors around the TF ops of its named ONNX neighbours (a few nodes up and down,
:func:`neighbourhoods`).  The tensor is matched to the candidate whose value, under a layout
transform (:func:`pipeline.diff.localise.align_tf`: identity, NHWC→NCHW, a reshape), is
closest to ONNX Runtime's value, if that closest one is within :data:`MAX_REL_ERROR`
(relative L2 error).  A loose bound on purpose: the node being matched may be the faulty
one, whose value is *near* TF's, not equal to it; an unrelated tensor is far.  A layout op
tf2onnx added (a ``Transpose`` back to NHWC, a ``Reshape``) that matches nothing by value
takes its input's TF tensor, when a layout maps it onto its shape.  Each match is recorded
with how it was made and its error (``matched_by_value``), so diff.json says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

from pipeline.diff.localise import align_tf

NEIGHBOUR_HOPS = 3
MAX_REL_ERROR = 0.25
"""A candidate farther than this (||tf - onnx|| / ||onnx||) is not the same tensor."""


def neighbourhoods(model: onnx.ModelProto, hops: int = NEIGHBOUR_HOPS) -> dict[str, list[str]]:
    """For every output tensor of every node, the names of the nodes within ``hops`` steps
    of its producer (up and down the graph), nearest first."""
    nodes = model.graph.node
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    readers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for name in n.input:
            readers.setdefault(name, []).append(i)

    def adjacent(i: int) -> list[int]:
        up = [producer[t] for t in nodes[i].input if t in producer]
        down = [r for o in nodes[i].output for r in readers.get(o, [])]
        return up + down

    result: dict[str, list[str]] = {}
    for start, node in enumerate(nodes):
        seen = {start}
        order = [start]
        frontier = [start]
        for _ in range(hops):
            frontier = [j for i in frontier for j in adjacent(i) if j not in seen]
            for j in frontier:
                if j not in seen:
                    seen.add(j)
                    order.append(j)
        names = [nodes[i].name for i in order if nodes[i].name]
        for output in node.output:
            if output:
                result[output] = names
    return result


def _rel_error(a: np.ndarray, b: np.ndarray) -> float:
    with np.errstate(all="ignore"):
        diff = float(np.linalg.norm((a.astype(np.float64) - b.astype(np.float64)).ravel()))
        scale = float(np.linalg.norm(b.astype(np.float64).ravel()))
    if not np.isfinite(diff):
        return float("inf")
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


LAYOUT_OPS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"}
"""Ops that only move data: the output is the input's TF tensor in another layout."""


def _best_candidate(
    candidates: list[dict[str, Any]], read: Any, ref: np.ndarray
) -> tuple[float, dict[str, Any], str] | None:
    best: tuple[float, dict[str, Any], str] | None = None
    for candidate in candidates:
        if int(np.prod(candidate.get("shape") or [0])) != ref.size:
            continue
        aligned, layout, _ = align_tf(np.asarray(read(candidate["key"])), ref)
        if aligned is None:
            continue
        error = _rel_error(aligned, ref)
        if best is None or error < best[0]:
            best = (error, candidate, layout)
    return best


def match_by_value(
    model: onnx.ModelProto,
    tensors: dict[str, dict[str, Any]],
    read: Any,
    reference: Mapping[str, np.ndarray],
) -> dict[str, str]:
    """Give each ``not_found`` floating output of ``model`` (an entry of the TF worker's
    answer ``tensors``, changed in place) the TF tensor it computes; return ONNX tensor →
    TF tensor name for those matched.

    In graph order: the candidate closest in value under a layout (within
    :data:`MAX_REL_ERROR` of ``reference``, ONNX Runtime's values; ``by: value``); failing
    that, for a layout op (:data:`LAYOUT_OPS`) whose data input has a TF tensor, that same
    TF tensor if a layout maps it onto the output's shape (``by: layout``: a wrong
    permutation is then a divergence at this node, not a missing match).  ``read(key)``
    returns a fetched TF value.
    """
    matched: dict[str, str] = {}
    for node in model.graph.node:
        for name in node.output:
            entry = tensors.get(name)
            ref = reference.get(name)
            if not entry or entry.get("status") != "not_found" or ref is None:
                continue
            if ref.dtype.kind != "f" or ref.size == 0:
                continue
            best = _best_candidate(entry.get("candidates") or [], read, ref)
            how = "value"
            if (best is None or best[0] > MAX_REL_ERROR) and node.op_type in LAYOUT_OPS:
                source = tensors.get(node.input[0]) if node.input else None
                best = None
                if source and source.get("status") == "ok":
                    best = _best_candidate([source], read, ref)
                    how = "layout"
            elif best is not None and best[0] > MAX_REL_ERROR:
                best = None
            if best is None:
                continue
            error, candidate, layout = best
            tensors[name] = {
                "status": "ok",
                "key": candidate["key"],
                "tf_name": candidate["tf_name"],
                "tf_op": candidate["tf_op"],
                "tf_type": candidate["tf_type"],
                "shape": candidate["shape"],
                "matched_by_value": {
                    "by": how,
                    "rel_error": error,
                    "layout": layout,
                    "candidates": len(entry.get("candidates") or []),
                },
            }
            matched[name] = candidate["tf_name"]
    return matched
