"""``--channels-first``: a generated model that takes and returns NCHW, as torchvision's do.

The imported graph takes Keras's channels-last images and converts them to channels first
itself (tf2onnx puts a Transpose, or a Reshape when there is one channel, in front of the
first convolution).  Here every image input (rank 4 or 5) gets a channels-first →
channels-last permute in front, and every image output one back; then the transposes that
now meet cancel:

- two permutes in a row compose into one, and an identity permutation disappears
  (:func:`pipeline.to_torch.codegen.simplify.compose_transposes`);
- a permute followed by a reshape back to the permute's input shape is no-op when the
  permute only moves dims of size 1 (the cnn's one-channel ``reshape(-1, 1, 28, 28)``);
- a permute in front of element-wise ops (activations; arithmetic with a constant, whose
  layout is permuted to match, e.g. ``Normalization``'s mean and variance) is moved after
  them, so it can meet the next one.

Whatever does not cancel stays and is counted in the report.
"""

from __future__ import annotations

import torch
from onnx2torch.node_converters.binary_math_operations import OnnxBinaryMathOperation
from onnx2torch.node_converters.transpose import OnnxTranspose
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from pipeline.to_torch.codegen.simplify import compose_transposes
from pipeline.to_torch.ops.reshape import StaticReshape

IMAGE_RANKS = (4, 5)

_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Tanh, nn.SiLU, nn.GELU, nn.Hardswish)


def to_channels_last(rank: int) -> list[int]:
    """The permutation NC... → N...C (``(0, 2, 3, 1)`` for rank 4)."""
    return [0, *range(2, rank), 1]


def to_channels_first(rank: int) -> list[int]:
    """The permutation N...C → NC... (``(0, 3, 1, 2)`` for rank 4)."""
    return [0, rank - 1, *range(1, rank - 1)]


def _meta(node: torch.fx.Node) -> TensorMetadata | None:
    meta = node.meta.get("tensor_meta")
    return meta if isinstance(meta, TensorMetadata) else None


def _insert_permute(
    gm: torch.fx.GraphModule, value: torch.fx.Node, perm: list[int], name: str
) -> torch.fx.Node:
    target = name
    n = 0
    while hasattr(gm, target):
        n += 1
        target = f"{name}_{n}"
    gm.add_submodule(target, OnnxTranspose(perm))
    return gm.graph.call_module(target, (value,))


def _order_preserving(perm: list[int], shape: torch.Size) -> bool:
    """Whether permuting by ``perm`` keeps the memory order (only size-1 dims move)."""
    moved = [p for p in perm if shape[p] != 1]
    return moved == sorted(moved)


def _drop_permute_reshape(gm: torch.fx.GraphModule) -> None:
    for node in list(gm.graph.nodes):
        module = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
        if not isinstance(module, StaticReshape) or len(node.args) != 1:
            continue
        source = node.args[0]
        if not isinstance(source, torch.fx.Node) or source.op != "call_module":
            continue
        permute = gm.get_submodule(str(source.target))
        before = source.args[0]
        if not isinstance(permute, OnnxTranspose) or not isinstance(before, torch.fx.Node):
            continue
        in_meta, out_meta = _meta(before), _meta(node)
        if in_meta is None or out_meta is None or in_meta.shape != out_meta.shape:
            continue
        if permute.perm is None or not _order_preserving(list(permute.perm), in_meta.shape):
            continue
        node.replace_all_uses_with(before)


def _constant_operand(
    gm: torch.fx.GraphModule, node: torch.fx.Node, source: torch.fx.Node
) -> torch.fx.Node | None:
    """The other operand of the binary op ``node`` when it is a constant read only there."""
    module = gm.get_submodule(str(node.target))
    if not isinstance(module, OnnxBinaryMathOperation) or module.broadcast:
        return None
    others = [a for a in node.args if a is not source]
    if len(node.args) != 2 or len(others) != 1 or not isinstance(others[0], torch.fx.Node):
        return None
    other = others[0]
    if other.op != "get_attr" or len(other.users) != 1:
        return None
    if not str(other.target).startswith("initializers.") or _is_parameter(gm, other):
        # Only onnx2torch's anonymous constants: a TF variable keeps the layout the
        # parameter table gives it.
        return None
    return other


def _is_parameter(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    owner, _, attr = str(node.target).rpartition(".")
    return attr in (gm.get_submodule(owner) if owner else gm)._parameters


def _permute_constant(gm: torch.fx.GraphModule, node: torch.fx.Node, perm: list[int]) -> bool:
    """Lay the constant ``node`` out so that ``c' .permute(perm)`` equals ``c``."""
    owner_path, _, attr = str(node.target).rpartition(".")
    owner = gm.get_submodule(owner_path) if owner_path else gm
    value = getattr(owner, attr)
    if value.dim() > len(perm):
        return False
    full = value.reshape((1,) * (len(perm) - value.dim()) + tuple(value.shape))
    inverse = [perm.index(i) for i in range(len(perm))]
    owner.register_buffer(attr, full.permute(inverse).contiguous())
    return True


def _sink_through_elementwise(gm: torch.fx.GraphModule) -> None:
    """``f(x.permute(p))`` → ``f(x).permute(p)`` for activations and for binary ops with a
    constant (whose layout is permuted to match)."""
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        module = gm.get_submodule(str(node.target))
        sources = [a for a in node.args if isinstance(a, torch.fx.Node) and a.op == "call_module"]
        source = next(
            (a for a in sources if isinstance(gm.get_submodule(str(a.target)), OnnxTranspose)),
            None,
        )
        if source is None or len(source.users) != 1:
            continue
        permute = gm.get_submodule(str(source.target))
        assert isinstance(permute, OnnxTranspose)
        if isinstance(module, _ELEMENTWISE) and len(node.args) == 1:
            pass
        else:
            constant = _constant_operand(gm, node, source)
            if (
                constant is None
                or permute.perm is None
                or not _permute_constant(gm, constant, list(permute.perm))
            ):
                continue
        # Swap the two nodes: the permute now follows the op.  `source` does not read
        # `node` yet when the uses are moved, so it is not among them.
        node.args = tuple(source.args[0] if a is source else a for a in node.args)
        node.replace_all_uses_with(source)
        source.args = (node,)
        node.append(source)


def channels_first(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> list[bool]:
    """Make ``gm`` (in place) take and return image tensors channels first.

    ``example_inputs`` are channels last, as the graph takes them now.  Returns, per input,
    whether it was changed (an image), so callers can lay their inputs out the same way.
    """
    ShapeProp(gm).propagate(*example_inputs)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    changed = []
    for placeholder in placeholders:
        meta = _meta(placeholder)
        rank = len(meta.shape) if meta is not None else 0
        changed.append(rank in IMAGE_RANKS)
        if rank not in IMAGE_RANKS:
            continue
        users = list(placeholder.users)
        with gm.graph.inserting_after(placeholder):
            permute = _insert_permute(gm, placeholder, to_channels_last(rank), "to_channels_last")
        for user in users:
            user.replace_input_with(placeholder, permute)
    output = next(n for n in gm.graph.nodes if n.op == "output")
    results = output.args[0]
    values = list(results) if isinstance(results, tuple | list) else [results]
    for i, value in enumerate(values):
        meta = _meta(value) if isinstance(value, torch.fx.Node) else None
        if meta is None or len(meta.shape) not in IMAGE_RANKS:
            continue
        with gm.graph.inserting_before(output):
            values[i] = _insert_permute(
                gm, value, to_channels_first(len(meta.shape)), "to_channels_first"
            )
    output.args = (tuple(values) if isinstance(results, tuple | list) else values[0],)
    first = [
        x.permute(to_channels_first(x.dim())).contiguous() if image else x
        for x, image in zip(example_inputs, changed, strict=True)
    ]
    for _ in range(3):  # each round lets a moved permute meet the next one
        gm.recompile()
        ShapeProp(gm).propagate(*first)
        _sink_through_elementwise(gm)
        compose_transposes(gm)
        _drop_permute_reshape(gm)
        gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return changed
