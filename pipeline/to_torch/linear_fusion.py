"""``MatMul(x, kernel) [+ Add(bias)]`` on a whole Dense kernel becomes ``nn.Linear``, found on
the fingerprinted module so the Linear's weight decodes as the kernel transposed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from onnx2torch.node_converters.matmul import OnnxMatMul

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
    ``bias`` one whole 1-D variable) → ``nn.Linear`` at the kernel's layer path.  Runs on the
    fingerprinted module, so the Linear's weight decodes as the kernel transposed."""

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

    for matmul in list(module.graph.nodes):
        if not is_call(module, matmul, OnnxMatMul) or len(matmul.args) != 2:
            continue
        kernel_node = matmul.args[1]
        k_index = whole(kernel_node, 2)
        if k_index is None or not isinstance(kernel_node, torch.fx.Node):
            continue
        if len(kernel_node.users) != 1:
            continue
        through = matmul
        users = list(matmul.users)
        if len(users) == 1 and is_reshape(module, users[0]) and len(users[0].users) == 1:
            # Dense on a sequence (Tensordot): MatMul on (-1, in), Reshape back, Add bias;
            # the bias commutes with a reshape that keeps the last dim.
            through = users[0]
            users = list(through.users)
        bias_node = add = None
        bias: torch.Tensor | None = None
        assert isinstance(kernel_node, torch.fx.Node)
        kernel = tensor_of(kernel_node)
        assert kernel is not None
        if len(users) == 1 and is_add(module, users[0]):
            other = [a for a in users[0].args if a is not through]
            if len(other) == 1 and isinstance(other[0], torch.fx.Node):
                candidate = tensor_of(other[0]) if whole(other[0], -1) is not None else None
                if candidate is not None and bias_commutes(module, through, matmul, candidate):
                    bias, bias_node, add = candidate, other[0], users[0]
        layer = str(variables[k_index]["path"]).rpartition("/")[0]
        linear = torch.nn.Linear(
            int(kernel.shape[0]), int(kernel.shape[1]), bias=bias_node is not None
        )
        with torch.no_grad():
            linear.weight.copy_(kernel.T)
            if bias is not None and bias_node is not None:
                linear.bias.copy_(bias.reshape(-1))
        path = free_path(module, ".".join(sanitize_name(p) for p in layer.split("/")) or "dense")
        owner, _, attr = path.rpartition(".")
        (ensure_module(module, owner) if owner else module).add_module(attr, linear)
        with module.graph.inserting_before(matmul):
            new = module.graph.call_module(path, (matmul.args[0],))
        matmul.replace_all_uses_with(new)
        module.graph.erase_node(matmul)
        if add is not None:
            # The Add only re-added the bias: its output is the (reshaped) Linear output.
            add.replace_all_uses_with(through if through is not matmul else new)
            module.graph.erase_node(add)
    drop_unused(module)


def bias_commutes(
    module: torch.fx.GraphModule,
    through: torch.fx.Node,
    matmul: torch.fx.Node,
    bias: torch.Tensor,
) -> bool:
    """Whether ``Add(through, bias)`` equals adding ``bias.reshape(-1)`` to the MatMul's
    last axis before ``through`` (the MatMul itself, or a Reshape of it).

    Directly: a 1-D bias.  Through a Reshape (Dense on a sequence, MultiHeadAttention's
    EinsumDense with a ``(heads, dim)`` bias): the reshape's trailing target dims are static
    and equal the bias's shape, whose size is the MatMul's output width, so the reshape
    splits exactly the last axis into the bias's dims (row-major)."""
    kernel_width = None
    for arg in matmul.args[1:]:
        if isinstance(arg, torch.fx.Node) and arg.op == "get_attr":
            owner, _, attr = str(arg.target).rpartition(".")
            kernel_width = int(slot_tensor(module, Slot(owner, attr)).shape[-1])
    if kernel_width is None or bias.numel() != kernel_width:
        return False
    if through is matmul:
        return bias.dim() == 1
    target = getattr(module.get_submodule(str(through.target)), "shape", None)
    if not isinstance(target, tuple) or len(target) < bias.dim():
        return False
    trailing = target[len(target) - bias.dim() :]
    return all(isinstance(d, int) for d in trailing) and tuple(trailing) == tuple(bias.shape)
