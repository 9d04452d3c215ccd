"""Activations that arrive spelled out, written as the one call a person writes.

tf2onnx exports Keras's GELU as ``0.5 * x * (1 - erf(-x * 0.7071…))`` (or its tanh form),
swish as ``x * sigmoid(x)`` and hard-swish as ``x * relu6(x + 3) / 6``: five or six ONNX
ops, so five or six statements.  :func:`rewrite` finds each such cluster -- elementwise ops
on one tensor ``x`` and scalar constants, whose intermediate values nothing else reads --
and, when the cluster computes one of :data:`IDIOMS` on a dense grid of ``x`` values to
float32 rounding, replaces it by that module (``nn.GELU()`` → ``F.gelu(x)``).  Which op
spells the function does not matter (``1 + erf(x/√2)`` and ``1 - erf(-x·0.7071)`` are the
same idiom); the values decide, and the conversion's three-way comparison and gradient
check then prove the rewritten module like any other.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from onnx2torch.node_converters.activations import OnnxErf, OnnxHardSigmoid
from onnx2torch.node_converters.binary_math_operations import OnnxBinaryMathOperation
from onnx2torch.node_converters.clip import OnnxClip
from onnx2torch.node_converters.constant import OnnxConstant
from onnx2torch.node_converters.functions import OnnxFunction
from onnx2torch.node_converters.neg import OnnxNeg
from onnx2torch.node_converters.pow import OnnxPow
from onnx2torch.node_converters.reciprocal import OnnxReciprocal
from torch import nn
from torch.nn import functional as F

from pipeline.to_torch.ops.arithmetic import Power

_ELEMENTWISE = (
    OnnxBinaryMathOperation,
    OnnxNeg,
    OnnxErf,
    OnnxPow,
    Power,
    OnnxFunction,
    OnnxClip,
    OnnxHardSigmoid,
    OnnxReciprocal,
    nn.Sigmoid,
    nn.Tanh,
    nn.ReLU,
    nn.ReLU6,
    nn.Hardtanh,
    nn.Hardsigmoid,
)
_MAX_OPS = 10
"""Ops in one cluster at most (GELU's tanh form has 8)."""

IDIOMS: list[tuple[str, Callable[[], nn.Module], Callable[[torch.Tensor], torch.Tensor]]] = [
    ("gelu", nn.GELU, F.gelu),
    ("gelu_tanh", lambda: nn.GELU(approximate="tanh"), lambda x: F.gelu(x, approximate="tanh")),
    ("silu", nn.SiLU, F.silu),
    ("hardswish", nn.Hardswish, F.hardswish),
    ("mish", nn.Mish, F.mish),
]
"""Name, the module that replaces a cluster, and the function the cluster must compute."""

_GRID = torch.cat([torch.linspace(-8.0, 8.0, 4001), torch.tensor([-30.0, -12.0, 12.0, 30.0])])


def _module(gm: torch.fx.GraphModule, node: torch.fx.Node) -> nn.Module | None:
    return gm.get_submodule(str(node.target)) if node.op == "call_module" else None


def _scalar(gm: torch.fx.GraphModule, node: torch.fx.Node) -> torch.Tensor | None:
    """The value of a one-element constant, or None."""
    if node.op == "get_attr":
        owner, _, attr = str(node.target).rpartition(".")
        value = getattr(gm.get_submodule(owner) if owner else gm, attr)
        if isinstance(value, nn.Parameter):
            return None  # a trainable weight is no constant of an activation
    else:
        module = _module(gm, node)
        if not isinstance(module, OnnxConstant):
            return None
        value = module.value
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
        return value.detach()
    return None


def _cluster(
    gm: torch.fx.GraphModule, out: torch.fx.Node, x: torch.fx.Node
) -> list[torch.fx.Node] | None:
    """The ops of the elementwise cluster from ``x`` to ``out``: every op elementwise, every
    other operand a scalar constant, every intermediate read only inside the cluster.  None
    when there is no such cluster of two ops or more."""
    ops: list[torch.fx.Node] = []
    stack = [out]
    while stack:
        node = stack.pop()
        if node is x or node in ops:
            continue
        if not isinstance(_module(gm, node), _ELEMENTWISE) or node.kwargs:
            return None
        ops.append(node)
        if len(ops) > _MAX_OPS:
            return None
        for arg in node.args:
            if not isinstance(arg, torch.fx.Node):
                return None
            if arg is x or _scalar(gm, arg) is None:
                stack.append(arg)
    if len(ops) < 2:
        return None
    for node in ops:
        if node is not out and any(u not in ops for u in node.users):
            return None
    return ops


def _candidates(gm: torch.fx.GraphModule, out: torch.fx.Node) -> list[torch.fx.Node]:
    """The values a cluster ending at ``out`` may start from: the ancestors of ``out``
    through elementwise ops, nearest first."""
    found: list[torch.fx.Node] = []
    frontier = [out]
    for _ in range(_MAX_OPS):
        following = []
        for node in frontier:
            if not isinstance(_module(gm, node), _ELEMENTWISE):
                continue
            for arg in node.args:
                if isinstance(arg, torch.fx.Node) and _scalar(gm, arg) is None and arg not in found:
                    found.append(arg)
                    following.append(arg)
        frontier = following
    return found


def _evaluate(
    gm: torch.fx.GraphModule, x: torch.fx.Node, ops: list[torch.fx.Node], out: torch.fx.Node
) -> torch.Tensor | None:
    values: dict[torch.fx.Node, torch.Tensor] = {x: _GRID}
    order = _topological(ops)
    try:
        for node in order:
            args = []
            for arg in node.args:
                assert isinstance(arg, torch.fx.Node)
                args.append(values[arg] if arg in values else _scalar(gm, arg))
            module = _module(gm, node)
            assert module is not None
            values[node] = module(*args)
    except Exception:
        return None
    result = values[out]
    return result if result.shape == _GRID.shape else None


def rewrite(gm: torch.fx.GraphModule) -> list[str]:
    """Replace each spelled-out activation in ``gm`` by its module (in place); returns the
    idioms found, one name per replacement."""
    found: list[str] = []
    done: set[torch.fx.Node] = set()
    for out in reversed(list(gm.graph.nodes)):  # the last op of a cluster first
        if out in done:
            continue
        if not isinstance(_module(gm, out), _ELEMENTWISE):
            continue
        for x in reversed(_candidates(gm, out)):  # the largest cluster first
            name = _idiom(gm, out, x)
            if name is None:
                continue
            ops = _cluster(gm, out, x)
            assert ops is not None
            target = _free_target(gm, f"{out.target}_{name}")
            gm.add_module(target, dict((n, m) for n, m, _ in IDIOMS)[name]())
            with gm.graph.inserting_before(out):
                new = gm.graph.call_module(target, (x,))
            new.meta = dict(out.meta)
            out.replace_all_uses_with(new)
            done.update(ops)
            found.append(name)
            break
    if found:
        gm.graph.eliminate_dead_code()
        gm.delete_all_unused_submodules()
        gm.recompile()
    return found


def _idiom(gm: torch.fx.GraphModule, out: torch.fx.Node, x: torch.fx.Node) -> str | None:
    """The name of the idiom the cluster from ``x`` to ``out`` computes, or None."""
    ops = _cluster(gm, out, x)
    meta = x.meta.get("tensor_meta")
    if ops is None or (meta is not None and not meta.dtype.is_floating_point):
        return None
    values = _evaluate(gm, x, ops, out)
    if values is None:
        return None
    for name, _, function in IDIOMS:
        if torch.allclose(values, function(_GRID), rtol=1e-5, atol=1e-6):
            return name
    return None


def _topological(ops: list[torch.fx.Node]) -> list[torch.fx.Node]:
    """``ops`` with every op after the ops it reads."""
    inside, placed = set(ops), set()
    order: list[torch.fx.Node] = []
    while len(order) < len(ops):
        for node in ops:
            if node not in placed and all(
                a in placed for a in node.args if isinstance(a, torch.fx.Node) and a in inside
            ):
                placed.add(node)
                order.append(node)
    return order


def _free_target(gm: torch.fx.GraphModule, base: str) -> str:
    base = base.replace(".", "_")
    name, n = base, 1
    while hasattr(gm, name):
        name, n = f"{base}_{n}", n + 1
    return name
