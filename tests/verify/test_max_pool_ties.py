"""TF's MaxPool3D gradient routes near-ties to every tied element (``pipeline.verify.ties``);
the gradient check recognises that and still fails a planted fault.

TensorFlow runs only in subprocesses (the TF worker through ``pipeline.convert``, or a
script): never in the pytest process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pipeline
from pipeline.verify.stage import check_gradients
from pipeline.verify.ties import TF_MAX_POOL3D_TIE, tf_max_pool3d_routing, tf_routed_max_pool3d

GALLERY_FILE = Path(__file__).resolve().parents[2] / "models" / "gallery.py"

# Pool geometries (kernel, stride, TF padding): non-overlapping, overlapping, and SAME with
# partial windows at the border.
GEOMETRIES = [
    ((2, 2, 2), (2, 2, 2), "VALID"),
    ((3, 3, 3), (2, 2, 2), "VALID"),
    ((1, 2, 3), (1, 2, 2), "SAME"),
]

_TF_SCRIPT = """
import sys, numpy as np, tensorflow as tf
data = np.load(sys.argv[1]); out = {}
for i in range(int(data["count"])):
    x = tf.constant(data[f"x{i}"]); g = data[f"g{i}"]
    kernel, stride, pad = [tuple(int(v) for v in data[f"k{i}"])], [tuple(int(v) for v in data[f"s{i}"])], str(data[f"p{i}"])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.nn.max_pool3d(x, kernel[0], stride[0], pad)
        loss = tf.reduce_sum(y * g)
    out[f"y{i}"] = y.numpy(); out[f"dx{i}"] = tape.gradient(loss, x).numpy()
np.savez(sys.argv[2], **out)
"""


def _near_tied(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values on a coarse grid plus offsets around TF's tie distance, so windows hold exact
    ties, near-ties just inside and just outside 1e-5, and clear maxima."""
    base = rng.integers(0, 4, size=shape).astype(np.float32) * 0.25
    offsets = rng.choice([0.0, 0.0, 3e-6, 8e-6, 2e-5, 1e-3], size=shape)
    return (base + offsets).astype(np.float32)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def test_routing_reproduces_tensorflows_max_pool3d_gradient(tmp_path: Path) -> None:
    """The emulation's gradient equals TF's on windows with exact and near ties (and plain
    torch's does not, so the cases do hold ties TF routes its own way)."""
    rng = np.random.default_rng(0)
    cases = {"count": np.array(len(GEOMETRIES))}
    for i, (kernel, stride, pad) in enumerate(GEOMETRIES):
        x = _near_tied(rng, (2, 5, 6, 7, 3))  # NDHWC
        cases |= {f"x{i}": x, f"k{i}": np.array(kernel), f"s{i}": np.array(stride)}
        cases[f"p{i}"] = np.array(pad)
        out_shape = (
            [2]
            + [
                (-(-n // s) if pad == "SAME" else (n - k) // s + 1)
                for n, k, s in zip(x.shape[1:4], kernel, stride, strict=True)
            ]
            + [3]
        )
        cases[f"g{i}"] = rng.standard_normal(out_shape).astype(np.float32)
    np.savez(tmp_path / "cases.npz", **cases)
    done = subprocess.run(
        [sys.executable, "-c", _TF_SCRIPT, str(tmp_path / "cases.npz"), str(tmp_path / "tf.npz")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    tf_side = np.load(tmp_path / "tf.npz")
    for i, (kernel, stride, pad) in enumerate(GEOMETRIES):
        x = torch.from_numpy(cases[f"x{i}"]).permute(0, 4, 1, 2, 3).requires_grad_(True)
        if pad == "SAME":
            widths: list[int] = []
            for axis in (2, 1, 0):
                widths += _same_pads(x.shape[2 + axis], kernel[axis], stride[axis])
            padded = F.pad(x, widths, value=float("-inf"))
        else:
            padded = x
        g = torch.from_numpy(cases[f"g{i}"]).permute(0, 4, 1, 2, 3)
        routed, tied = tf_routed_max_pool3d(padded, kernel, stride)
        (routed * g).sum().backward()
        ours = x.grad.permute(0, 2, 3, 4, 1).numpy()
        np.testing.assert_array_equal(
            routed.detach().permute(0, 2, 3, 4, 1).numpy(), tf_side[f"y{i}"]
        )
        np.testing.assert_allclose(ours, tf_side[f"dx{i}"], rtol=0, atol=1e-6)
        assert tied > 0
        plain = torch.autograd.grad((F.max_pool3d(padded, kernel, stride) * g).sum(), x)[0]
        assert not np.allclose(plain.permute(0, 2, 3, 4, 1).numpy(), tf_side[f"dx{i}"], atol=1e-3)


@pytest.mark.parametrize(
    "geometry",
    [
        {"kernel_size": 2},
        {"kernel_size": 3, "stride": 2, "padding": 1},
        {"kernel_size": (1, 3, 2), "stride": (1, 2, 2), "ceil_mode": True},
        {"kernel_size": 2, "stride": 1, "dilation": 2, "padding": 1, "ceil_mode": True},
    ],
)
def test_routing_is_torchs_own_where_nothing_is_tied(geometry: dict[str, object]) -> None:
    """Distinct values more than the tie distance apart, any window geometry (padding,
    ceil_mode, dilation, overlap): the same values and gradients as ``F.max_pool3d``."""
    x = (
        torch.randperm(2 * 3 * 5 * 7 * 6)
        .reshape(2, 3, 5, 7, 6)
        .double()
        .mul(TF_MAX_POOL3D_TIE * 10)
    )
    x.requires_grad_(True)
    g = torch.randn(F.max_pool3d(x, **geometry).shape, dtype=torch.float64)  # type: ignore[arg-type]
    with tf_max_pool3d_routing() as routing:
        y = F.max_pool3d(x, **geometry)  # type: ignore[arg-type]
        routed = torch.autograd.grad((y * g).sum(), x)[0]
    assert routing.pools == 1 and routing.tied_windows == 0
    plain_y = F.max_pool3d(x, **geometry)  # type: ignore[arg-type]
    assert torch.equal(y, plain_y)
    # Overlapping windows sum their gradients in another order: float64 rounding apart.
    expected = torch.autograd.grad((plain_y * g).sum(), x)[0]
    torch.testing.assert_close(routed, expected, rtol=0, atol=1e-12)


def _still_video(path: Path) -> Path:
    """Two still videos (every frame the same): the first pool's windows over frames 2-3 and
    4-5 hold exact ties."""
    rng = np.random.default_rng(7)
    frame = rng.standard_normal((2, 1, 12, 12, 2)).astype(np.float32)
    np.savez(path, video=np.repeat(frame, 8, axis=1))
    return path


def test_conv3d_still_video_passes_by_the_tie_rule_and_a_planted_fault_fails(
    tmp_path: Path,
) -> None:
    """Conv3D -> BatchNorm -> ReLU -> MaxPool3D on a still video: torch's own gradients of
    the layers before the pool differ from TF's (ties), the tie-aware rule passes them and
    says so; then a wrong kernel element in the converted module fails the check."""
    options = pipeline.ConvertOptions(inputs=_still_video(tmp_path / "still.npz"))
    result = pipeline.convert(f"{GALLERY_FILE}:conv3d_video", tmp_path / "run", options)
    assert result.verdict == "pass", [g for g in result.report["gradients"] if not g["pass"]]
    rows = {g["tf_name"]: g for g in result.report["gradients"]}
    assert all(g["checked"] and g["pass"] for g in rows.values())
    tied = {name for name, g in rows.items() if "MaxPool3D tie routing" in g["note"]}
    assert "conv0/kernel" in tied, rows["conv0/kernel"]
    assert not {"logits/kernel", "logits/bias"} & tied  # after the pools: no ties involved

    golden = np.load(result.run_dir / "golden.npz")
    inputs = {"video": golden["input/video"]}
    args = (result.module, result.parameters, inputs, ["video"], ["logits"])
    honest, _ = check_gradients(*args, result.tf_gradients, result.loss_weights)
    assert all(c.passed for c in honest)
    with torch.no_grad():
        result.module.get_parameter("conv0.weight")[0, 0, 1, 1, 1] += 0.05
    faulty, _ = check_gradients(*args, result.tf_gradients, result.loss_weights)
    failed = {c.tf_name for c in faulty if not c.passed}
    assert "conv0/kernel" in failed, [(c.tf_name, c.max_abs, c.note) for c in faulty]


@pytest.mark.parametrize("scale", [1e-3, 1.0, 100.0])
def test_tie_distance_is_absolute(scale: float) -> None:
    """Two elements ``TF_MAX_POOL3D_TIE / 2`` apart are tied at any scale, ``2x`` apart not
    (TF measured: 1.0 vs 1.000002 tied, 1.0 vs 1.00001 not, 100 vs 100.0004 not)."""
    for gap, expected in ((TF_MAX_POOL3D_TIE / 2, 2), (TF_MAX_POOL3D_TIE * 2, 1)):
        x = torch.zeros(1, 1, 2, 2, 2, dtype=torch.float64)
        x[0, 0, 0, 0, 0], x[0, 0, 1, 1, 1] = scale, scale + gap
        x.requires_grad_(True)
        y, _ = tf_routed_max_pool3d(x, 2)
        (grad,) = torch.autograd.grad(y.sum(), x)
        assert int((grad != 0).sum()) == expected
