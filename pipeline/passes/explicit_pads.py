"""``auto_pad="SAME_UPPER"|"SAME_LOWER"`` → explicit ``pads`` on Conv and pooling nodes.

tf2onnx writes ``auto_pad="SAME_UPPER"`` for a ``padding="same"`` convolution or pooling
whose input it could not give a static spatial shape (e.g. a Conv2D after a Dense on an
image), and onnx2torch refuses ``SAME_UPPER`` ("auto_pad is not implemented").  The pads
``SAME_*`` stands for are fixed by the kernel, strides and dilations, plus the input size
when a stride is above 1 (ONNX's definition): ``total = max((ceil(in/s) - 1)·s + (k-1)·d + 1
- in, 0)``, ``total // 2`` at the start and the rest at the end for ``SAME_UPPER`` (the
other way round for ``SAME_LOWER``).  Sizes come from shape inference with data propagation
(a Reshape to a shape computed from the input's Shape keeps its sizes).  A node whose input
size is needed but unknown after that is left alone (the import stage then names it).  Safe:
the runner checks ONNX Runtime's outputs before and after.
"""

from __future__ import annotations

import math

import onnx
from onnx import helper

from pipeline.passes.base import PassResult

_OPS = {"Conv", "MaxPool", "AveragePool", "LpPool"}
_SAME = {"SAME_UPPER", "SAME_LOWER"}


def _attr(node: onnx.NodeProto, name: str) -> onnx.AttributeProto | None:
    return next((a for a in node.attribute if a.name == name), None)


def _spatial_dims(model: onnx.ModelProto, tensor: str) -> list[int | None] | None:
    """The static spatial sizes of ``tensor`` (NC... layout), None entries where unknown."""
    infos = [*model.graph.input, *model.graph.value_info, *model.graph.output]
    info = next((v for v in infos if v.name == tensor), None)
    if info is None or not info.type.tensor_type.HasField("shape"):
        return None
    dims = info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims[2:]]


def _kernel(model: onnx.ModelProto, node: onnx.NodeProto) -> list[int] | None:
    shape = _attr(node, "kernel_shape")
    if shape is not None:
        return list(shape.ints)
    if node.op_type == "Conv" and len(node.input) > 1:
        weight = next((t for t in model.graph.initializer if t.name == node.input[1]), None)
        if weight is not None:
            return list(weight.dims[2:])
    return None


def same_pads(
    mode: str, kernel: list[int], strides: list[int], dilations: list[int], sizes: list[int | None]
) -> list[int] | None:
    """ONNX's ``pads`` (all begins, then all ends) for ``auto_pad=mode``; None when a size
    that matters (stride above 1) is unknown."""
    begins, ends = [], []
    for k, s, d, size in zip(kernel, strides, dilations, sizes, strict=True):
        if s == 1:
            total = (k - 1) * d
        elif size is None:
            return None
        else:
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else large)
        ends.append(large if mode == "SAME_UPPER" else small)
    return begins + ends


class ExplicitPadsPass:
    """``auto_pad=SAME_*`` → explicit ``pads`` (onnx2torch takes only the latter)."""

    name = "explicit_pads"
    description = "Conv/pooling auto_pad SAME_UPPER/SAME_LOWER -> explicit pads"

    def apply(self, model: onnx.ModelProto) -> PassResult:
        """Rewrite every qualifying node of the top-level graph (see the module docstring)."""
        if not any(
            n.op_type in _OPS and (a := _attr(n, "auto_pad")) is not None and a.s.decode() in _SAME
            for n in model.graph.node
        ):
            return PassResult(model, 0)
        out = onnx.ModelProto()
        out.CopyFrom(model)
        try:
            # data_prop: a Dense before the node (tf2onnx's Tensordot) reshapes to a shape it
            # computes from Shape/Gather/Concat, which plain inference leaves unknown.
            shaped = onnx.shape_inference.infer_shapes(out, data_prop=True)
        except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
            shaped = out
        changes = 0
        for node in out.graph.node:
            auto_pad = _attr(node, "auto_pad")
            if node.op_type not in _OPS or auto_pad is None or auto_pad.s.decode() not in _SAME:
                continue
            kernel = _kernel(out, node)
            if kernel is None:
                continue
            rank = len(kernel)
            strides = list(a.ints) if (a := _attr(node, "strides")) is not None else [1] * rank
            dilations = list(a.ints) if (a := _attr(node, "dilations")) is not None else [1] * rank
            sizes = _spatial_dims(shaped, node.input[0]) or [None] * rank
            if len(sizes) != rank:
                continue
            pads = same_pads(auto_pad.s.decode(), kernel, strides, dilations, sizes)
            if pads is None:
                continue
            kept = [a for a in node.attribute if a.name not in ("auto_pad", "pads")]
            del node.attribute[:]
            node.attribute.extend([*kept, helper.make_attribute("pads", pads)])
            changes += 1
        return PassResult(out if changes else model, changes)
