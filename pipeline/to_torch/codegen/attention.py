"""Multi-head attention written as ``F.scaled_dot_product_attention``.

tf2onnx exports a Keras ``MultiHeadAttention`` (and keras-hub's attention layers) as some
twenty ops: the query, key and value projections reshaped to ``(batch, seq, heads, dim)``,
unsqueezed and permuted to rank 5 and back, ``q @ k^T``, a scale, a padding mask spelled
as ``m * s + (-1e9) * (1 - m)``, a softmax, the mask again, ``@ v`` and the way back.
:func:`rewrite` finds each such region around a softmax between two products and, when
the region computes ``scaled_dot_product_attention`` of its query, key and value tensors,
replaces it by one :class:`ScaledDotProductAttention` node, written as::

    q = query.transpose(1, 2)
    k = key.transpose(1, 2)
    v = value.transpose(1, 2)
    attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    x = attn.transpose(1, 2).flatten(2)

A constant lower-triangular mask becomes ``is_causal=True``; a float tensor added to the
scores (T5's relative position bias) SDPA's float ``attn_mask``; Keras 3's masked softmax,
which *sets* masked scores to a large negative number, is written out as ``masked_fill``,
softmax and one product (:class:`ScaledDotProductAttention` says why).

Structure only proposes the candidates (which tensors are the query, key, value and the
result; their layouts; a boolean mask); the values decide: the region and the candidate
are run on random tensors of the example shapes, on masks with some, all and no keys
masked (a row with every key masked is where the forms differ), and must agree in values
and gradients to float32 rounding.  The conversion's three-way comparison and gradient
check then prove the rewritten module like any other.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from onnx2torch.node_converters.binary_math_operations import OnnxBinaryMathOperation
from onnx2torch.node_converters.constant import OnnxConstant
from onnx2torch.node_converters.einsum import OnnxEinsum
from onnx2torch.node_converters.flatten import OnnxFlatten
from onnx2torch.node_converters.matmul import OnnxMatMul
from onnx2torch.node_converters.reshape import OnnxReshape
from onnx2torch.node_converters.squeeze import OnnxSqueezeStaticAxes
from onnx2torch.node_converters.transpose import OnnxTranspose
from onnx2torch.node_converters.unsqueeze import OnnxUnsqueezeStaticAxes
from torch import nn
from torch.fx.passes.shape_prop import TensorMetadata
from torch.nn import functional as F

from pipeline.to_torch.codegen import literals
from pipeline.to_torch.ops.reshape import StaticReshape
from pipeline.to_torch.ops.shape_values import ShapeArgs

_LAYOUT = (
    StaticReshape,
    OnnxReshape,
    OnnxSqueezeStaticAxes,
    OnnxUnsqueezeStaticAxes,
    OnnxTranspose,
    OnnxFlatten,
)
"""Ops that only rearrange their first argument (the others, if any, give a shape)."""
_PRODUCTS = (OnnxMatMul, OnnxEinsum)
_SEARCH = 16
"""How many ops away from the softmax a product may be."""
_MAX_TRIALS = 256
"""Candidates run at most per softmax."""
_LAYOUTS = ("bshd", "bhsd")
"""A 4-D query, key or value: ``(batch, seq, heads, dim)`` or ``(batch, heads, seq, dim)``."""


class ScaledDotProductAttention(nn.Module):
    """Attention of query over key and value given in ``layouts`` (``bshd``/``bhsd``), with
    an optional boolean mask (True: attend); the result in ``out_layout`` (``bshd``,
    ``bhsd``, or ``bs(hd)``: heads and dim flattened); ``causal``: the constant mask was
    the lower triangle (``is_causal=True``).

    Without a ``fill`` it is ``F.scaled_dot_product_attention`` (a masked key is left out;
    a row with every key masked gives zeros).  With one, masked scores are *set* to
    ``fill`` before the softmax (``masked_fill``): what Keras's masked softmax does, where a
    row with every key masked attends uniformly and no gradient reaches a masked score.
    SDPA's additive mask cannot say that exactly (its gradient flows into masked scores),
    so this form is written out: one product, the fill, the softmax, one product.
    """

    def __init__(
        self,
        layouts: tuple[str, str, str],
        out_layout: str,
        scale: float,
        fill: float | None = None,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.layouts = layouts
        self.out_layout = out_layout
        self.scale = scale
        self.fill = fill
        self.causal = causal

    def default_scale(self, dim: int) -> bool:
        """Whether ``scale`` is SDPA's default for head size ``dim`` (float32 rounding)."""
        return math.isclose(self.scale, 1.0 / math.sqrt(dim), rel_tol=1e-6)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The attention of ``query`` over ``key``/``value``."""
        q, k, v = (
            t.transpose(1, 2) if layout == "bshd" else t
            for t, layout in zip((query, key, value), self.layouts, strict=True)
        )
        if mask is not None and self.fill is not None:
            scores = q @ k.transpose(-2, -1) * self.scale
            scores = scores.masked_fill(~mask, self.fill)
            out = torch.softmax(scores, dim=-1) @ v
        else:
            scale = None if self.default_scale(q.shape[-1]) else self.scale
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=self.causal, scale=scale
            )
        if self.out_layout == "bhsd":
            return out
        out = out.transpose(1, 2)
        return out.flatten(2) if self.out_layout == "bs(hd)" else out


def code_form(
    module: ScaledDotProductAttention,
    args: Sequence[str],
    dim: int,
    fresh: Callable[[str], str],
) -> tuple[list[str], str]:
    """The statements and the value that write ``module`` called on ``args`` (head size
    ``dim``); ``fresh(base)`` gives the statements' variable names."""
    lines: list[str] = []
    names = []
    for arg, layout, base in zip(args[:3], module.layouts, ("q", "k", "v"), strict=True):
        if layout == "bshd":
            name = fresh(base)
            comment = "  # (batch, heads, seq, dim)" if not lines else ""
            lines.append(f"{name} = {arg}.transpose(1, 2){comment}")
            names.append(name)
        else:
            names.append(arg)
    q, k, v = names
    if len(args) > 3 and module.fill is not None:
        scores = fresh("scores")
        lines += [
            f"{scores} = {q} @ {k}.transpose(-2, -1) * {literals.number(module.scale)}",
            f"{scores} = {scores}.masked_fill(~{args[3]}, {literals.number(module.fill)})"
            "  # Keras's masked softmax",
        ]
        call = f"torch.softmax({scores}, dim=-1) @ {v}"
    else:
        extra = f", attn_mask={args[3]}" if len(args) > 3 else ""
        if module.causal:
            extra += ", is_causal=True"
        if not module.default_scale(dim):
            extra += f", scale={literals.number(module.scale)}"
        call = f"F.scaled_dot_product_attention({q}, {k}, {v}{extra})"
    if module.out_layout == "bhsd":
        return lines, call
    attn = fresh("attn")
    lines.append(f"{attn} = {call}")
    value = f"{attn}.transpose(1, 2)"
    return lines, value + (".flatten(2)" if module.out_layout == "bs(hd)" else "")


# ------------------------------------------------------------------------- finding


def _module(gm: torch.fx.GraphModule, node: torch.fx.Node) -> nn.Module | None:
    return gm.get_submodule(str(node.target)) if node.op == "call_module" else None


def _meta(node: torch.fx.Node) -> TensorMetadata | None:
    meta = node.meta.get("tensor_meta")
    return meta if isinstance(meta, TensorMetadata) else None


def _is_constant(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    return node.op == "get_attr" or isinstance(_module(gm, node), OnnxConstant)


def _constant(gm: torch.fx.GraphModule, node: torch.fx.Node) -> torch.Tensor:
    if node.op == "get_attr":
        owner, _, attr = str(node.target).rpartition(".")
        value = getattr(gm.get_submodule(owner) if owner else gm, attr)
    else:
        module = _module(gm, node)
        assert isinstance(module, OnnxConstant)
        value = module.value
    assert isinstance(value, torch.Tensor)
    return value.detach()


def _scalar_factor(gm: torch.fx.GraphModule, node: torch.fx.Node) -> tuple[int, float] | None:
    """For ``x * c`` / ``x / c`` with ``c`` a one-element constant: (the index of ``x``, the
    factor); else None."""
    module = _module(gm, node)
    if not isinstance(module, OnnxBinaryMathOperation) or len(node.args) != 2:
        return None
    for index in (0, 1):
        x, c = node.args[index], node.args[1 - index]
        if not isinstance(x, torch.fx.Node) or not isinstance(c, torch.fx.Node):
            continue
        if not _is_constant(gm, c) or _is_constant(gm, x):
            continue
        value = _constant(gm, c)
        if value.numel() != 1 or not value.is_floating_point():
            return None
        ones, twos = torch.ones(()), torch.full((), 2.0)
        pair = (ones, value.reshape(())) if index == 0 else (value.reshape(()), ones)
        pair2 = (twos, value.reshape(())) if index == 0 else (value.reshape(()), twos)
        one, two = float(module(*pair)), float(module(*pair2))
        if math.isfinite(one) and one != 0.0 and math.isclose(two, 2 * one, rel_tol=1e-6):
            return index, one  # linear in x: a scale
        return None
    return None


def _ancestor_chain(gm: torch.fx.GraphModule, start: torch.fx.Node) -> list[torch.fx.Node]:
    """``start`` and the tensors it is rearranged or scaled from, nearest first."""
    chain = [start]
    node = start
    for _ in range(_SEARCH):
        module = _module(gm, node)
        if isinstance(module, _LAYOUT) and node.args and isinstance(node.args[0], torch.fx.Node):
            node = node.args[0]
        else:
            factor = _scalar_factor(gm, node)
            if factor is None:
                break
            arg = node.args[factor[0]]
            assert isinstance(arg, torch.fx.Node)
            node = arg
        chain.append(node)
    return chain


def _descendant_chain(gm: torch.fx.GraphModule, start: torch.fx.Node) -> list[torch.fx.Node]:
    """``start`` and the tensors it is rearranged into (each the only reader), nearest first."""
    chain = [start]
    node = start
    for _ in range(_SEARCH):
        if len(node.users) != 1:
            break
        user = next(iter(node.users))
        if not isinstance(_module(gm, user), _LAYOUT) or user.args[0] is not node:
            break
        node = user
        chain.append(node)
    return chain


def _nearest(gm: torch.fx.GraphModule, start: torch.fx.Node, up: bool) -> torch.fx.Node | None:
    """The nearest product (matmul, einsum of two) among ``start``'s ancestors (``up``) or
    descendants."""
    frontier, seen = [start], {start}
    for _ in range(_SEARCH):
        following = []
        for node in frontier:
            nexts = (
                [a for a in node.args if isinstance(a, torch.fx.Node)] if up else list(node.users)
            )
            for other in nexts:
                if other in seen:
                    continue
                seen.add(other)
                if isinstance(_module(gm, other), _PRODUCTS) and len(other.args) == 2:
                    return other
                following.append(other)
        frontier = following
    return None


def _reachable(
    nodes: Sequence[torch.fx.Node], step: Callable[[torch.fx.Node], Iterable[torch.fx.Node]]
) -> set[torch.fx.Node]:
    """Every node reached from ``nodes`` by repeated ``step`` (``nodes`` themselves only when
    reached again)."""
    found: set[torch.fx.Node] = set()
    stack = list(nodes)
    while stack:
        for other in step(stack.pop()):
            if other not in found:
                found.add(other)
                stack.append(other)
    return found


def _ancestors(nodes: Sequence[torch.fx.Node]) -> set[torch.fx.Node]:
    return _reachable(nodes, lambda node: node.all_input_nodes)


def _descendants(nodes: Sequence[torch.fx.Node]) -> set[torch.fx.Node]:
    return _reachable(nodes, lambda node: node.users)


@dataclass
class _Candidate:
    query: torch.fx.Node
    key: torch.fx.Node
    value: torch.fx.Node
    out: torch.fx.Node
    layouts: tuple[str, str, str]
    out_layout: str


def _bhsd(shape: Sequence[int], layout: str) -> tuple[int, ...]:
    b, x, y, d = shape
    return (b, y, x, d) if layout == "bshd" else (b, x, y, d)


def _out_shape(bhsd: tuple[int, ...], layout: str) -> tuple[int, ...]:
    b, h, s, d = bhsd
    return {"bhsd": (b, h, s, d), "bshd": (b, s, h, d), "bs(hd)": (b, s, h * d)}[layout]


def _candidates(gm: torch.fx.GraphModule, softmax: torch.fx.Node) -> Iterator[_Candidate]:
    scores = _nearest(gm, softmax, up=True)
    mixed = _nearest(gm, softmax, up=False)
    if scores is None or mixed is None:
        return
    below = _descendants([softmax])
    sides = [a for a in mixed.args if isinstance(a, torch.fx.Node)]
    values = [a for a in sides if a not in below and a is not softmax]
    if len(values) != 1:
        return
    a, b = (x for x in scores.args if isinstance(x, torch.fx.Node))

    def four_d(chain: list[torch.fx.Node]) -> list[torch.fx.Node]:
        found = [n for n in reversed(chain) if (m := _meta(n)) is not None and len(m.shape) == 4]
        return [n for n in found if (m := _meta(n)) is not None and m.dtype == torch.float32]

    outs = [
        n
        for n in reversed(_descendant_chain(gm, mixed))
        if (m := _meta(n)) and len(m.shape) in (3, 4)
    ]
    value_chain = four_d(_ancestor_chain(gm, values[0]))
    for q_start, k_start in ((a, b), (b, a)):
        q_chain = four_d(_ancestor_chain(gm, q_start))
        k_chain = four_d(_ancestor_chain(gm, k_start))
        for q, k, v in itertools.product(q_chain, k_chain, value_chain):
            for q_layout, k_layout, v_layout in itertools.product(_LAYOUTS, repeat=3):
                layouts = (q_layout, k_layout, v_layout)
                shapes = [
                    _bhsd(tuple(_meta(t).shape), layout)  # type: ignore[union-attr]
                    for t, layout in zip((q, k, v), layouts, strict=True)
                ]
                (bq, hq, sq, dq), (bk, hk, sk, dk), (bv, hv, sv, dv) = shapes
                if not (bq == bk == bv and hq == hk == hv and sk == sv and dq == dk):
                    continue
                for out in outs:
                    meta = _meta(out)
                    assert meta is not None
                    for out_layout in ("bs(hd)",) if len(meta.shape) == 3 else ("bshd", "bhsd"):
                        if tuple(meta.shape) == _out_shape((bq, hq, sq, dv), out_layout):
                            yield _Candidate(q, k, v, out, layouts, out_layout)


def _region(candidate: _Candidate, softmax: torch.fx.Node) -> list[torch.fx.Node] | None:
    """The nodes the candidate replaces: computed from its query, key or value, read by its
    output; None when one is read elsewhere or the softmax is not among them."""
    inputs = [candidate.query, candidate.key, candidate.value]
    region = (_descendants(inputs) & (_ancestors([candidate.out]) | {candidate.out})) - set(inputs)
    if softmax not in region:
        return None
    return list(region)


def _contained(region: Sequence[torch.fx.Node], mask: _Mask, out: torch.fx.Node) -> bool:
    """Whether nothing outside reads the region (but its output) or the mask ops that read
    the region (a mask broadcast to the scores' shape): all of them go with the rewrite."""
    inside = set(region) | set(mask.path)
    tainted = set(region)
    for node in mask.path:  # in graph order: a reader after what it reads
        if any(a in tainted for a in node.all_input_nodes):
            tainted.add(node)
    return all(node is out or all(u in inside for u in node.users) for node in tainted)


@dataclass
class _Mask:
    root: torch.fx.Node | None
    """The boolean mask the region's mask operands are computed from, or the float bias it
    adds to the scores (a relative position bias); None: no mask."""
    path: list[torch.fx.Node]
    """The ops from ``root`` to the mask operands the region reads."""
    shape_sources: list[torch.fx.Node]
    """Tensors the region reads only the shape of."""
    fills: list[float]
    """Large negative constants the region or the mask ops read: what a masked score may
    become (Keras's masked softmax adds one, so a row with every key masked attends
    uniformly)."""


def _mask(
    gm: torch.fx.GraphModule,
    region: set[torch.fx.Node],
    inputs: Sequence[torch.fx.Node],
    order: dict[torch.fx.Node, int],
) -> _Mask | None:
    """What the region reads besides its inputs and constants: a boolean mask (through
    weight-free ops), or shapes only; None for anything else."""
    extras: list[torch.fx.Node] = []
    shape_sources: list[torch.fx.Node] = []
    for node in region:
        module = _module(gm, node)
        sources = len(module.sources) if isinstance(module, ShapeArgs) else 0
        for position, arg in enumerate(node.args):
            if not isinstance(arg, torch.fx.Node) or arg in region or arg in inputs:
                continue
            if _is_constant(gm, arg) and not _constant_mask(gm, arg):
                continue
            if sources and position >= len(node.args) - sources:
                shape_sources.append(arg)
            elif arg not in extras:
                extras.append(arg)
    shape_sources = [s for s in dict.fromkeys(shape_sources) if s not in extras]
    if not extras:
        return _Mask(None, [], shape_sources, [])
    # The nearest boolean tensor every extra is computed from by weight-free ops alone (and
    # the region's shapes), itself computed without the region.
    after = _descendants(inputs)
    for root in _bool_ancestors(gm, extras[0]):
        if root in after:
            continue
        path = _path(gm, root, extras, region)
        if path is not None:
            path.sort(key=order.__getitem__)
            fills = {
                float(value)
                for node in [*path, *region]
                for arg in node.all_input_nodes
                if _is_constant(gm, arg)
                and (value := _constant(gm, arg)).numel() == 1
                and value.is_floating_point()
                and float(value) <= -1e4
            }
            return _Mask(root, path, shape_sources, sorted(fills))
    # One float tensor computed without the region: a bias added to the scores (T5's
    # relative positions with its padding mask), SDPA's float ``attn_mask``.
    meta = _meta(extras[0])
    if len(extras) == 1 and extras[0] not in after and meta and meta.dtype == torch.float32:
        return _Mask(extras[0], [], shape_sources, [])
    return None


def _float(node: torch.fx.Node) -> bool:
    meta = _meta(node)
    return meta is not None and meta.dtype.is_floating_point


def _constant_mask(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    """Whether ``node`` is a boolean constant of more than one element (a causal mask)."""
    if not _is_constant(gm, node):
        return False
    value = _constant(gm, node)
    return value.dtype == torch.bool and value.numel() > 1


def _causal(value: torch.Tensor) -> bool:
    """Whether ``value`` is the square lower-triangular mask (``is_causal=True``)."""
    if (
        value.dim() < 2
        or value.shape[-1] != value.shape[-2]
        or value.numel() != value.shape[-1] ** 2
    ):
        return False
    square = value.reshape(value.shape[-2:])
    return bool(torch.equal(square, torch.ones_like(square).tril()))


def _bool_ancestors(gm: torch.fx.GraphModule, node: torch.fx.Node) -> list[torch.fx.Node]:
    found: list[torch.fx.Node] = []
    frontier = [node]
    for _ in range(_SEARCH):
        following: list[torch.fx.Node] = []
        for current in frontier:
            meta = _meta(current)
            if meta is not None and meta.dtype == torch.bool and current not in found:
                found.append(current)
            module = _module(gm, current)
            if module is not None and any(True for _ in module.state_dict()):
                continue
            following.extend(a for a in current.all_input_nodes if not _is_constant(gm, a))
        frontier = following
    return found


def _path(
    gm: torch.fx.GraphModule,
    root: torch.fx.Node,
    extras: Sequence[torch.fx.Node],
    region: set[torch.fx.Node],
) -> list[torch.fx.Node] | None:
    """The ops computing ``extras`` from ``root``, constants and the ``region`` only, or
    None."""
    path: list[torch.fx.Node] = []
    stack = [e for e in extras if e is not root]
    while stack:
        node = stack.pop()
        if node in path:
            continue
        module = _module(gm, node)
        if node.op not in ("call_module", "call_function") or (
            module is not None and any(True for _ in module.state_dict())
        ):
            return None
        path.append(node)
        for arg in node.all_input_nodes:
            if arg is not root and arg not in region and not _is_constant(gm, arg):
                stack.append(arg)
    return path


# ----------------------------------------------------------------------- checking


def _run(
    gm: torch.fx.GraphModule, nodes: Sequence[torch.fx.Node], env: dict[torch.fx.Node, torch.Tensor]
) -> None:
    """Evaluate ``nodes`` (in order) into ``env``; constants are read as needed."""

    def value(arg: torch.fx.Node) -> Any:
        if arg not in env:
            if not _is_constant(gm, arg):
                raise KeyError(arg.name)
            env[arg] = _constant(gm, arg)
        return env[arg]

    for node in nodes:
        args = torch.fx.node.map_arg(node.args, value)
        kwargs = torch.fx.node.map_arg(node.kwargs, value)
        if node.op == "call_module":
            env[node] = gm.get_submodule(str(node.target))(*args, **kwargs)
        elif node.op == "call_function":
            env[node] = node.target(*args, **kwargs)  # type: ignore[operator]
        elif node.op == "call_method":
            env[node] = getattr(args[0], str(node.target))(*args[1:], **kwargs)
        else:
            raise KeyError(node.op)


def _agrees(
    gm: torch.fx.GraphModule,
    candidate: _Candidate,
    region: Sequence[torch.fx.Node],
    mask: _Mask,
    module: ScaledDotProductAttention,
    order: dict[torch.fx.Node, int],
) -> bool:
    """Whether ``module`` computes what the region does, values and gradients, on random
    query, key and value and on masks with some, none and all positions masked."""
    generator = torch.Generator().manual_seed(0)
    nodes = sorted([*region, *mask.path], key=order.__getitem__)
    masks: list[torch.Tensor | None] = [None]
    if mask.root is not None and _is_constant(gm, mask.root):
        masks = [_constant(gm, mask.root)]  # a constant mask: its own value is all there is
    elif mask.root is not None and _float(mask.root):
        shape = tuple(_meta(mask.root).shape)  # type: ignore[union-attr]
        masks = [torch.randn(shape, generator=generator) * 2.0]
    elif mask.root is not None:
        shape = tuple(_meta(mask.root).shape)  # type: ignore[union-attr]
        some = torch.rand(shape, generator=generator) < 0.7
        masks = [some, torch.ones(shape, dtype=torch.bool), torch.zeros(shape, dtype=torch.bool)]
    # Values on the first mask first: most wrong candidates fail there, cheaply.
    checks = [(masks[0], False), *((m, True) for m in masks)]
    for trial, gradients in checks:
        env: dict[torch.fx.Node, torch.Tensor] = {}
        inputs = (candidate.query, candidate.key, candidate.value)
        for node in inputs:
            shape = tuple(_meta(node).shape)  # type: ignore[union-attr]
            env[node] = (torch.randn(shape, generator=generator) * 2.0).requires_grad_()
        for node in mask.shape_sources:
            meta = _meta(node)
            if meta is None:
                return False
            env[node] = torch.zeros(tuple(meta.shape), dtype=meta.dtype)
        if mask.root is not None:
            assert trial is not None
            if trial.is_floating_point():  # a bias: its gradient is compared too
                trial = trial.detach().requires_grad_(gradients)
            env[mask.root] = trial
        try:
            with torch.set_grad_enabled(gradients):
                _run(gm, nodes, env)
                args = [env[node] for node in inputs]
                expected = env[candidate.out]
                given = [] if trial is None or module.causal else [trial]
                got = module(*args, *given)
            if got.shape != expected.shape:
                return False
            pairs: list[tuple[torch.Tensor | None, torch.Tensor | None]] = [(got, expected)]
            if gradients:
                cotangent = torch.randn(got.shape, generator=generator)
                wrt = [*args, *([trial] if trial is not None and trial.requires_grad else [])]
                wanted = torch.autograd.grad(expected, wrt, cotangent, allow_unused=True)
                found = torch.autograd.grad(got, wrt, cotangent, allow_unused=True)
                pairs += zip(found, wanted, strict=True)
        except Exception:
            return False
        for a, b in pairs:
            if a is None or b is None:
                if a is not b:
                    return False
            elif not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
                return False
    return True


def _scale(
    gm: torch.fx.GraphModule, region: Sequence[torch.fx.Node], softmax: torch.fx.Node, mask: _Mask
) -> float:
    """The product of the constant factors on the way from query and key to the softmax (not
    the mask's: its large negative number is no scale)."""
    before = _ancestors([softmax])
    within = set(region) | set(mask.path)
    masked: set[torch.fx.Node] = set()
    stack = [mask.root] if mask.root is not None else []
    while stack:  # what the mask reaches inside the region (not the layers after it)
        for user in stack.pop().users:
            if user in within and user not in masked:
                masked.add(user)
                stack.append(user)
    scale = 1.0
    for node in region:
        if node in before and node not in masked:
            factor = _scalar_factor(gm, node)
            if factor is not None:
                scale *= factor[1]
    return scale


def rewrite(gm: torch.fx.GraphModule) -> int:
    """Replace each attention region of ``gm`` (shapes propagated) by one
    :class:`ScaledDotProductAttention` node, in place; returns how many."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the checks run tiny ops: threads only add overhead
    try:
        return _rewrite(gm)
    finally:
        torch.set_num_threads(threads)


def _rewrite(gm: torch.fx.GraphModule) -> int:
    done = 0
    softmaxes = [
        n
        for n in gm.graph.nodes
        if isinstance(module := _module(gm, n), nn.Softmax)
        and (m := _meta(n)) is not None
        and len(m.shape) == 4
        and module.dim in (-1, 3)
    ]
    for softmax in softmaxes:
        if softmax.graph is not gm.graph or not softmax.users:
            continue
        order = {node: i for i, node in enumerate(gm.graph.nodes)}
        for trial, candidate in enumerate(_candidates(gm, softmax)):
            if trial >= _MAX_TRIALS:
                break
            region = _region(candidate, softmax)
            if region is None:
                continue
            inputs = [candidate.query, candidate.key, candidate.value]
            mask = _mask(gm, set(region), inputs, order)
            if mask is None or not _contained(region, mask, candidate.out):
                continue
            scale = _scale(gm, region, softmax, mask)
            module = None
            forms: list[tuple[float | None, bool]] = [(None, False)]
            if mask.root is not None and not _float(mask.root):
                forms += [(fill, False) for fill in mask.fills]
                if _is_constant(gm, mask.root) and _causal(_constant(gm, mask.root)):
                    forms.insert(0, (None, True))
            for fill, causal in forms:
                trial_module = ScaledDotProductAttention(
                    candidate.layouts, candidate.out_layout, scale, fill, causal
                )
                if _agrees(gm, candidate, region, mask, trial_module, order):
                    module = trial_module
                    break
            if module is None:
                continue
            _replace(gm, softmax, candidate, mask, module)
            gm.graph.eliminate_dead_code()  # the next softmax sees the graph as it now is
            done += 1
            break
    if done:
        gm.graph.eliminate_dead_code()
        gm.delete_all_unused_submodules()
        gm.recompile()
    return done


def _replace(
    gm: torch.fx.GraphModule,
    softmax: torch.fx.Node,
    candidate: _Candidate,
    mask: _Mask,
    module: ScaledDotProductAttention,
) -> None:
    # Named in the attention layer's scope: the one the softmax and the result share.
    scope = str(softmax.target).rpartition("/")[0]
    out_scope = str(candidate.out.target).rpartition("/")[0].split("/")
    common = list(
        itertools.takewhile(lambda p: p[0] == p[1], zip(scope.split("/"), out_scope, strict=False))
    )
    if common:
        scope = "/".join(p[0] for p in common)
    base = f"{scope}/ScaledDotProductAttention" if scope else "ScaledDotProductAttention"
    target, n = base, 1
    while hasattr(gm, target):
        target, n = f"{base}_{n}", n + 1
    gm.add_module(target, module)
    args = [candidate.query, candidate.key, candidate.value]
    if mask.root is not None and not module.causal:
        args.append(mask.root)
    with gm.graph.inserting_before(candidate.out):
        new = gm.graph.call_module(target, tuple(args))
    new.meta = dict(candidate.out.meta)
    candidate.out.replace_all_uses_with(new)
