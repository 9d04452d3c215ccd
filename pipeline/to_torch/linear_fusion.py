"""``MatMul(x, kernel) [+ Add(bias)]`` on a whole Dense kernel becomes ``nn.Linear``, found on
the fingerprinted module so the Linear's weight decodes as the kernel transposed; a bias-less
``nn.Linear`` onnx2torch made of a ``Gemm`` takes the bias the graph adds after it.

Every call of one Keras Dense/EinsumDense must end as the same ``nn.Linear`` (weight and
bias), so the calls become one module called twice (``parameters._merge_copy``).  DeBERTa
calls ``query`` on the hidden states (dynamic length: tf2onnx writes ``Gemm``, ``Reshape``,
``Squeeze``, ``Add(bias)``) and on the position table (``MatMul``, ``Reshape``, ``Add``): a
Linear with a bias and one without are not one module, and the variable ended split over a
frozen copy and a stray ``bias_1``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from onnx2torch.node_converters.matmul import OnnxMatMul
from onnx2torch.node_converters.squeeze import OnnxSqueezeStaticAxes
from onnx2torch.node_converters.unsqueeze import OnnxUnsqueezeStaticAxes

from pipeline.core.fingerprint import NOT_A_FINGERPRINT, Fingerprints
from pipeline.to_torch.module_surgery import (
    Slot,
    drop_unused,
    ensure_module,
    free_path,
    is_add,
    is_call,
    is_reshape,
    sanitize_name,
    slot_tensor,
)

# ------------------------------------------------------------------------------ Linear


def fuse_linear_layers(
    module: torch.fx.GraphModule,
    prints: Fingerprints,
    variables: Sequence[Mapping[str, Any]],
) -> None:
    """``MatMul(x, kernel) [+ Add(bias)]`` with ``kernel`` one whole 2-D variable as is (and
    ``bias`` one whole variable added on the output axis, directly or after reshapes) →
    ``nn.Linear`` at the kernel's layer path; an ``nn.Linear`` without bias followed by such
    an ``Add`` takes the bias.  Runs on the fingerprinted module, so the Linear's weight
    decodes as the kernel transposed."""

    def tensor_of(node: torch.fx.Node) -> torch.Tensor | None:
        owner, _, attr = str(node.target).rpartition(".")
        try:
            return slot_tensor(module, Slot(owner, attr))
        except (AttributeError, AssertionError):
            return None

    def whole(node: object, ndim: int) -> int | None:
        """The variable ``node`` reads, whole and as it is (``ndim`` -1: any rank)."""
        if not isinstance(node, torch.fx.Node) or node.op != "get_attr":
            return None
        tensor = tensor_of(node)
        if tensor is None or (ndim >= 0 and tensor.dim() != ndim):
            return None
        owner, flat = prints.decode(tensor.detach().cpu().numpy())
        first = int(owner.reshape(-1)[0]) if owner.size else NOT_A_FINGERPRINT
        if first == NOT_A_FINGERPRINT or not np.all(owner == first):
            return None
        expected = np.arange(flat.size).reshape(flat.shape)
        return first if np.array_equal(flat, expected) else None

    def bias_after(
        output: torch.fx.Node, width: int
    ) -> tuple[torch.fx.Node, torch.fx.Node, torch.Tensor] | None:
        """The ``Add`` of a whole bias variable after ``output`` (directly, or after the
        reshapes that follow it) that commutes into the Linear: (the node the Add reads, the
        Add, the bias)."""
        through = output
        suffix: tuple[int, ...] = (width,)
        rank: int | None = None
        while len(through.users) == 1:
            user = next(iter(through.users))
            if is_add(module, user):
                other = [a for a in user.args if a is not through]
                if (
                    len(user.args) != 2
                    or len(other) != 1
                    or not isinstance(other[0], torch.fx.Node)
                ):
                    return None
                bias = tensor_of(other[0]) if whole(other[0], -1) is not None else None
                if bias is None or tuple(bias.shape) != suffix:
                    return None
                return through, user, bias
            if not user.args or user.args[0] is not through:
                return None
            step = reshaped(module, user, suffix, rank, width)
            if step is None:
                return None
            suffix, rank = step
            through = user
        return None

    # A kernel some other op reads as a tensor (a Loop's body, which Keras's RNN also peels
    # a first step of) stays one tensor: a Linear beside it would be a second copy.
    read_raw = {
        index
        for node in module.graph.nodes
        if node.op == "get_attr"
        and any(not (is_call(module, u, OnnxMatMul) and u.args[1:2] == (node,)) for u in node.users)
        and (index := whole(node, -1)) is not None
    }
    for matmul in list(module.graph.nodes):
        if not is_call(module, matmul, OnnxMatMul) or len(matmul.args) != 2:
            continue
        kernel_node = matmul.args[1]
        k_index = whole(kernel_node, 2)
        if k_index is None or not isinstance(kernel_node, torch.fx.Node) or k_index in read_raw:
            continue
        if len(kernel_node.users) != 1:
            continue
        kernel = tensor_of(kernel_node)
        assert kernel is not None
        found = bias_after(matmul, int(kernel.shape[1]))
        layer = str(variables[k_index]["path"]).rpartition("/")[0]
        linear = torch.nn.Linear(int(kernel.shape[0]), int(kernel.shape[1]), bias=found is not None)
        with torch.no_grad():
            linear.weight.copy_(kernel.T)
            if found is not None:
                linear.bias.copy_(found[2].reshape(-1))
        path = free_path(module, ".".join(sanitize_name(p) for p in layer.split("/")) or "dense")
        owner, _, attr = path.rpartition(".")
        (ensure_module(module, owner) if owner else module).add_module(attr, linear)
        with module.graph.inserting_before(matmul):
            new = module.graph.call_module(path, (matmul.args[0],))
        matmul.replace_all_uses_with(new)
        module.graph.erase_node(matmul)
        if found is not None:
            # The Add only re-added the bias: its output is the (reshaped) Linear output.
            through, add, _bias = found
            add.replace_all_uses_with(through if through is not matmul else new)
            module.graph.erase_node(add)

    calls: dict[str, list[torch.fx.Node]] = {}
    for node in module.graph.nodes:
        if node.op == "call_module":
            calls.setdefault(str(node.target), []).append(node)
    for target, nodes in calls.items():
        # An ``nn.Linear`` onnx2torch made of a ``Gemm`` without bias (tf2onnx's form of a
        # Dense or EinsumDense on the flattened input), whose bias the graph adds after it
        # (through the Reshape back): the Linear takes the bias, so it is the same module as
        # the ``nn.Linear`` fused above for another call of the same Keras layer (DeBERTa's
        # ``query`` on the hidden states and on the relative-position table), and the two
        # become one module called twice (``parameters._merge_copy``).
        gemm = module.get_submodule(target)
        if type(gemm) is not torch.nn.Linear or gemm.bias is not None or len(nodes) != 1:
            continue
        found = bias_after(nodes[0], int(gemm.out_features))
        if found is None:
            continue
        through, add, bias = found
        linear = torch.nn.Linear(gemm.in_features, gemm.out_features, bias=True)
        with torch.no_grad():
            linear.weight.copy_(gemm.weight)
            linear.bias.copy_(bias.reshape(-1))
        owner, _, attr = target.rpartition(".")
        (module.get_submodule(owner) if owner else module).add_module(attr, linear)
        add.replace_all_uses_with(through)
        module.graph.erase_node(add)
    drop_unused(module)


def reshaped(
    module: torch.fx.GraphModule,
    node: torch.fx.Node,
    suffix: tuple[int, ...],
    rank: int | None,
    width: int,
) -> tuple[tuple[int, ...], int | None] | None:
    """Follow one element-order-preserving reshape (``Reshape``, ``Squeeze``, ``Unsqueeze``)
    of a tensor whose trailing dims ``suffix`` hold a MatMul's output axis (``width`` wide)
    in row-major order: the new suffix and rank, or None when ``node`` is no such reshape or
    may touch those dims.

    A bias added after the reshapes commutes into the Linear when its shape is the final
    suffix: every reshape keeps the flat order, and each suffix multiplies to ``width``, so
    the element at flat position ``p`` is output feature ``p % width`` throughout (Dense on a
    sequence: MatMul on ``(-1, in)``, Reshape back; EinsumDense with a ``(heads, dim)`` bias;
    tf2onnx's ``Gemm``, ``Reshape``, ``Squeeze`` of an EinsumDense on a 3-D input)."""
    if node.op != "call_module":
        return None
    op = module.get_submodule(str(node.target))
    if is_reshape(module, node):
        target = getattr(op, "shape", None)
        if not isinstance(target, tuple):
            return None
        for start in range(len(target) - 1, -1, -1):
            tail = target[start:]
            if not all(isinstance(d, int) and d > 0 for d in tail):
                return None
            if int(np.prod(tail)) == width:
                return tuple(int(d) for d in tail), len(target)
        return None
    if isinstance(op, OnnxSqueezeStaticAxes | OnnxUnsqueezeStaticAxes):
        # Axis by axis as onnx2torch applies them (Squeeze: descending, each an input axis;
        # Unsqueeze: ascending, each an output axis).  An axis inside the suffix must be a
        # 1 there (Squeeze) or becomes one (Unsqueeze); one before it leaves it alone.
        squeeze = isinstance(op, OnnxSqueezeStaticAxes)
        axes = op.axes if squeeze else op._axes  # onnx2torch keeps them private
        if not axes or (len(axes) > 1 and min(axes) < 0):
            return None  # onnx2torch's sequential order misreads several negative axes
        dims = list(suffix)
        for axis in axes:
            size = rank if squeeze else (None if rank is None else rank + 1)
            if axis >= 0 and size is None:
                return None
            from_end = -axis if axis < 0 else int(size or 0) - axis  # 1: the last axis
            if from_end <= 0:
                return None
            if from_end <= len(dims):
                at = len(dims) - from_end
                if squeeze and dims[at] != 1:
                    return None
                if squeeze:
                    del dims[at]
                else:
                    dims.insert(at + 1, 1)
            rank = None if rank is None else rank + (-1 if squeeze else 1)
        return tuple(dims), rank
    return None
