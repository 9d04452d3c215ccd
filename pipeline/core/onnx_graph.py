"""Walking ONNX graphs."""

from __future__ import annotations

from collections.abc import Collection, Iterator

import onnx


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and, depth first, of the subgraphs its nodes hold (If, Loop, Scan)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attr.graphs:
                    yield from all_nodes(subgraph)


def drop_initializers(graph: onnx.GraphProto, names: Collection[str]) -> None:
    """Remove the initializers named ``names`` from ``graph``, with the graph inputs that
    declare them, in place."""
    if not names:
        return
    keep = [t for t in graph.initializer if t.name not in names]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    inputs = [v for v in graph.input if v.name not in names]
    del graph.input[:]
    graph.input.extend(inputs)
