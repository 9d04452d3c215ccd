"""``--keep-batchnorm``: give Keras BatchNormalization back its own ``nn.BatchNorm*d``.

tf2onnx exports an inference BatchNorm in one of two folded forms:

(a) ``Mul(x, s) -> Add(*, t)`` after the producing op, with ``s = gamma/sqrt(var+eps)`` and
    ``t = beta - mean*s`` precomputed (no TF variable appears as such);
(b) folded into the preceding convolution: weight ``W*s`` (per output channel) and bias
    ``t + b*s``.

Either way the outputs are right but gamma, beta, mean and var are gone, so the layer cannot be trained
like Keras's.  This module finds, for every BatchNorm whose variables are still unmapped, the
folded form it produced -- by value: eps is solved from ``s`` and checked, and the
convolution's weight must equal the unmapped TF kernel times ``s`` channel by channel -- and
rewrites the graph to ``[conv with W and b] -> nn.BatchNorm*d(gamma, beta, mean, var, eps)``.  Keras's
``momentum`` m becomes torch's ``1 - m`` where the worker reports it (Keras default 0.99).

Only the channel-axis-1 layouts ``nn.BatchNorm1d/2d/3d`` accept are rewritten (tf2onnx makes
NHWC convolutions NCHW); anything else stays folded and stays ``unmapped`` in the table.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from onnx2torch.node_converters.binary_math_operations import OnnxBinaryMathOperation

from pipeline.to_torch.parameters import (
    UNMAPPED,
    ParameterEntry,
    _drop_unused,
    _ensure_module,
    _free_path,
    _sanitize,
)

KERAS_DEFAULT_MOMENTUM = 0.99


@dataclass
class _BatchNormVariables:
    layer: str
    mean: np.ndarray
    var: np.ndarray
    gamma: np.ndarray | None
    beta: np.ndarray | None
    index: dict[str, int]  # role -> variable index
    keras: dict[str, float]  # epsilon and momentum as the worker reported them (may be empty)

    @property
    def channels(self) -> int:
        return int(self.mean.size)

    def scale_for(self, eps: float) -> np.ndarray:
        gamma = self.gamma if self.gamma is not None else np.ones_like(self.var)
        return (gamma / np.sqrt(self.var.astype(np.float64) + eps)).astype(np.float64)

    def shift_for(self, scale: np.ndarray) -> np.ndarray:
        beta = self.beta if self.beta is not None else np.zeros_like(self.mean)
        return beta.astype(np.float64) - self.mean.astype(np.float64) * scale

    def solve_eps(self, scale: np.ndarray, known: float | None = None) -> float | None:
        """eps of a folded scale: ``known`` (Keras's, when the worker reported it) if it
        reproduces ``scale``, else solved as ``(gamma/s)² - var``, the same for every
        channel; None when no eps explains ``scale``."""
        if known is not None:
            close = np.allclose(self.scale_for(known), scale, rtol=1e-4, atol=1e-7)
            return known if close else None
        gamma = self.gamma if self.gamma is not None else np.ones_like(self.var)
        with np.errstate(divide="ignore", invalid="ignore"):
            estimates = (gamma.astype(np.float64) / scale) ** 2 - self.var.astype(np.float64)
        estimates = estimates[np.isfinite(estimates)]
        if estimates.size == 0:
            return None
        eps = float(np.median(estimates))
        if eps < 0 or not np.allclose(self.scale_for(eps), scale, rtol=1e-4, atol=1e-7):
            return None
        return eps


_ROLES = ("gamma", "beta", "moving_mean", "moving_variance")


def _batchnorm_groups(
    entries: Sequence[ParameterEntry],
    values: Sequence[np.ndarray],
    variables: Sequence[dict[str, Any]],
) -> list[_BatchNormVariables]:
    by_layer: dict[str, dict[str, int]] = {}
    for index, meta in enumerate(variables):
        layer, _, role = meta["path"].rpartition("/")
        if role in _ROLES and entries_by_tf(entries).get(meta["path"], UNMAPPED) == UNMAPPED:
            by_layer.setdefault(layer, {})[role] = index
    groups = []
    for layer, roles in by_layer.items():
        if "moving_mean" not in roles or "moving_variance" not in roles:
            continue
        found = {role: np.asarray(values[i]) for role, i in roles.items()}
        groups.append(
            _BatchNormVariables(
                layer,
                found["moving_mean"],
                found["moving_variance"],
                found.get("gamma"),
                found.get("beta"),
                roles,
                dict(variables[roles["moving_mean"]].get("batchnorm") or {}),
            )
        )
    return groups


def entries_by_tf(entries: Sequence[ParameterEntry]) -> dict[str, str]:
    """TF name -> transform, for the variables the table has."""
    return {e.tf_name: e.transform for e in entries if e.tf_name}


def _batchnorm_module(
    bn: _BatchNormVariables, eps: float, rank: int, momentum: float
) -> torch.nn.Module:
    cls = {
        2: torch.nn.BatchNorm1d,
        3: torch.nn.BatchNorm1d,
        4: torch.nn.BatchNorm2d,
        5: torch.nn.BatchNorm3d,
    }[rank]
    module = cls(bn.channels, eps=eps, momentum=1.0 - momentum, affine=True)
    module.running_mean = torch.from_numpy(bn.mean.astype(np.float32).copy())
    module.running_var = torch.from_numpy(bn.var.astype(np.float32).copy())
    with torch.no_grad():
        module.weight.copy_(
            torch.from_numpy(
                (bn.gamma if bn.gamma is not None else np.ones_like(bn.var)).astype(np.float32)
            )
        )
        module.bias.copy_(
            torch.from_numpy(
                (bn.beta if bn.beta is not None else np.zeros_like(bn.mean)).astype(np.float32)
            )
        )
    if bn.gamma is None:
        module.weight.requires_grad_(False)
    if bn.beta is None:
        module.bias.requires_grad_(False)
    return module.eval()


def _tensor(module: torch.fx.GraphModule, node: Any) -> np.ndarray | None:
    if not isinstance(node, torch.fx.Node) or node.op != "get_attr":
        return None
    tensors = dict(module.named_buffers()) | dict(module.named_parameters())
    tensor = tensors.get(str(node.target))
    return None if tensor is None else tensor.detach().cpu().numpy()


def _is_op(module: torch.fx.GraphModule, node: torch.fx.Node, fn: Any) -> bool:
    if node.op != "call_module":
        return False
    sub = module.get_submodule(str(node.target))
    return isinstance(sub, OnnxBinaryMathOperation) and sub.math_op_function is fn


def _conv_of(
    module: torch.fx.GraphModule, node: torch.fx.Node
) -> tuple[str, torch.nn.modules.conv._ConvNd] | None:
    if node.op != "call_module":
        return None
    sub = module.get_submodule(str(node.target))
    if isinstance(sub, torch.nn.modules.conv._ConvNd):
        return "", sub
    convs = [(n, m) for n, m in sub.named_modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    return convs[0] if len(convs) == 1 else None


def _place_module(module: torch.fx.GraphModule, wanted_layer: str, child: torch.nn.Module) -> str:
    path = _free_path(
        module, ".".join(_sanitize(p) for p in wanted_layer.split("/")) or "batchnorm"
    )
    owner, _, attr = path.rpartition(".")
    (_ensure_module(module, owner) if owner else module).add_module(attr, child)
    return path


def keep_batchnorm(
    module: torch.fx.GraphModule,
    entries: list[ParameterEntry],
    variables: Sequence[dict[str, Any]],
    values: Sequence[np.ndarray],
) -> list[ParameterEntry]:
    """Rewrite folded BatchNorms of ``module`` into ``nn.BatchNorm*d`` (see the module
    docstring) and return the parameter table with their rows filled in."""
    table: dict[str, ParameterEntry] = {e.tf_name: e for e in entries if e.tf_name}
    unmapped_kernels = [
        i
        for i, meta in enumerate(variables)
        if table.get(meta["path"]) is not None
        and table[meta["path"]].transform == UNMAPPED
        and np.asarray(values[i]).ndim in (3, 4, 5)
    ]
    for bn in _batchnorm_groups(entries, values, variables):
        momentum = bn.keras.get("momentum", KERAS_DEFAULT_MOMENTUM)
        # Form (a) first; a BatchNorm that is in neither form stays folded and unmapped.
        if not _rewrite_mul_add(module, bn, momentum, table):
            _rewrite_folded_conv(module, bn, momentum, table, variables, values, unmapped_kernels)
    _drop_unused(module)
    return [table.get(e.tf_name, e) if e.tf_name else e for e in entries]


def _record_bn(
    table: dict[str, ParameterEntry],
    bn: _BatchNormVariables,
    path: str,
    module: torch.nn.Module,
) -> None:
    names = {
        "gamma": "weight",
        "beta": "bias",
        "moving_mean": "running_mean",
        "moving_variance": "running_var",
    }
    for role in bn.index:
        tf_name = f"{bn.layer}/{role}"
        old = table[tf_name]
        assert isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
        note = f"{type(module).__name__}(eps={module.eps:.6g}, momentum={module.momentum:.6g})"
        table[tf_name] = ParameterEntry(
            tf_name, f"{path}.{names[role]}", [bn.channels], old.trainable, "identity", note
        )


def _rewrite_mul_add(
    module: torch.fx.GraphModule,
    bn: _BatchNormVariables,
    momentum: float,
    table: dict[str, ParameterEntry],
) -> bool:
    """Form (a): ``Mul(x, s) -> Add(*, t)``."""
    for mul in list(module.graph.nodes):
        if not _is_op(module, mul, torch.mul) or len(mul.users) != 1:
            continue
        add = next(iter(mul.users))
        if not _is_op(module, add, torch.add):
            continue
        x, s_node = (
            (mul.args[0], mul.args[1])
            if _tensor(module, mul.args[1]) is not None
            else (mul.args[1], mul.args[0])
        )
        t_node = add.args[1] if add.args[0] is mul else add.args[0]
        s, t = _tensor(module, s_node), _tensor(module, t_node)
        if s is None or t is None or s.size != bn.channels or t.size != bn.channels:
            continue
        if s.ndim >= 2 and s.shape[1] != bn.channels:
            continue  # channel not on axis 1: no nn.BatchNorm*d for it
        eps = bn.solve_eps(s.reshape(-1).astype(np.float64), bn.keras.get("epsilon"))
        if eps is None or not np.allclose(
            bn.shift_for(bn.scale_for(eps)), t.reshape(-1), rtol=1e-4, atol=1e-5
        ):
            continue
        rank = max(s.ndim, 2)
        path = _place_module(module, bn.layer, _batchnorm_module(bn, eps, rank, momentum))
        with module.graph.inserting_before(mul):
            new = module.graph.call_module(path, (x,))
        add.replace_all_uses_with(new)
        module.graph.erase_node(add)
        module.graph.erase_node(mul)
        _record_bn(table, bn, path, module.get_submodule(path))
        return True
    return False


def _rewrite_folded_conv(
    module: torch.fx.GraphModule,
    bn: _BatchNormVariables,
    momentum: float,
    table: dict[str, ParameterEntry],
    variables: Sequence[dict[str, Any]],
    values: Sequence[np.ndarray],
    unmapped_kernels: list[int],
) -> bool:
    """Form (b): a convolution holding ``W*s`` and ``t + b*s``."""
    for node in list(module.graph.nodes):
        found = _conv_of(module, node)
        if found is None:
            continue
        sub_path, conv = found
        weight = conv.weight.detach().cpu().numpy().astype(np.float64)
        if weight.shape[0] != bn.channels:
            continue
        for k_index in unmapped_kernels:
            kernel = np.asarray(values[k_index]).astype(np.float64)
            perm = (kernel.ndim - 1, kernel.ndim - 2, *range(kernel.ndim - 2))
            oihw = np.transpose(kernel, perm)
            if oihw.shape != weight.shape:
                oihw = np.transpose(
                    kernel, (kernel.ndim - 2, kernel.ndim - 1, *range(kernel.ndim - 2))
                )  # depthwise
                perm = (kernel.ndim - 2, kernel.ndim - 1, *range(kernel.ndim - 2))
                if oihw.shape != weight.shape:
                    continue
            flat_k, flat_w = oihw.reshape(bn.channels, -1), weight.reshape(bn.channels, -1)
            norms = (flat_k * flat_k).sum(axis=1)
            if np.any(norms == 0):
                continue
            scale = (flat_w * flat_k).sum(axis=1) / norms
            if not np.allclose(flat_k * scale[:, None], flat_w, rtol=1e-4, atol=1e-6):
                continue
            eps = bn.solve_eps(scale, bn.keras.get("epsilon"))
            if eps is None:
                continue
            layer = variables[k_index]["path"].rpartition("/")[0]
            bias_index = next(
                (i for i, m in enumerate(variables) if m["path"] == f"{layer}/bias"), None
            )
            conv_bias = (
                np.asarray(values[bias_index]).astype(np.float64)
                if bias_index is not None
                else np.zeros(bn.channels)
            )
            expected_bias = bn.shift_for(scale) + conv_bias * scale
            got_bias = (
                conv.bias.detach().cpu().numpy() if conv.bias is not None else np.zeros(bn.channels)
            )
            if not np.allclose(got_bias, expected_bias, rtol=1e-4, atol=1e-5):
                continue
            _unfold(
                module,
                node,
                sub_path,
                conv,
                oihw,
                conv_bias if bias_index is not None else None,
                bn,
                eps,
                momentum,
            )
            conv_path = _move_call_module(module, node, layer)
            prefix = f"{conv_path}.{sub_path}" if sub_path else conv_path
            k_meta = variables[k_index]
            label = "permute" + str(perm).replace(" ", "")
            table[k_meta["path"]] = ParameterEntry(
                k_meta["path"],
                f"{prefix}.weight",
                list(weight.shape),
                bool(k_meta["trainable"]),
                label,
            )
            if bias_index is not None:
                b_meta = variables[bias_index]
                table[b_meta["path"]] = ParameterEntry(
                    b_meta["path"],
                    f"{prefix}.bias",
                    [bn.channels],
                    bool(b_meta["trainable"]),
                    "identity",
                )
            bn_node = next(iter(node.users))
            _record_bn(table, bn, str(bn_node.target), module.get_submodule(str(bn_node.target)))
            unmapped_kernels.remove(k_index)
            return True
    return False


def _unfold(
    module: torch.fx.GraphModule,
    node: torch.fx.Node,
    sub_path: str,
    conv: torch.nn.modules.conv._ConvNd,
    weight: np.ndarray,
    bias: np.ndarray | None,
    bn: _BatchNormVariables,
    eps: float,
    momentum: float,
) -> None:
    new_conv = copy.deepcopy(conv)
    new_conv.weight = torch.nn.Parameter(torch.from_numpy(weight.astype(np.float32)))
    new_conv.bias = (
        None if bias is None else torch.nn.Parameter(torch.from_numpy(bias.astype(np.float32)))
    )
    owner = module.get_submodule(str(node.target))
    if sub_path:
        parent_path, _, attr = sub_path.rpartition(".")
        (owner.get_submodule(parent_path) if parent_path else owner).add_module(attr, new_conv)
    else:
        module.add_submodule(str(node.target), new_conv)
    path = _place_module(module, bn.layer, _batchnorm_module(bn, eps, weight.ndim, momentum))
    with module.graph.inserting_after(node):
        bn_node = module.graph.call_module(path, (node,))
    node.replace_all_uses_with(bn_node, delete_user_cb=lambda user: user is not bn_node)


def _move_call_module(module: torch.fx.GraphModule, node: torch.fx.Node, layer: str) -> str:
    old = str(node.target)
    child = module.get_submodule(old)
    path = _place_module(module, layer, child)
    node.target = path
    if "." not in old:
        delattr(module, old)
    return path
