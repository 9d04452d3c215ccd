"""Training mode for a converted module, with Keras's BatchNormalization arithmetic.

The generated module (``RUN/torch_model``) holds ``nn.BatchNorm*d`` layers: :func:`set_training`
gives each of them :func:`keras_batch_norm` as its forward while training (and takes it back).
A ``torch.export`` program (``model.pt2``) is exported in inference mode, and ``torch.export``'s module refuses
``.train()``.  Its BatchNorm nodes are ``aten.batch_norm(..., training=False, momentum,
eps, ...)`` calls; :func:`set_training` swaps their target for :func:`keras_batch_norm`
(and back), so the same module, with the same parameters and buffers, normalises with the
batch statistics and updates its moving statistics the way Keras's ``BatchNormalization``
does in a training step.  That is not torch's training-mode ``batch_norm``: torch updates
the running variance with the *unbiased* batch variance (``n/(n-1)`` larger), Keras with
the biased one it normalised with.

Dropout is not here at all: the ONNX graph the module came from is an inference graph.
"""

from __future__ import annotations

import functools
from collections.abc import Container

import torch
from torch.nn.modules.batchnorm import _BatchNorm

_ATEN_BATCH_NORM = torch.ops.aten.batch_norm.default
_UNSUPPORTED = (torch.ops.aten._native_batch_norm_legit_no_training.default,)


def keras_batch_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    training: bool,
    momentum: float,
    eps: float,
    cudnn_enabled: bool,
) -> torch.Tensor:
    """Keras ``BatchNormalization.call(training=True)`` over channel axis 1, with
    ``aten.batch_norm``'s arguments (``momentum`` is torch's, ``1 - `` Keras's).

    Statistics as ``tf.nn.moments`` (mean; mean squared difference from the stopped mean),
    moving statistics ``m·moving + (1 - m)·batch``, output as ``tf.nn.batch_normalization``:
    ``x·inv + (β - mean·inv)`` with ``inv = gamma/√(var + ε)``.
    """
    axes = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    mean = torch.mean(x, dim=axes, keepdim=True)
    variance = torch.mean(torch.square(x - mean.detach()), dim=axes, keepdim=True)
    keras_momentum = 1.0 - momentum
    with torch.no_grad():
        running_mean.copy_(
            running_mean * keras_momentum + mean.reshape(-1) * (1.0 - keras_momentum)
        )
        running_var.copy_(
            running_var * keras_momentum + variance.reshape(-1) * (1.0 - keras_momentum)
        )
    inv = torch.rsqrt(variance + eps)
    if weight is not None:
        inv = inv * weight.reshape(shape)
    offset = -mean * inv if bias is None else bias.reshape(shape) - mean * inv
    return x * inv + offset


def _frozen(node: torch.fx.Node, frozen: Container[str]) -> bool:
    """Whether the BatchNorm node's scale (or offset) is a frozen (non-trainable) tensor."""
    for arg in node.args[1:3]:
        if isinstance(arg, torch.fx.Node) and arg.op == "get_attr":
            return str(arg.target) in frozen
    return False


def set_training(module: torch.nn.Module, training: bool, frozen: Container[str] = ()) -> int:
    """Switch the module's BatchNorms (``nn.BatchNorm*d`` layers, or a ``torch.export``
    program's BatchNorm nodes) to Keras training arithmetic (or back to inference); returns
    how many were switched to training.  The module itself stays in ``eval()``: Dropout was
    not carried over, and only BatchNorm behaves differently in a Keras training step.

    ``frozen`` names the torch tensors of non-trainable TF variables: a BatchNorm whose
    scale is one of them stays in inference, as Keras runs a ``trainable=False``
    BatchNormalization with its moving statistics even in a training step.  Raises
    ``ValueError`` for a BatchNorm form it cannot switch.
    """
    if not isinstance(module, torch.fx.GraphModule):
        return _set_layers_training(module, training, frozen)
    count = 0
    changed = False
    for node in module.graph.nodes:
        if node.op != "call_function":
            continue
        if node.target in _UNSUPPORTED:
            raise ValueError(f"cannot switch {node.target} ({node.name}) to training mode")
        if node.target in (_ATEN_BATCH_NORM, keras_batch_norm):
            train = training and not _frozen(node, frozen)
            target = keras_batch_norm if train else _ATEN_BATCH_NORM
            changed |= node.target is not target
            node.target = target
            count += train
    if changed:
        module.recompile()
    return count


def _keras_forward(layer: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """``layer``'s forward in a Keras training step."""
    assert layer.running_mean is not None and layer.running_var is not None
    return keras_batch_norm(
        x,
        layer.weight,
        layer.bias,
        layer.running_mean,
        layer.running_var,
        True,
        0.1 if layer.momentum is None else layer.momentum,
        layer.eps,
        False,
    )


def _set_layers_training(module: torch.nn.Module, training: bool, frozen: Container[str]) -> int:
    """:func:`set_training` for a module built of ``nn.BatchNorm*d`` layers: an instance
    ``forward`` shadows the class's while training, removing it restores torch's."""
    count = 0
    for name, layer in module.named_modules():
        if not isinstance(layer, _BatchNorm):
            continue
        prefix = f"{name}." if name else ""
        train = training and f"{prefix}weight" not in frozen and f"{prefix}bias" not in frozen
        if train:
            layer.forward = functools.partial(_keras_forward, layer)  # type: ignore[method-assign]
            count += 1
        else:
            layer.__dict__.pop("forward", None)
    return count
