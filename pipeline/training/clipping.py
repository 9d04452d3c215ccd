"""Keras's gradient clipping (``clipnorm``, ``global_clipnorm``, ``clipvalue``) in torch.

Keras clips inside ``optimizer.apply``, before weight decay and the update
(``BaseOptimizer._clip_gradients``), with at most one of the three set:

- ``clipnorm``: **each variable on its own** is scaled to norm ≤ ``clipnorm``
  (TensorFlow's ``clip_by_norm``: ``g·c / max(‖g‖, c)``).  torch's ``clip_grad_norm_``
  clips all parameters together; that is Keras's ``global_clipnorm``, not ``clipnorm``.
- ``global_clipnorm``: all gradients by one factor ``c·min(1/‖g‖, 1/c)``, ``‖g‖`` the norm
  over every variable (``clip_by_global_norm``).
- ``clipvalue``: each element clamped to ``[-v, v]`` (``clip_grad_value_`` does the same).

A TF variable held in several torch tensors is one group: its norm spans all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pipeline.training.config import OptimizerConfig


def _squared_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum of squares over the tensors of one TF variable."""
    return torch.sum(torch.stack([torch.sum(torch.square(t)) for t in tensors]))


@dataclass(frozen=True)
class GradientClipping:
    """Which clipping Keras's optimizer does (all None: none)."""

    clipnorm: float | None = None
    global_clipnorm: float | None = None
    clipvalue: float | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.clipnorm, self.global_clipnorm, self.clipvalue))

    @torch.no_grad()
    def __call__(self, groups: Sequence[Sequence[torch.Tensor]]) -> None:
        """Clip the ``.grad`` of every tensor in place; ``groups`` holds the tensors of one
        TF variable each."""
        grads = [[t.grad for t in group if t.grad is not None] for group in groups]
        grads = [g for g in grads if g]
        if self.clipnorm is not None:
            c = self.clipnorm
            for group in grads:
                l2sum = _squared_norm(group)
                # clip_by_norm: a zero gradient keeps norm 0 (no 0/0)
                norm = torch.sqrt(l2sum) if float(l2sum) > 0 else l2sum
                denominator = torch.maximum(norm, torch.tensor(c, dtype=norm.dtype))
                for g in group:
                    g.copy_(g * c / denominator)
        elif self.global_clipnorm is not None:
            c = self.global_clipnorm
            squared = torch.stack([_squared_norm(group) for group in grads])
            norm = torch.sqrt(torch.sum(squared))
            scale = c * torch.minimum(1.0 / norm, torch.tensor(1.0 / c, dtype=norm.dtype))
            scale = scale + (norm - norm)  # NaN for an infinite norm, as Keras
            for group in grads:
                for g in group:
                    g.mul_(scale)
        elif self.clipvalue is not None:
            v = self.clipvalue
            for group in grads:
                for g in group:
                    g.clamp_(-v, v)


def clipping_of(optimizer: OptimizerConfig) -> GradientClipping:
    """The clipping ``optimizer``'s config asks for, with Keras's precedence (``clipnorm``,
    then ``global_clipnorm``, then ``clipvalue``; 0 means off)."""
    for key in ("clipnorm", "global_clipnorm", "clipvalue"):
        value = optimizer.option(key)
        if value and float(value) > 0:
            return GradientClipping(**{key: float(value)})
    return GradientClipping()
