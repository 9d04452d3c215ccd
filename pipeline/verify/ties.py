"""TensorFlow's MaxPool3D gradient, reproduced in torch, so the gradient check can tell its
tie routing from a conversion fault.

Measured on this machine (tensorflow-cpu 2.21, CPU kernel, with and without oneDNN): the
gradient of ``tf.nn.max_pool3d`` goes in full to *every* element of a window that lies
within 1e-5 (absolute) of the window's maximum, not to one of them: a window holding
0.7394865 and 0.73949087 passes the whole gradient to both, and one holding 1.0 and 1.00001
to the larger only, at any scale from 1e-3 to 100.  ``max_pool2d`` routes an exact tie to
one element, as torch does.  Torch's ``max_pool3d`` gives the gradient to one element, so
wherever two elements of a window are that close (after a ReLU, a window of zeros is one,
but the ReLU then stops the gradient; two positive values 1e-5 apart are the ones that
show) the two frameworks' gradients of everything before the pool differ, by as much as
the gradient of that window: a Conv3D -> BatchNorm -> ReLU -> MaxPool3D network's first
kernel was 24 % off with outputs equal to 6e-8.

:func:`tf_max_pool3d_routing` runs a module with every ``max_pool3d`` call's backward routed
TF's way (the forward values unchanged), and counts the windows where that differs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

TF_MAX_POOL3D_TIE = 1e-5
"""TF's CPU MaxPool3D gradient treats elements this close (absolute) to the window's
maximum as tied with it, and gives each the full gradient."""


def _triple(
    value: int | Sequence[int] | None, default: tuple[int, int, int]
) -> tuple[int, int, int]:
    if value is None or (isinstance(value, Sequence) and len(value) == 0):
        return default
    if isinstance(value, int):
        return (value, value, value)
    items = tuple(int(v) for v in value)
    return (items[0],) * 3 if len(items) == 1 else (items[0], items[1], items[2])


def tf_routed_max_pool3d(
    x: torch.Tensor,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
) -> tuple[torch.Tensor, int]:
    """``F.max_pool3d``'s value, with TF's backward: the output's gradient goes in full to
    every element of its window within :data:`TF_MAX_POOL3D_TIE` of the maximum.  Returns
    the pooled tensor and the number of windows with more than one such element."""
    kernel = _triple(kernel_size, (1, 1, 1))
    strides = _triple(stride, kernel)
    pads = _triple(padding, (0, 0, 0))
    dilations = _triple(dilation, (1, 1, 1))
    out = F.max_pool3d(x, kernel, strides, pads, dilations, ceil_mode)
    # Pad with -inf so the windows are exactly the pool's, ceil_mode's partial ones included.
    widths: list[int] = []
    for axis in (2, 1, 0):  # F.pad lists the last dimension first
        span = dilations[axis] * (kernel[axis] - 1) + 1
        needed = (out.shape[2 + axis] - 1) * strides[axis] + span
        extra = max(0, needed - (x.shape[2 + axis] + 2 * pads[axis]))
        widths += [pads[axis], pads[axis] + extra]
    windows = F.pad(x, widths, value=float("-inf"))
    for axis in range(3):
        span = dilations[axis] * (kernel[axis] - 1) + 1
        windows = windows.unfold(2 + axis, span, strides[axis])[..., :: dilations[axis]]
    windows = windows[:, :, : out.shape[2], : out.shape[3], : out.shape[4]]
    flat = windows.reshape(*windows.shape[:5], -1)
    tied = (out.detach().unsqueeze(-1) - flat.detach()) <= TF_MAX_POOL3D_TIE
    surrogate = torch.where(tied, flat, torch.zeros_like(flat)).sum(-1)
    # The value is the pool's own; only the gradient takes the surrogate's path.
    routed = out.detach() + (surrogate - surrogate.detach())
    return routed, int((tied.sum(-1) > 1).sum())


class _TfMaxPool3dRouting(TorchFunctionMode):
    """Every ``max_pool3d`` call (functional, ``nn.MaxPool3d``) routed by
    :func:`tf_routed_max_pool3d`; :attr:`tied_windows` counts the windows that differ."""

    def __init__(self) -> None:
        super().__init__()
        self.tied_windows = 0
        self.pools = 0

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        if func in (F.max_pool3d, torch.max_pool3d) and not kwargs.get("return_indices"):
            kwargs.pop("return_indices", None)
            routed, tied = tf_routed_max_pool3d(*args, **kwargs)
            self.tied_windows += tied
            self.pools += 1
            return routed
        return func(*args, **kwargs)


@contextmanager
def tf_max_pool3d_routing() -> Iterator[_TfMaxPool3dRouting]:
    """Within the block, every torch ``max_pool3d`` differentiates as TF's MaxPool3D does;
    the yielded object's ``tied_windows`` counts the windows where that differs from torch
    (and ``pools`` the pool calls seen)."""
    mode = _TfMaxPool3dRouting()
    with mode:
        yield mode
