"""Clean-ups of the imported graph before it is written out, each one exact.

- copies (onnx2torch's ``OnnxCopyIdentity`` on outputs), ``nn.Identity`` and ``nn.Dropout``
  (inference) disappear;
- an ``nn.Sequential(pad, conv)`` (onnx2torch's asymmetric-padding convolution) becomes a pad
  statement and the convolution at the Sequential's path (``Conv1.1.weight`` →
  ``Conv1.weight``);
- a recurrent module whose final states nothing reads returns ``Y`` alone, and when ``Y`` is
  only taken apart again into torch's own output (squeezing the one direction, or
  concatenating the two directions' halves), the module becomes
  :class:`~pipeline.to_torch.ops.recurrent.RecurrentSequence`, which returns torch's output
  ``(seq, batch, dirs * hidden)`` directly;
- a Reshape whose target has one run-time entry (the batch) writes it as ``-1``;
- a 2-D weight read only by row lookups (Keras ``Embedding``: ONNX ``Gather`` on axis 0)
  becomes ``nn.Embedding`` (``embedding.embeddings`` → ``embedding.weight``);
- chains of transposes are composed into one, and a transpose that permutes nothing goes.

Each pass edits the graph module in place and records where tensors moved in ``renames``
(old state-dict key → new one).
"""

from __future__ import annotations

import operator

import torch
from onnx2torch.node_converters.concat import OnnxConcat
from onnx2torch.node_converters.gather import OnnxGather
from onnx2torch.node_converters.identity import OnnxCopyIdentity
from onnx2torch.node_converters.squeeze import OnnxSqueezeStaticAxes
from onnx2torch.node_converters.transpose import OnnxTranspose
from torch import nn

from pipeline.to_torch.ops.recurrent import OnnxRecurrent, RecurrentSequence
from pipeline.to_torch.ops.reshape import StaticReshape
from pipeline.to_torch.ops.slice import StaticSlice

_PASS_THROUGH = (OnnxCopyIdentity, nn.Identity, nn.Dropout)


def _module(gm: torch.fx.GraphModule, node: torch.fx.Node) -> nn.Module | None:
    if node.op != "call_module":
        return None
    return gm.get_submodule(str(node.target))


def drop_copies(gm: torch.fx.GraphModule) -> None:
    """Replace copies and inference no-ops by their input."""
    for node in list(gm.graph.nodes):
        if isinstance(_module(gm, node), _PASS_THROUGH) and len(node.args) == 1:
            source = node.args[0]
            assert isinstance(source, torch.fx.Node)
            node.replace_all_uses_with(source)
            gm.graph.erase_node(node)


def _set_module(gm: torch.fx.GraphModule, path: str, module: nn.Module) -> None:
    parent, _, attr = path.rpartition(".")
    owner = gm.get_submodule(parent) if parent else gm
    setattr(owner, attr, module)


def unwrap_sequentials(gm: torch.fx.GraphModule, renames: dict[str, str]) -> None:
    """``nn.Sequential`` calls become one call per child; the child that holds weights takes
    the Sequential's path, the others (stateless) sit beside it."""
    for node in list(gm.graph.nodes):
        sequential = _module(gm, node)
        if not isinstance(sequential, nn.Sequential):
            continue
        path = str(node.target)
        children = list(sequential.named_children())
        stateful = [name for name, child in children if any(True for _ in child.state_dict())]
        if len(stateful) > 1:
            continue
        value: torch.fx.Node = node.args[0]
        with gm.graph.inserting_before(node):
            for name, child in children:
                if name in stateful:
                    _set_module(gm, path, child)
                    for key in child.state_dict():
                        renames[f"{path}.{name}.{key}"] = f"{path}.{key}"
                    target = path
                else:
                    target = f"{path}/{type(child).__name__}"
                    gm.add_submodule(target, child)
                value = gm.graph.call_module(target, (value,))
        node.replace_all_uses_with(value)
        gm.graph.erase_node(node)
        if not stateful:
            delattr(gm, path)


def recurrent_outputs(gm: torch.fx.GraphModule) -> None:
    """A recurrent module read only through ``[0]`` (its ``Y``) returns ``Y`` directly."""
    for node in list(gm.graph.nodes):
        module = _module(gm, node)
        if not isinstance(module, OnnxRecurrent) or len(module.wanted) == 1:
            continue
        users = list(node.users)
        if not all(u.op == "call_function" and u.target is operator.getitem for u in users):
            continue
        if any(u.args[1] != 0 for u in users):
            continue
        module.wanted = (True,)
        for user in users:
            user.replace_all_uses_with(node)
            gm.graph.erase_node(user)


def _squeezes_axis_1(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    module = _module(gm, node)
    return isinstance(module, OnnxSqueezeStaticAxes) and list(module.axes or []) == [1]


def _direction_halves(gm: torch.fx.GraphModule, y: torch.fx.Node) -> torch.fx.Node | None:
    """The Concat of ``Y[:, 0]`` and ``Y[:, 1]`` on the last axis, if that is all ``Y``
    feeds (tf2onnx's form of a Bidirectional layer's concatenated output)."""
    halves: dict[int, torch.fx.Node] = {}
    for user in y.users:
        module = _module(gm, user)
        if not isinstance(module, StaticSlice) or len(user.args) != 1 or module.flip_dims:
            return None
        (axis_slice,) = module.slices
        start, end = axis_slice.start, axis_slice.end
        if axis_slice.axis != 1 or axis_slice.step != 1 or start not in (0, 1) or end != start + 1:
            return None
        squeezes = list(user.users)
        if len(squeezes) != 1 or not _squeezes_axis_1(gm, squeezes[0]):
            return None
        halves[int(start)] = squeezes[0]
    if sorted(halves) != [0, 1]:
        return None
    concats = {c for half in halves.values() for c in half.users}
    if len(concats) != 1:
        return None
    concat = concats.pop()
    module = _module(gm, concat)
    if not isinstance(module, OnnxConcat) or module.axis not in (2, -1):
        return None
    return concat if list(concat.args) == [halves[0], halves[1]] else None


def recurrent_sequences(gm: torch.fx.GraphModule) -> None:
    """Time-major recurrent modules whose ``Y`` is only reshaped back into torch's output
    become :class:`RecurrentSequence` (see the module docstring)."""
    for node in list(gm.graph.nodes):
        module = _module(gm, node)
        if not isinstance(module, OnnxRecurrent) or module.layout != 0 or len(node.args) != 1:
            continue
        if module.wanted != (True,):
            continue
        if module.rnn.bidirectional:
            replaced = _direction_halves(gm, node)
            if replaced is None:
                continue
        else:
            users = list(node.users)
            if not users or not all(_squeezes_axis_1(gm, u) for u in users):
                continue
            replaced = None
        _set_module(gm, str(node.target), RecurrentSequence(module.rnn, module.reverse))
        for user in [replaced] if replaced is not None else list(node.users):
            user.replace_all_uses_with(node)
        gm.graph.eliminate_dead_code()


def reshape_minus_one(gm: torch.fx.GraphModule) -> None:
    """A Reshape target with exactly one entry computed at run time (and no ``-1``) gets
    ``-1`` there: reshape infers the same size, and the shape no longer reads other tensors."""
    for node in gm.graph.nodes:
        module = _module(gm, node)
        if not isinstance(module, StaticReshape) or not module.sources:
            continue
        dynamic = [i for i, e in enumerate(module.shape) if not isinstance(e, int)]
        if len(dynamic) != 1 or -1 in module.shape:
            continue
        module.shape = tuple(-1 if i == dynamic[0] else e for i, e in enumerate(module.shape))
        module.sources = ()
        node.args = node.args[:1]


def _is_row_lookup(gm: torch.fx.GraphModule, user: torch.fx.Node, table: torch.fx.Node) -> bool:
    module = _module(gm, user)
    return (
        isinstance(module, OnnxGather)
        and module._axis == 0
        and user.args[0] is table
        and user.args[1] is not table
    )


def embeddings(gm: torch.fx.GraphModule, renames: dict[str, str]) -> None:
    """A 2-D weight that only ``Gather(axis=0)`` reads, alone in its container, becomes an
    ``nn.Embedding`` at the container's path.

    A table read in several places (a seq2seq model's token embedding, shared by encoder and
    decoder: several ``get_attr`` nodes of one target) becomes one ``nn.Embedding`` called at
    each lookup, so its gradient accumulates from every use."""
    reads: dict[str, list[torch.fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            reads.setdefault(str(node.target), []).append(node)
    for target, nodes in reads.items():
        owner_path, _, attr = target.rpartition(".")
        if not owner_path:
            continue
        owner = gm.get_submodule(owner_path)
        weight = getattr(owner, attr, None)
        if not isinstance(weight, nn.Parameter) or weight.dim() != 2:
            continue
        if list(owner.state_dict()) != [attr] or list(owner.children()):
            continue
        lookups = [(node, user) for node in nodes for user in node.users]
        if not lookups or not all(_is_row_lookup(gm, user, node) for node, user in lookups):
            continue
        embedding = nn.Embedding(weight.shape[0], weight.shape[1], dtype=weight.dtype)
        embedding.weight = weight
        _set_module(gm, owner_path, embedding)
        renames[target] = f"{owner_path}.weight"
        for _node, user in lookups:
            with gm.graph.inserting_before(user):
                call = gm.graph.call_module(owner_path, (user.args[1],))
            user.replace_all_uses_with(call)
            gm.graph.erase_node(user)
        for node in nodes:
            gm.graph.erase_node(node)


def compose_transposes(gm: torch.fx.GraphModule) -> None:
    """``x.permute(p).permute(q)`` (the first read by nothing else) → one permute; an
    identity permutation → ``x``."""
    for node in list(gm.graph.nodes):
        module = _module(gm, node)
        if not isinstance(module, OnnxTranspose) or module.perm is None:
            continue
        source = node.args[0]
        inner = _module(gm, source) if isinstance(source, torch.fx.Node) else None
        if isinstance(inner, OnnxTranspose) and inner.perm is not None and len(source.users) == 1:
            module.perm = [inner.perm[p] for p in module.perm]
            node.args = (source.args[0],)
            gm.graph.erase_node(source)
        if list(module.perm) == list(range(len(module.perm))):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)


def simplify(gm: torch.fx.GraphModule) -> dict[str, str]:
    """Run every clean-up on ``gm`` (in place); returns the state-dict renames."""
    renames: dict[str, str] = {}
    drop_copies(gm)
    unwrap_sequentials(gm, renames)
    recurrent_outputs(gm)
    recurrent_sequences(gm)
    reshape_minus_one(gm)
    embeddings(gm, renames)
    compose_transposes(gm)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return renames
