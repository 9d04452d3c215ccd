"""TF ``Bucketize(x, boundaries)`` -> ``ReduceSum(Cast(GreaterOrEqual(Unsqueeze(x, -1), b)))``.

Keras ``Discretization(bin_boundaries=...)`` calls ``tf.raw_ops.Bucketize``, which tf2onnx
leaves in the graph as an op of the default domain: not valid ONNX, so neither ONNX Runtime
nor the importer can run it.  TF's bucket of ``x`` is the ``i`` with ``b[i-1] <= x < b[i]``
over the sorted boundaries, i.e. how many boundaries are ``<= x``: a comparison against the
boundaries on a new last axis, summed over it, cast to TF's int32.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pipeline.passes.base import PassResult


def _is_bucketize(node: onnx.NodeProto) -> bool:
    return node.op_type == "Bucketize" and node.domain in ("", "ai.onnx")


def _replacement(
    node: onnx.NodeProto, index: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The nodes and initializers that compute ``node``'s output in ONNX ops."""
    boundaries = next((list(a.floats) for a in node.attribute if a.name == "boundaries"), [])
    prefix = f"{node.name or 'Bucketize'}__bucketize{index}"
    # Compared in float64: exact for the float32 inputs Keras 3 feeds (its layer casts first)
    # and for the integer inputs a Keras 2 layer passes through, as TF's kernel compares an
    # integer with a float boundary.
    table = numpy_helper.from_array(np.asarray(boundaries, np.float64), f"{prefix}/boundaries")
    axes = numpy_helper.from_array(np.asarray([-1], np.int64), f"{prefix}/axes")
    # Summed in float32 and cast after: torch's sum of an int32 tensor is int64, and the
    # counts (at most len(boundaries)) are exact in float32.
    nodes = [
        helper.make_node("Cast", [node.input[0]], [f"{prefix}/wide"], name=f"{prefix}/Widen", to=TensorProto.DOUBLE),
        helper.make_node("Unsqueeze", [f"{prefix}/wide", axes.name], [f"{prefix}/x"], name=f"{prefix}/Unsqueeze"),
        helper.make_node("GreaterOrEqual", [f"{prefix}/x", table.name], [f"{prefix}/ge"], name=f"{prefix}/GreaterOrEqual"),
        helper.make_node("Cast", [f"{prefix}/ge"], [f"{prefix}/ones"], name=f"{prefix}/Cast", to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", [f"{prefix}/ones", axes.name], [f"{prefix}/count"], name=f"{prefix}/ReduceSum", keepdims=0),
        helper.make_node("Cast", [f"{prefix}/count"], [node.output[0]], name=node.name, to=TensorProto.INT32),
    ]  # fmt: skip
    return nodes, [table, axes]


class BucketizePass:
    """Rewrite TF's ``Bucketize`` (left unconverted by tf2onnx) into ONNX comparison ops."""

    name = "bucketize"
    description = (
        "Bucketize(x) -> ReduceSum(Cast(x >= boundaries)): tf2onnx leaves TF's Bucketize "
        "(Keras Discretization) unconverted"
    )

    def apply(self, model: onnx.ModelProto) -> PassResult:
        """Return the rewritten copy of ``model`` and the number of Bucketize nodes replaced."""
        if not any(_is_bucketize(n) for n in model.graph.node):
            return PassResult(model, 0)
        out = onnx.ModelProto()
        out.CopyFrom(model)
        nodes: list[onnx.NodeProto] = []
        changes = 0
        for node in out.graph.node:
            if not _is_bucketize(node):
                nodes.append(node)
                continue
            replacement, tables = _replacement(node, changes)
            nodes.extend(replacement)
            out.graph.initializer.extend(tables)
            changes += 1
        del out.graph.node[:]
        out.graph.node.extend(nodes)
        return PassResult(out, changes)
