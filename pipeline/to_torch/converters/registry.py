"""Registering our converters in onnx2torch's registry, replacing its own where needed.

onnx2torch's ``add_converter`` raises on a duplicate (domain, op, version), so an override
has to write the registry dict directly.  :func:`override_converter` does that in one place
and hands each of our converters the converter it replaced (or None), so ours can fall
back to onnx2torch's module where its inputs are not known at import time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from onnx import defs
from onnx2torch.node_converters.registry import (
    _CONVERTER_REGISTRY,
    OperationDescription,
    TConverter,
)
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

OverridingConverter = Callable[[OnnxNode, OnnxGraph, TConverter | None], OperationConverterResult]
"""``(node, graph, fallback) -> result``; ``fallback`` is onnx2torch's converter or None."""

_OVERRIDDEN: dict[OperationDescription, TConverter | None] = {}


def override_converter(
    operation_type: str, versions: Iterable[int], domain: str = defs.ONNX_DOMAIN
) -> Callable[[OverridingConverter], OverridingConverter]:
    """Register the decorated converter for ``operation_type`` at each ``since_version`` in
    ``versions``, replacing onnx2torch's entry; a second override of one entry raises."""

    def deco(converter: OverridingConverter) -> OverridingConverter:
        for version in versions:
            description = OperationDescription(domain, operation_type, version)
            if description in _OVERRIDDEN:
                raise ValueError(f'Operation "{description}" already overridden')
            fallback = _CONVERTER_REGISTRY.get(description)
            _OVERRIDDEN[description] = fallback

            def registered(
                node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None = fallback
            ) -> OperationConverterResult:
                return converter(node, graph, fallback)

            _CONVERTER_REGISTRY[description] = registered
        return converter

    return deco


def use_fallback(
    fallback: TConverter | None, node: OnnxNode, graph: OnnxGraph, why: str
) -> OperationConverterResult:
    """onnx2torch's converter for ``node``; NotImplementedError naming ``why`` if none."""
    if fallback is None:
        raise NotImplementedError(f"{node.operation_type} ({node.name}): {why}")
    return fallback(node, graph)
