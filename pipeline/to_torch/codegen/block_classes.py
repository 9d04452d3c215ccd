"""Write the repeated blocks of a graph as classes (:mod:`~pipeline.to_torch.codegen.blocks`
finds them): each block is cut out of the graph as a graph module of its own, written by
the same writer as the whole model (with its attributes named relative to the block:
``block_3_expand`` → ``expand``), and blocks of one kind become one class whose instances
sit in an ``nn.ModuleList`` of the generated model (``blocks.2.expand.weight``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from onnx2torch.node_converters.constant import OnnxConstant
from torch import nn
from torch.fx.passes.shape_prop import TensorMetadata

from pipeline.to_torch.codegen import blocks
from pipeline.to_torch.codegen.naming import sanitize, snake
from pipeline.to_torch.ops.loop import OnnxLoop

if TYPE_CHECKING:  # the writer imports this module
    from pipeline.to_torch.codegen.emit import _Writer


@dataclass
class _Cut:
    """One block cut out of the model's graph and written alone."""

    key: str
    nodes: list[torch.fx.Node]
    inputs: list[torch.fx.Node]
    output: torch.fx.Node
    params: list[str]
    forward: list[str]
    init: list[str]
    writer: Any
    originals: dict[str, str]
    """The block graph module's paths → the model graph's."""


@dataclass
class BlockCall:
    """What the model's ``forward`` writes for a run of blocks of one kind."""

    attribute: str
    start: int
    stop: int
    inputs: list[torch.fx.Node]
    """The first block's inputs."""
    output: torch.fx.Node
    """The last block's output."""
    loop: bool


@dataclass
class BlockPlan:
    """The block classes of a model and how its ``forward`` calls them."""

    classes: list[str] = field(default_factory=list)
    lists: dict[str, list[str]] = field(default_factory=dict)
    """``nn.ModuleList`` attribute → its ``__init__`` lines."""
    skipped: set[torch.fx.Node] = field(default_factory=set)
    """Nodes a block call replaces."""
    calls: dict[torch.fx.Node, BlockCall] = field(default_factory=dict)
    """The node at which each call is written (its run's last node) → the call."""
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    renames: dict[str, str] = field(default_factory=dict)
    held: list[str] = field(default_factory=list)
    """Model graph paths (modules and tensors) the blocks hold."""
    summary: list[dict[str, Any]] = field(default_factory=list)
    """Per class: name, blocks, lines."""


def _free(writer: _Writer, node: torch.fx.Node) -> bool:
    if node.op == "get_attr":
        return True
    return node.op == "call_module" and isinstance(
        writer.gm.get_submodule(str(node.target)), OnnxConstant
    )


def _slot(target: str, key: str) -> str:
    parts = target.split(".")
    skey = sanitize(key)
    if skey in parts[:-1]:  # the block is a layer (nested in others): its own attributes
        parts = parts[parts.index(skey) + 1 :]
    else:
        parts[0] = blocks.local_name(parts[0], skey)
    return ".".join(parts)


def _put(root: nn.Module, path: str, value: nn.Module | torch.Tensor) -> None:
    owner, _, name = path.rpartition(".")
    holder = root
    for part in owner.split(".") if owner else []:
        if not hasattr(holder, part):
            holder.add_module(part, nn.Module())
        holder = getattr(holder, part)
    if isinstance(value, nn.Module):
        holder.add_module(name, value)
    elif isinstance(value, nn.Parameter):
        holder.register_parameter(name, value)
    else:
        holder.register_buffer(name, value)


def _args(value: object) -> list[torch.fx.Node]:
    if isinstance(value, torch.fx.Node):
        return [value]
    if isinstance(value, list | tuple):
        return [n for v in value for n in _args(v)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _args(v)]
    return []


def _reaches(sources: Sequence[torch.fx.Node], targets: set[torch.fx.Node]) -> bool:
    """Whether a node of ``targets`` is computed from ``sources``."""
    seen: set[torch.fx.Node] = set(sources)
    stack = list(sources)
    while stack:
        for user in stack.pop().users:
            if user in targets:
                return True
            if user not in seen:
                seen.add(user)
                stack.append(user)
    return False


def _pullable(writer: _Writer, computed: Sequence[bool]) -> set[torch.fx.Node]:
    """Ops without weights computed from the model's inputs and constants alone (a padding
    mask's preparation, a kernel's reshape): a block that reads one recomputes it, so
    blocks that tf2onnx made share it stay alike."""
    found: set[torch.fx.Node] = set()
    for node, is_computed in zip(writer.nodes, computed, strict=True):
        if not is_computed:
            continue
        if node.op == "call_module":
            module = writer.gm.get_submodule(str(node.target))
            if any(True for _ in module.state_dict()) or isinstance(module, OnnxLoop):
                continue
        if all(
            a.op == "placeholder" or _free(writer, a) or a in found
            for a in _args(node.args) + _args(node.kwargs)
        ):
            found.add(node)
    return found


def _cut(writer: _Writer, segment: blocks.Segment, pullable: set[torch.fx.Node]) -> _Cut | None:
    """Cut ``segment`` out as a graph module and write it, or None when it is no block."""
    gm, nodes = writer.gm, writer.nodes
    inside = [nodes[i] for i in segment.nodes]
    members = set(inside)
    if len(inside) < blocks.MIN_STATEMENTS:
        return None
    inputs: list[torch.fx.Node] = []
    free: list[torch.fx.Node] = []
    pulled: list[torch.fx.Node] = []
    stack = list(inside)
    while stack:
        node = stack.pop(0)
        if node.op == "call_module" and isinstance(gm.get_submodule(str(node.target)), OnnxLoop):
            return None
        for arg in _args(node.args) + _args(node.kwargs):
            if arg in members or arg in pulled:
                continue
            if _free(writer, arg):
                if arg not in free:
                    free.append(arg)
            elif arg in pullable:  # recomputed in the block: a mask, a kernel's reshape
                pulled.append(arg)
                stack.append(arg)
            elif arg not in inputs:
                inputs.append(arg)
    own = members | set(pulled)
    for weight in free:  # a weight shared with code outside the block stays outside
        if weight.op == "get_attr" and any(u not in own for u in weight.users):
            return None
    outputs = [n for n in inside if any(u not in members for u in n.users)]
    if len(outputs) != 1 or not inputs or not isinstance(_meta(outputs[0]), TensorMetadata):
        return None
    output = outputs[0]
    if output is not inside[-1] or _reaches(inside, set(inputs)):
        return None  # not one step of the graph: an input depends on the block

    graph = torch.fx.Graph()
    root = nn.Module()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    params = ["x"]
    for extra in inputs[1:]:
        if extra.op == "placeholder":  # a model input keeps its name (padding_mask)
            base = writer.input_names[writer.placeholders.index(extra)]
        else:
            base = snake(writer._short(writer._base(extra)))
        name, n = base, 2
        while name in params:
            name, n = f"{base}_{n}", n + 1
        params.append(name)
    for name, node in zip(params, inputs, strict=True):
        placeholder = graph.placeholder(name)
        placeholder.meta = dict(node.meta)
        env[node] = placeholder
    originals: dict[str, str] = {}
    table: set[str] = set()
    for node in _canonical(output, own | set(free), inside):
        target = str(node.target)
        if node.op == "get_attr":
            owner, _, attr = target.rpartition(".")
            tensor = getattr(gm.get_submodule(owner) if owner else gm, attr)
            path = _slot(target, segment.key)
            if target in writer.table_names:
                table.add(path)
            _put(root, path, tensor)
        elif node.op == "call_module":
            module = gm.get_submodule(target)
            path = _slot(target, segment.key) if target in writer.attribute_targets else target
            _put(root, path, module)
        else:
            path = target
        if path in originals and originals[path] != target:
            return None
        originals[path] = target
        copied = graph.node_copy(node, lambda n: env[n])
        if node.op in ("get_attr", "call_module"):
            copied.target = path
        env[node] = copied
    graph.output(env[output])
    sub = torch.fx.GraphModule(root, graph)
    sub_writer = type(writer)(sub, table, params, writer.reader, writer.layer_classes)
    for param in sub_writer.input_names:
        sub_writer.names.reserve(param)
    sub_writer.model_prefix = writer.model_prefix
    sub_writer.block_prefix = sanitize(segment.key)
    sub_writer.layer_comments = False
    sub_writer.device_of = "x"
    # One file: helpers and custom classes are shared with the model's writer.
    sub_writer.helpers = writer.helpers
    sub_writer.helper_ops = writer.helper_ops
    sub_writer.classes = writer.classes
    try:
        forward = sub_writer.write_forward()
        init = sub_writer.write_init()[1:]
    except Exception:
        return None
    if sub_writer.missing or sub_writer.methods:
        return None
    return _Cut(segment.key, inside, inputs, output, params, forward, init, sub_writer, originals)


def _canonical(
    output: torch.fx.Node, members: set[torch.fx.Node], inside: Sequence[torch.fx.Node]
) -> list[torch.fx.Node]:
    """The block's nodes in an order that depends on its wiring alone: each node after its
    arguments, taken in argument order from the output back (two blocks that tf2onnx
    exported in different orders are written alike)."""
    order: list[torch.fx.Node] = []
    placed: set[torch.fx.Node] = set()
    stack: list[tuple[torch.fx.Node, bool]] = [(output, False)]
    while stack:
        node, expanded = stack.pop()
        if node in placed:
            continue
        if expanded:
            placed.add(node)
            order.append(node)
            continue
        stack.append((node, True))
        for arg in reversed(_args(node.args) + _args(node.kwargs)):
            if arg in members and arg not in placed:
                stack.append((arg, False))
    # Ops the output does not read (none in a well-formed block) keep their place at the end.
    return order + [n for n in inside if n not in placed]


def _meta(node: torch.fx.Node) -> object:
    return node.meta.get("tensor_meta")


def plan(writer: _Writer) -> BlockPlan:
    """Find the model's repeated blocks and write their classes (an empty plan when none
    repeats)."""
    nodes = writer.nodes
    computed = [n.op in ("call_module", "call_function") and not _free(writer, n) for n in nodes]
    pullable = _pullable(writer, computed)
    keys = [
        blocks.block_key(writer._layers_of(n)) if c and n not in pullable else None
        for n, c in zip(nodes, computed, strict=True)
    ]
    # A keyless op read only by one block's ops belongs to that block (tf2onnx's
    # reshapes around a Dense on a rank-3 input carry no layer name).
    for i in reversed(range(len(nodes))):
        node = nodes[i]
        if (
            computed[i]
            and keys[i] is None
            and node not in pullable
            and node.users
            and not writer._layers_of(node)
        ):
            found = {keys[writer.index[u]] for u in node.users}
            if len(found) == 1:
                keys[i] = found.pop()
    # Ops a block recomputes (a mask) belong to no block, even between two ops of one.
    segments = blocks.segments(
        keys, [c and n not in pullable for n, c in zip(nodes, computed, strict=True)]
    )
    cuts = [c for c in (_cut(writer, s, pullable) for s in segments) if c is not None]
    result = BlockPlan()
    if not cuts:
        return result
    skeletons = [blocks.init_skeleton(c.init) for c in cuts]
    # Blocks that differ only in integer literals of forward (a stage's channel count in a
    # reshape) are one kind: the literals are masked, and those that differ become arguments.
    masked = [blocks.mask_literals(c.forward) for c in cuts]
    kinds = blocks.merge_kinds([m[0] for m in masked], [c.params for c in cuts], skeletons)
    taken_classes: set[str] = {cls.__name__ for cls in writer.classes}
    taken_lists = set(writer.taken_tops)
    for kind in kinds:
        members = sorted(kind.members, key=lambda i: writer.index[cuts[i].output])
        if len(members) < 2:
            continue
        flag_of = dict(zip(kind.members, kind.flag_values, strict=True))
        try:
            template = blocks.init_template([cuts[i].init for i in members])
            holes = [
                blocks.hole_values(
                    kind.forward,
                    masked[i][1],
                    {f for f, on in zip(kind.flags, flag_of[i], strict=True) if on},
                )
                for i in members
            ]
        except blocks.TemplateMismatch:
            continue
        forward, extra = _forward_literals(kind.forward, template, holes)
        first = cuts[members[0]]
        name = blocks.class_name(first.key, writer.model_prefix)
        base, n = name, 2
        while name in taken_classes:
            name, n = f"{base}{n}", n + 1
        taken_classes.add(name)
        attribute = _plural(snake(name))
        base_attribute, n = attribute, 2
        while attribute in taken_lists:
            attribute, n = f"{base_attribute}_{n}", n + 1
        taken_lists.add(attribute)
        flags = kind.flags
        source = _class_source(name, flags, forward, extra, template, [cuts[i] for i in members])
        if len(members) == 2 and not _shorter(source, [cuts[i] for i in members]):
            taken_classes.discard(name)
            taken_lists.discard(attribute)
            continue
        result.classes.append(source)
        calls = []
        for position, i in enumerate(members):
            args = list(template.calls[position])
            args += [f"{f}=True" for f, on in zip(flags, flag_of[i], strict=True) if on]
            calls.append(f"    {name}({', '.join(args)}),  # {cuts[i].key}")
            _adopt(result, cuts[i], f"{attribute}.{position}")
        result.lists[attribute] = [f"self.{attribute} = nn.ModuleList([", *calls, "])"]
        _runs(result, attribute, [cuts[i] for i in members])
        result.summary.append({"class": name, "blocks": len(members), "flags": list(flags)})
    # What only the blocks read (a mask they recompute, their weights) is not written outside.
    read = {i for call in result.calls.values() for i in call.inputs}
    for node in reversed(nodes):
        if (
            node.op != "output"
            and node not in read
            and node.users
            and all(u in result.skipped for u in node.users)
        ):
            result.skipped.add(node)
    return result


def _shorter(source: str, cuts: Sequence[_Cut]) -> bool:
    """Whether the class, its list and the loop that runs it take fewer lines than the
    blocks written out.  Two small blocks stay inline when a class would make ``model.py``
    longer; from three blocks on the class stays (one edit for every block)."""
    inline = sum(len(c.forward) - 1 + len(c.init) for c in cuts)
    written = len(source.splitlines()) + 3 + len(cuts) + 2 + 3  # blank lines, list, loop
    return written < inline


def _forward_literals(
    masked: Sequence[str], template: blocks.InitTemplate, holes: Sequence[Sequence[str | None]]
) -> tuple[list[str], list[str]]:
    """``forward`` with the integer literals that differ between blocks (``holes``: per
    block, its value in each hole, None where it does not run the statement) read from
    attributes: an ``__init__`` argument with the same values where there is one
    (``self.channels``), else a new argument (added to ``template``).  Returns the lines and
    the arguments ``__init__`` must keep as attributes."""
    count = len(holes[0]) if holes else 0
    existing = [
        (tuple(call[j] for call in template.calls), argument.split(":")[0])
        for j, argument in enumerate(template.arguments)
    ]
    fills: list[str] = []
    kept: list[str] = []
    added = 0
    for index in range(count):
        column = [h[index] for h in holes]
        present = [v for v in column if v is not None]
        if len(set(present)) == 1:
            fills.append(present[0])
            continue
        name = next(
            (
                n
                for values, n in existing
                if all(v is None or v == w for v, w in zip(column, values, strict=True))
            ),
            None,
        )
        if name is None:
            added += 1
            name = f"size_{added}" if added > 1 else "size"
            filled = tuple(v if v is not None else present[0] for v in column)
            existing.append((filled, name))
            template.arguments.append(f"{name}: int")
            for call, value in zip(template.calls, filled, strict=True):
                call.append(value)
        if name not in kept:
            kept.append(name)
        fills.append(f"self.{name}")
    return blocks.fill_literals(masked, fills), kept


def _plural(name: str) -> str:
    return name if name.endswith("s") else f"{name}s"


def _adopt(result: BlockPlan, cut: _Cut, prefix: str) -> None:
    """The block's tensors in the model's state dict, renamed from the model graph's paths."""
    result.skipped.update(cut.nodes)
    for attribute in cut.writer.attributes.values():
        original = cut.originals.get(attribute.original, attribute.original)
        result.held.append(original)
        if attribute.module is not None:
            for key, value in attribute.module.state_dict().items():
                result.state[f"{prefix}.{attribute.path}.{key}"] = value
                result.renames[f"{original}.{key}"] = f"{prefix}.{attribute.path}.{key}"
        elif attribute.tensor is not None:
            result.state[f"{prefix}.{attribute.path}"] = attribute.tensor.detach()
            result.renames[original] = f"{prefix}.{attribute.path}"


def _runs(result: BlockPlan, attribute: str, cuts: Sequence[_Cut]) -> None:
    """One call per run of consecutive blocks that feed each other (a ``for`` loop)."""
    start = 0
    while start < len(cuts):
        stop = start + 1
        while stop < len(cuts) and _feeds(cuts[stop - 1], cuts[stop]):
            stop += 1
        last = cuts[stop - 1]
        result.calls[last.nodes[-1]] = BlockCall(
            attribute, start, stop, cuts[start].inputs, last.output, stop - start > 1
        )
        start = stop


def _feeds(before: _Cut, after: _Cut) -> bool:
    return (
        after.inputs[0] is before.output
        and after.inputs[1:] == before.inputs[1:]
        and all(u in after.nodes for u in before.output.users)
    )


def _class_source(
    name: str,
    flags: Sequence[str],
    forward: Sequence[str],
    kept: Sequence[str],
    template: blocks.InitTemplate,
    cuts: Sequence[_Cut],
) -> str:
    first, last = cuts[0].key, cuts[-1].key
    described = f"``{first}``" if len(cuts) == 1 else f"``{first}`` to ``{last}``"
    arguments = [*template.arguments, *(f"{flag}: bool = False" for flag in flags)]
    signature = ", ".join(["self", *arguments])
    if len(signature) > 70:  # one argument a line, as a formatter would
        signature = "".join(f"\n        {a}," for a in ["self", *arguments]) + "\n    "
    forward_args = ", ".join(f"{p}: torch.Tensor" for p in cuts[0].params)
    lines = [
        f"class {name}(nn.Module):",
        f'    """The repeated block of the Keras layers {described} ({len(cuts)} blocks)."""',
        "",
        f"    def __init__({signature}) -> None:",
        "        super().__init__()",
        *(f"        self.{a} = {a}" for a in [*flags, *kept]),
        *(f"        {line}" for line in template.lines),
        "",
        f"    def forward(self, {forward_args}) -> torch.Tensor:",
        *(f"        {line}" for line in forward),
    ]
    return "\n".join(re.sub(r"\s+$", "", line) for line in lines)
