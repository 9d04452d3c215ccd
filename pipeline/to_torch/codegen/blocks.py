"""Repeated blocks of the graph, written once as an ``nn.Module`` class.

A block is a run of consecutive graph nodes that belong to one repeated Keras unit
(``block_3_expand``, ``block_3_depthwise``... → ``block_3``): the layer names are only the
hint that proposes where a block starts and ends (:func:`block_key`).  Structure decides
which blocks are of one kind: two blocks are the same kind when their ``forward`` code,
written with the block's own attribute names, is the same text, and their ``__init__``
code differs only in literal numbers (channels, strides, ...), which become the class's
``__init__`` arguments (:class:`InitTemplate`).  Kinds whose ``forward`` differs by one or
two statements that pass their input through (a stride-2 block's pad, a residual add) are
merged into one class with a flag per statement (:func:`merge_kinds`).

This module is the pure part: keys, segments, templates, merging.  Writing each block's
code is :mod:`pipeline.to_torch.codegen.emit`'s job.
"""

from __future__ import annotations

import ast
import copy
import inspect
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from torch import nn

_BLOCK = re.compile(r"(?:block|layer|stage)_?\d+[a-z]?(?=_|$)", re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MIN_STATEMENTS = 3
"""A block of fewer statements stays inline: a class would not make it shorter."""


def block_key(layers: Sequence[str]) -> str | None:
    """The repeated unit a node's Keras layer path (outermost first) names, or None:
    the layer name up to its last ``block_N`` / ``layer_N`` / ``stage_N`` part
    (``block_3_expand_BN`` → ``block_3``, ``conv2_block1_1_conv`` → ``conv2_block1``,
    ``transformer_layer_0`` → ``transformer_layer_0``)."""
    for layer in layers:
        matches = list(_BLOCK.finditer(layer))
        if matches:
            return layer[: matches[-1].end()]
    return None


def local_name(name: str, key: str) -> str:
    """``name`` (a layer's, or an attribute path's first part) inside the block ``key``:
    the key's prefix dropped (``block_3_expand_BN`` → ``expand_BN``), and a leading layer
    number moved behind (ResNet's ``conv2_block1_1_conv`` → ``conv1``, as in torchvision);
    ``name`` itself when it is not in the block."""
    prefix = f"{key}_"
    if not name.lower().startswith(prefix.lower()) or len(name) == len(prefix):
        return name
    return re.sub(r"^(\d+)_(\w+)$", r"\2\1", name[len(prefix) :])


@dataclass
class Segment:
    """Consecutive computed nodes (graph order) of one block key."""

    key: str
    nodes: list[int]
    """Indices of the computed nodes, in graph order."""


def segments(keys: Sequence[str | None], computed: Sequence[bool]) -> list[Segment]:
    """The computed nodes of each key (``computed[i]``; constants and weights are
    placed by their readers later).  A keyless node between two nodes of one key (a
    transpose tf2onnx inserted) belongs to that key."""
    indices = [i for i, c in enumerate(computed) if c]
    filled: dict[int, str | None] = {i: keys[i] for i in indices}
    for pos, i in enumerate(indices):
        if filled[i] is not None:
            continue
        before = next((keys[j] for j in reversed(indices[:pos]) if keys[j] is not None), None)
        after = next((keys[j] for j in indices[pos + 1 :] if keys[j] is not None), None)
        if before is not None and before == after:
            filled[i] = before
    # Every node of a key, wherever tf2onnx put it (a layer's mask preparation may sit
    # before the previous layer): whether the set is one block is the caller's check.
    found: dict[str, Segment] = {}
    for i in indices:
        key = filled[i]
        if key is not None:
            found.setdefault(key, Segment(key, [])).nodes.append(i)
    return list(found.values())


def class_name(key: str, model_prefix: str) -> str:
    """The class name of a block kind from one of its keys: numbers dropped, CamelCase
    (``block_3`` → ``Block``, ``conv2_block1`` → ``ConvBlock``)."""
    if model_prefix and key.lower().startswith(model_prefix.lower() + "_"):
        key = key[len(model_prefix) + 1 :]
    words = [re.sub(r"\d+[a-z]?$", "", w) for w in re.split(r"[^0-9A-Za-z]+", key)]
    words = [re.sub(r"\d+", "", w) for w in words]
    name = "".join(w[:1].upper() + w[1:] for w in words if w)
    return name or "Block"


# ------------------------------------------------------------------ __init__ templates


@dataclass
class Leaf:
    """A literal in ``__init__`` source: where it is and its value in each block."""

    slot: str
    """The attribute it configures (``expand``)."""
    argument: str
    """The argument it is (``out_channels``, ``stride``; ``size`` inside a tensor)."""
    values: tuple[str, ...]


@dataclass
class InitTemplate:
    """``__init__`` lines of every block of one kind, with the literals that differ made
    arguments."""

    lines: list[str]
    """The class's ``__init__`` body (after ``super().__init__()``)."""
    arguments: list[str]
    """``name: type`` of each ``__init__`` argument."""
    calls: list[list[str]]
    """Per block: the argument values, in order."""


def _is_leaf(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return not isinstance(node.value, str)
    if isinstance(node, ast.UnaryOp):
        return _is_leaf(node.operand)
    if isinstance(node, ast.Tuple):
        return all(_is_leaf(e) for e in node.elts)
    return False


def _nn_class(node: ast.AST) -> type | None:
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "nn"
    ):
        found = getattr(nn, node.attr, None)
        return found if isinstance(found, type) else None
    return None


def _nn_calls(tree: ast.AST) -> Iterator[tuple[ast.Call, type]]:
    """Every ``nn.X(...)`` call in ``tree`` with its class."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            cls = _nn_class(node.func)
            if cls is not None:
                yield node, cls


def _with_defaults(tree: ast.AST) -> None:
    """Every ``nn.X(...)`` call gets each literal default it leaves out as a keyword, so two
    blocks that spell a default differently (``stride=2`` / nothing) line up."""
    for node, cls in _nn_calls(tree):
        params = list(inspect.signature(cls).parameters.values())[len(node.args) :]
        given = {k.arg for k in node.keywords}
        for param in params:
            default = param.default
            if param.name in given or default is inspect.Parameter.empty:
                continue
            if isinstance(default, bool | int | float | str) and default is not None:
                node.keywords.append(ast.keyword(param.name, ast.Constant(default)))
        order = list(inspect.signature(cls).parameters)
        node.keywords.sort(key=lambda k: order.index(k.arg) if k.arg in order else len(order))


def _argument_names(call: ast.Call) -> list[str]:
    cls = _nn_class(call.func)
    if cls is None:
        return ["size"] * len(call.args)
    names = [p for p in inspect.signature(cls).parameters if p != "self"]
    return [names[i] if i < len(names) else "size" for i in range(len(call.args))]


def _collect(node: ast.AST, slot: str, argument: str, out: list[tuple[ast.AST, str, str]]) -> None:
    if _is_leaf(node):
        out.append((node, slot, argument))
        return
    if isinstance(node, ast.Call):
        _collect(node.func, slot, argument, out)
        for arg, name in zip(node.args, _argument_names(node), strict=True):
            _collect(arg, slot, name, out)
        for keyword in node.keywords:
            _collect(keyword.value, slot, keyword.arg or argument, out)
        return
    for child in ast.iter_child_nodes(node):
        _collect(child, slot, argument, out)


def _slot(statement: ast.stmt) -> str:
    target: ast.AST | None = None
    if isinstance(statement, ast.Assign):
        target = statement.targets[0]
    elif isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
        target = statement.value.func
    parts: list[str] = []
    while isinstance(target, ast.Attribute | ast.Call):
        if isinstance(target, ast.Attribute):
            parts.append(target.attr)
            target = target.value
        else:
            target = target.func
    names = [p for p in reversed(parts) if p not in ("register_buffer", "requires_grad_")]
    return names[0] if names else "value"


class TemplateMismatch(Exception):
    """Blocks whose ``__init__`` differ in more than literals."""


def _short_argument(argument: str) -> str:
    name = argument.removeprefix("out_")
    return {"num_features": "channels", "normalized_shape": "channels", "embedding_dim": "dim"}.get(
        name, name
    )


def _type(values: Sequence[str]) -> str:
    kinds = {type(ast.literal_eval(v)).__name__ for v in values}
    if kinds <= {"bool"}:
        return "bool"
    if kinds <= {"int"}:
        return "int"
    if kinds <= {"int", "float"}:
        return "float"
    return "tuple[int, ...]" if kinds <= {"tuple"} else "object"


def init_template(inits: Sequence[Sequence[str]]) -> InitTemplate:
    """Parameterise the ``__init__`` bodies ``inits`` (one per block, ``super().__init__()``
    left out): literals equal in every block stay, the others become arguments named after
    the constructor argument they are (``channels``, ``stride``; with the attribute's name
    where two would clash: ``expand_channels``).  Raises :class:`TemplateMismatch` when the
    bodies differ in more than literals."""
    trees = [ast.parse("\n".join(lines)) for lines in inits]
    for tree in trees:
        _with_defaults(tree)
    collected: list[list[tuple[ast.AST, str, str]]] = []
    for tree in trees:
        leaves: list[tuple[ast.AST, str, str]] = []
        for statement in tree.body:
            _collect(statement, _slot(statement), "value", leaves)
        collected.append(leaves)
    skeletons = {_skeleton(tree) for tree in trees}
    if len(skeletons) != 1 or len({len(c) for c in collected}) != 1:
        raise TemplateMismatch("blocks differ in more than literals")
    found = [
        Leaf(slot, argument, tuple(ast.unparse(c[i][0]) for c in collected))
        for i, (_, slot, argument) in enumerate(collected[0])
    ]
    # One argument per distinct column of values (expand's out_channels = depthwise's groups).
    columns: dict[tuple[str, ...], list[int]] = {}
    for i, leaf in enumerate(found):
        if len(set(leaf.values)) > 1:
            columns.setdefault(leaf.values, []).append(i)
    first = {values: found[idx[0]] for values, idx in columns.items()}
    wanted = {values: _short_argument(leaf.argument) for values, leaf in first.items()}
    counts: dict[str, int] = {}
    for name in wanted.values():
        counts[name] = counts.get(name, 0) + 1
    names: dict[tuple[str, ...], str] = {}
    for values, name in wanted.items():
        if counts[name] > 1 and not name.startswith("in_"):
            name = f"{first[values].slot.lower()}_{name}"
        base, n = name, 2
        while name in names.values() or name in ("self", "super"):
            name, n = f"{base}_{n}", n + 1
        names[values] = name
    template = trees[0]
    for i, (node, _, _) in enumerate(collected[0]):
        values = found[i].values
        if values in names:
            _replace(template, node, ast.Name(names[values], ast.Load()))
    _drop_defaults(template)
    return InitTemplate(
        lines=[ast.unparse(s) for s in template.body],
        arguments=[f"{name}: {_type(values)}" for values, name in names.items()],
        calls=[[values[b] for values in names] for b in range(len(inits))],
    )


def _skeleton(tree: ast.AST) -> str:
    masked = copy.deepcopy(tree)
    for node in ast.walk(masked):
        for name, value in ast.iter_fields(node):
            if isinstance(value, ast.AST) and _is_leaf(value):
                setattr(node, name, ast.Name("_", ast.Load()))
            elif isinstance(value, list):
                setattr(
                    node,
                    name,
                    [
                        ast.Name("_", ast.Load()) if isinstance(v, ast.expr) and _is_leaf(v) else v
                        for v in value
                    ],
                )
    return ast.dump(masked)


def _replace(tree: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for node in ast.walk(tree):
        for name, value in ast.iter_fields(node):
            if value is old:
                setattr(node, name, new)
            elif isinstance(value, list) and any(v is old for v in value):
                setattr(node, name, [new if v is old else v for v in value])


def _drop_defaults(tree: ast.AST) -> None:
    """Keywords still at their literal default go again (``stride=1``)."""
    for node, cls in _nn_calls(tree):
        params = inspect.signature(cls).parameters
        kept = []
        for keyword in node.keywords:
            param = params.get(keyword.arg or "")
            if (
                param is not None
                and isinstance(keyword.value, ast.Constant)
                and type(keyword.value.value) is type(param.default)
                and keyword.value.value == param.default
            ):
                continue
            kept.append(keyword)
        node.keywords = kept


# ------------------------------------------------------------------ optional statements


@dataclass
class Kind:
    """Blocks written by one class: ``forward`` lines and, once :func:`finish` placed them,
    the flags of its optional statements and each member's flag values."""

    forward: list[str]
    members: list[int]
    """Indices of the blocks (into the caller's list)."""
    inserts: list[tuple[int, str, str]] = field(default_factory=list)
    """Optional statements: (position in ``forward``, statement, flag)."""
    member_flags: list[set[str]] = field(default_factory=list)
    """Per member: the flags that are on."""
    flags: list[str] = field(default_factory=list)
    flag_values: list[list[bool]] = field(default_factory=list)


def _assigned(line: str) -> str | None:
    match = re.match(r"^([A-Za-z_]\w*) = ", line)
    return match.group(1) if match else None


def _names(text: str) -> set[str]:
    return {m.group(0) for m in re.finditer(r"(?<![.\w])[A-Za-z_]\w*", text)}


def _rename(line: str, old: str, new: str) -> str:
    return re.sub(rf"(?<![.\w]){re.escape(old)}\b", new, line)


def _without(
    lines: Sequence[str], index: int, params: Sequence[str]
) -> tuple[list[str], str] | None:
    """``lines`` without statement ``index`` when it passes one local value through
    (``v = f(u, <params/literals>)``, ``u`` not read again): later reads of ``v`` read
    ``u``.  Returns the lines and the statement rewritten as ``u = f(u, ...)``."""
    line = lines[index]
    target = _assigned(line)
    if target is None or line.startswith(" "):
        return None
    expression = line.split(" = ", 1)[1]
    earlier = {_assigned(x) for x in lines[:index]} - {None}
    computed = [n for n in _names(expression) if n in earlier]
    inputs = [n for n in _names(expression) if n in params]
    # A residual add of a block input and a local value passes the local value through.
    if len(computed) == 1:
        through = computed[0]
    elif not computed and len(inputs) == 1:
        through = inputs[0]
    else:
        return None
    later = lines[index + 1 :]
    if any(through in _names(x) for x in later):
        return None
    rewritten = f"{through} = {expression}"
    rest = list(later)
    for i, x in enumerate(later):  # reads of ``target`` until it is bound again
        if _assigned(x) == target:
            left, right = x.split(" = ", 1)
            rest[i] = f"{left} = {_rename(right, target, through)}"
            break
        rest[i] = _rename(x, target, through)
    return [*lines[:index], *rest], rewritten


def _reductions(
    lines: Sequence[str], params: Sequence[str]
) -> dict[tuple[str, ...], list[tuple[int, str]]]:
    """Every text ``lines`` becomes without up to two pass-through statements, with the
    statements that turn it back into ``lines`` (position in the reduced text, statement)."""
    found: dict[tuple[str, ...], list[tuple[int, str]]] = {tuple(lines): []}
    for i in range(len(lines)):
        one = _without(lines, i, params)
        if one is None:
            continue
        found.setdefault(tuple(one[0]), [(i, one[1])])
        for j in range(i, len(one[0])):
            two = _without(one[0], j, params)
            if two is not None:
                found.setdefault(tuple(two[0]), [(i, one[1]), (j, two[1])])
    return found


def init_skeleton(lines: Sequence[str]) -> str:
    """``__init__`` source with its literals masked (and defaults spelled out): blocks whose
    skeletons are equal can share a class (:func:`init_template`)."""
    tree = ast.parse("\n".join(lines))
    _with_defaults(tree)
    return _skeleton(tree)


def merge_kinds(
    forwards: Sequence[Sequence[str]],
    params: Sequence[Sequence[str]],
    skeletons: Sequence[str] | None = None,
) -> list[Kind]:
    """Group blocks by ``forward`` text (``forwards[i]``, whose arguments are
    ``params[i]``) and ``__init__`` skeleton (:func:`init_skeleton`); then merge groups that become the same text (their core) after removing
    up to two pass-through statements each (:func:`_without`: a stride-2 block's pad, a
    residual add): one class, with a flag per removed statement.  The kinds come back
    finished (:func:`finish`)."""
    skeletons = skeletons or [""] * len(forwards)
    groups: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for i, lines in enumerate(forwards):
        groups.setdefault((skeletons[i], tuple(lines)), []).append(i)
    reductions = {g: _reductions(g[1], params[members[0]]) for g, members in groups.items()}
    merged: list[tuple[list[tuple[str, tuple[str, ...]]], tuple[str, ...]]] = []
    for text in sorted(groups, key=lambda t: -len(groups[t])):  # the most common first
        for index, (texts, _) in enumerate(merged):
            if texts[0][0] != text[0]:
                continue
            common = set(reductions[text]).intersection(*(reductions[t] for t in texts))
            if common:
                core = max(common, key=len)
                merged[index] = ([*texts, text], core)
                break
        else:
            merged.append(([text], text[1]))
    kinds = []
    for texts, core in merged:
        kind = Kind(list(core), [])
        for text in texts:
            on: set[str] = set()
            for position, statement in reductions[text][core]:
                flag = next(
                    (f for p, s, f in kind.inserts if p == position and s == statement), None
                )
                if flag is None:
                    flag = _flag_name(statement, [f for _, _, f in kind.inserts])
                    kind.inserts.append((position, statement, flag))
                on.add(flag)
            kind.members.extend(groups[text])
            kind.member_flags.extend(set(on) for _ in groups[text])
        kinds.append(finish(kind))
    return kinds


def _flag_name(statement: str, taken: Sequence[str]) -> str:
    expression = statement.split(" = ", 1)[1]
    if re.fullmatch(r"\w+ \+ \w+", expression):
        name = "residual"
    else:
        call = re.search(r"(?:^|\.)(\w+)\(", expression)  # F.pad( / x.permute(
        name = f"use_{call.group(1)}" if call else "use_step"
    base, n = name, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name


def finish(kind: Kind) -> Kind:
    """``kind`` with its optional statements placed (``if self.<flag>:``) and per member a
    value for every flag."""
    inserts = sorted(kind.inserts, key=lambda x: x[0])
    kind.flags = [f for _, _, f in inserts]
    kind.flag_values = [[f in on for f in kind.flags] for on in kind.member_flags]
    by_position: dict[int, list[tuple[str, str]]] = {}
    for position, statement, flag in inserts:
        by_position.setdefault(position, []).append((statement, flag))
    lines: list[str] = []
    for i in range(len(kind.forward) + 1):
        for statement, flag in by_position.get(i, []):
            lines.extend([f"if self.{flag}:", f"    {statement}"])
        if i < len(kind.forward):
            lines.append(kind.forward[i])
    kind.forward = lines
    return kind


# ------------------------------------------------------------------ literals in forward

_INT = re.compile(r"(?<![\w.])\d+(?![\w.])")
_HOLE = "\x00"


def mask_literals(lines: Sequence[str]) -> tuple[tuple[str, ...], list[str]]:
    """``lines`` with their integer literals taken out (``reshape(-1, 96)`` →
    ``reshape(-1, ␀)``), and the literals in order."""
    values: list[str] = []
    masked = []
    for line in lines:
        values.extend(_INT.findall(line))
        masked.append(_INT.sub(_HOLE, line))
    return tuple(masked), values


def hole_values(forward: Sequence[str], literals: Sequence[str], on: set[str]) -> list[str | None]:
    """One block's literals (``literals``, from :func:`mask_literals` of its own ``forward``)
    placed in the holes of its kind's masked ``forward``: None in the holes of the optional
    statements it does not run (flags not in ``on``).  Raises :class:`TemplateMismatch`
    when the counts disagree."""
    values = iter(literals)
    placed: list[str | None] = []
    skipped = False
    try:
        for line in forward:
            flag = re.fullmatch(r"if self\.(\w+):", line)
            if flag:
                skipped = flag.group(1) not in on
                continue
            holes = line.count(_HOLE)
            if skipped and line.startswith(" "):
                placed.extend([None] * holes)
            else:
                placed.extend(next(values) for _ in range(holes))
            skipped = False
    except StopIteration:
        raise TemplateMismatch("a block has fewer literals than its kind") from None
    if next(values, None) is not None:
        raise TemplateMismatch("a block has more literals than its kind")
    return placed


def fill_literals(masked: Sequence[str], fills: Sequence[str]) -> list[str]:
    """``masked`` lines with their holes filled by ``fills``, in order."""
    values = iter(fills)
    return [re.sub(_HOLE, lambda _: next(values), line) for line in masked]
