"""Constructor source for the modules that hold weights: ``nn.Conv2d(1, 32, kernel_size=3)``.

Each constructor is checked when it is made: evaluated with torch alone, it must build a
module of the same class whose ``extra_repr`` and tensor names, shapes and dtypes equal the
imported module's, so a wrong argument fails the generation instead of the weight loading.

Custom ops that a patch produced (``ScaleLayer``, ``AttentionPooling``) are classes defined
in the generated file: :data:`CUSTOM_CLASSES` gives each one's source and constructor.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from patches.attention_pooling import AttentionPooling
from patches.scale_layer import ScaleLayer
from pipeline.to_torch.codegen import literals


class ConstructorError(Exception):
    """No constructor source reproduces a module."""


def _opt(name: str, value: object, default: object) -> str:
    if value == default:
        return ""
    text = literals.int_or_tuple(value) if isinstance(value, tuple | list) else repr(value)
    return f", {name}={text}"


def _conv(module: nn.Module) -> str:
    assert isinstance(module, nn.modules.conv._ConvNd)
    rank = len(module.kernel_size)
    text = (
        f"{module.in_channels}, {module.out_channels}, "
        f"kernel_size={literals.int_or_tuple(module.kernel_size)}"
    )
    text += _opt("stride", tuple(module.stride), (1,) * rank)
    padding = module.padding if isinstance(module.padding, str) else tuple(module.padding)
    text += _opt("padding", padding, (0,) * rank)
    if module.transposed:
        text += _opt("output_padding", tuple(module.output_padding), (0,) * rank)
    text += _opt("dilation", tuple(module.dilation), (1,) * rank)
    text += _opt("groups", module.groups, 1)
    text += _opt("bias", module.bias is not None, True)
    text += _opt("padding_mode", module.padding_mode, "zeros")
    return text


def _linear(module: nn.Module) -> str:
    assert isinstance(module, nn.Linear)
    return f"{module.in_features}, {module.out_features}" + _opt(
        "bias", module.bias is not None, True
    )


def _batch_norm(module: nn.Module) -> str:
    assert isinstance(module, nn.modules.batchnorm._BatchNorm)
    return (
        f"{module.num_features}"
        + _opt("eps", module.eps, 1e-5)
        + _opt("momentum", module.momentum, 0.1)
        + _opt("affine", module.affine, True)
        + _opt("track_running_stats", module.track_running_stats, True)
    )


def _layer_norm(module: nn.Module) -> str:
    assert isinstance(module, nn.LayerNorm)
    shape = tuple(module.normalized_shape)
    text = str(shape[0]) if len(shape) == 1 else literals.ints(shape)
    return (
        text
        + _opt("eps", module.eps, 1e-5)
        + _opt("elementwise_affine", module.elementwise_affine, True)
        + _opt("bias", module.bias is not None or not module.elementwise_affine, True)
    )


def _recurrent(module: nn.Module) -> str:
    assert isinstance(module, nn.LSTM | nn.GRU)
    return (
        f"{module.input_size}, {module.hidden_size}"
        + _opt("num_layers", module.num_layers, 1)
        + _opt("bias", module.bias, True)
        + _opt("batch_first", module.batch_first, False)
        + _opt("bidirectional", module.bidirectional, False)
    )


def _embedding(module: nn.Module) -> str:
    assert isinstance(module, nn.Embedding)
    return f"{module.num_embeddings}, {module.embedding_dim}" + _opt(
        "padding_idx", module.padding_idx, None
    )


_ARGUMENTS: dict[type, Callable[[nn.Module], str]] = {
    nn.Conv1d: _conv,
    nn.Conv2d: _conv,
    nn.Conv3d: _conv,
    nn.ConvTranspose1d: _conv,
    nn.ConvTranspose2d: _conv,
    nn.ConvTranspose3d: _conv,
    nn.Linear: _linear,
    nn.BatchNorm1d: _batch_norm,
    nn.BatchNorm2d: _batch_norm,
    nn.BatchNorm3d: _batch_norm,
    nn.LayerNorm: _layer_norm,
    nn.LSTM: _recurrent,
    nn.GRU: _recurrent,
    nn.Embedding: _embedding,
}


@dataclass(frozen=True)
class CustomClass:
    """A patch's torch class as the generated file defines it."""

    source: str
    constructor: Callable[[nn.Module], str]


def _scale_layer(module: nn.Module) -> str:
    assert isinstance(module, ScaleLayer)
    shape = tuple(module.scale.shape)
    # torch.ones(()) for a scalar scale: torch.ones() with no size is an error.
    return f"ScaleLayer(torch.ones({', '.join(str(d) for d in shape) or '()'}))"


def _attention_pooling(module: nn.Module) -> str:
    assert isinstance(module, AttentionPooling)
    mask = literals.number(module.mask_value) if module.mask_value is not None else "None"
    return (
        f"AttentionPooling(nn.Linear({_linear(module.projection)}), "
        f"nn.Linear({_linear(module.score)}), mask_value={mask})"
    )


CUSTOM_CLASSES: dict[type, CustomClass] = {
    ScaleLayer: CustomClass(inspect.getsource(ScaleLayer), _scale_layer),
    AttentionPooling: CustomClass(inspect.getsource(AttentionPooling), _attention_pooling),
}


def constructor(module: nn.Module) -> str:
    """Source that builds a module like ``module`` (same class, sizes and options; its own
    initial values), checked by building it.  Raises :class:`ConstructorError`."""
    cls = type(module)
    custom = CUSTOM_CLASSES.get(cls)
    if custom is not None:
        text = custom.constructor(module)
    elif cls in _ARGUMENTS:
        text = f"nn.{cls.__name__}({_ARGUMENTS[cls](module)})"
    elif cls.__module__.startswith("torch.nn.modules"):
        text = f"nn.{cls.__name__}({module.extra_repr()})"
    else:
        raise ConstructorError(f"no constructor for {cls.__name__}")
    _check(module, text)
    return text


def _signature(module: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    return [
        (name, tuple(t.shape), t.dtype)
        for name, t in [*module.named_parameters(), *module.named_buffers()]
    ]


def build(text: str) -> nn.Module:
    """The module that constructor source ``text`` builds, with torch alone.  Raises
    :class:`ConstructorError` when it does not build."""
    namespace: dict[str, object] = {"torch": torch, "nn": nn}
    namespace.update({c.__name__: c for c in CUSTOM_CLASSES})
    try:
        built = eval(text, namespace)  # our own generated source, checked before writing
    except Exception as exc:
        raise ConstructorError(f"{text}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(built, nn.Module):
        raise ConstructorError(f"{text} does not build a module")
    return built


def frozen_parameters(module: nn.Module, built: nn.Module) -> list[str]:
    """The parameters of ``built`` (made from :func:`constructor`'s source) that must not
    train: frozen in ``module``, or a buffer there (a constant of the TF graph that the
    torch class keeps as a parameter, e.g. the ones of a BatchNorm without ``scale``)."""
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    return [name for name, _ in built.named_parameters() if name not in trainable]


def _check(module: nn.Module, text: str) -> None:
    built = build(text)
    same = (
        type(built) is type(module)
        and built.extra_repr() == module.extra_repr()
        and sorted(_signature(built), key=str) == sorted(_signature(module), key=str)
    )
    if not same:
        raise ConstructorError(f"{text} does not rebuild {module!r}")
