"""The 19 gallery-style models of issue 24 (``models/gallery.py``) convert in full.

Each must PASS three ways, with every Keras variable its own torch tensor (parameter count
``full``) and every trainable variable's gradient checked against TensorFlow's.  TensorFlow
runs only in the worker: this file never imports ``models/gallery.py``.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import pipeline

GALLERY_FILE = Path(__file__).resolve().parents[1] / "models" / "gallery.py"
PAIRS = {"tf-ort", "tf-torch", "ort-torch"}
LOOP = "ONNX Loop: issue 24 Loop converter in progress"


@dataclass(frozen=True)
class GalleryEntry:
    """One factory of ``models/gallery.py`` and how to convert it."""

    input_ranges: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    slow: bool = False
    """Left out of the default suite: its code path is covered by a faster model there."""
    xfail: str | None = None


GALLERY: dict[str, GalleryEntry] = {
    # The default suite: the kinds issue 24 found failing that need no ONNX Loop (a custom
    # layer with raw TF ops and a mask, Conv3D + MaxPool3D gradients, an integer argmax head,
    # scalar max under torch.export, GroupNorm), about 10 s each on an idle machine.
    "custom_matmul_pool": GalleryEntry({"tokens": (0, 20)}),
    "conv3d_video": GalleryEntry(),
    "argmax_head": GalleryEntry(),
    "siamese": GalleryEntry(),
    "group_norm_block": GalleryEntry(),
    # Slow: 10-25 s of conversion each, on code paths other default tests run.
    "seq2seq_lstm": GalleryEntry(slow=True),
    "unet": GalleryEntry(slow=True),
    "vae": GalleryEntry(slow=True),
    "captcha_ocr": GalleryEntry(slow=True),
    "pointnet": GalleryEntry(slow=True),
    "vit": GalleryEntry(slow=True),
    "mlp_mixer": GalleryEntry(slow=True),
    "dcgan": GalleryEntry(slow=True),
    "wavenet": GalleryEntry(slow=True),
    "ticket_classifier": GalleryEntry({"title": (0, 30), "body": (0, 30)}, slow=True),
    "text_transformer": GalleryEntry({"tokens": (0, 40)}, slow=True),
    "timeseries_transformer": GalleryEntry(slow=True),
    "masked_lstm": GalleryEntry({"tokens": (0, 20)}, slow=True),
    "conv_lstm2d": GalleryEntry(slow=True),
}


def _params() -> list[object]:
    params = []
    for name, entry in GALLERY.items():
        marks: list[pytest.MarkDecorator] = [pytest.mark.slow] if entry.slow else []
        if entry.xfail:
            marks.append(pytest.mark.xfail(strict=True, reason=entry.xfail))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def test_every_factory_is_listed() -> None:
    """19 models, exactly the public factories of the file (read with ast: no TensorFlow)."""
    tree = ast.parse(GALLERY_FILE.read_text())
    factories = {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")
    }
    assert len(GALLERY) == 19 and set(GALLERY) == factories


def assert_converts_in_full(result: pipeline.ConversionResult) -> None:
    """PASS on every pair of every output, every variable mapped, every gradient checked."""
    report = result.report
    assert result.verdict == "pass", [c for c in report["comparisons"] if not c["pass"]] or [
        g for g in report["gradients"] if not g["pass"]
    ]
    outputs = {c["output"] for c in report["comparisons"]}
    for output in outputs:
        assert {c["pair"] for c in report["comparisons"] if c["output"] == output} == PAIRS
    count = report["parameter_count"]
    assert count["status"] == "full" and count["pass"], count
    assert count["tf_trainable"] == count["torch_trainable"] > 0, count
    assert report["gradient_check"]["status"] == "checked", report["gradient_check"]
    trainable = {r["tf_name"] for r in report["parameters"] if r["trainable"] and r["tf_name"]}
    checked = {g["tf_name"] for g in report["gradients"] if g["checked"]}
    assert checked == trainable, trainable - checked
    assert all(g["pass"] for g in report["gradients"])


@pytest.mark.parametrize("name", _params())
def test_gallery_model_converts_in_full(name: str, tmp_path: Path) -> None:
    entry = GALLERY[name]
    options = pipeline.ConvertOptions(input_ranges=dict(entry.input_ranges))
    result = pipeline.convert(f"{GALLERY_FILE}:{name}", tmp_path / "run", options)
    assert_converts_in_full(result)
    if name == "custom_matmul_pool":
        # The add_weight matrix tf.matmul reads is a named, trainable parameter of its layer.
        [row] = [r for r in result.report["parameters"] if r["tf_name"] == "pool/proj"]
        assert row["trainable"] and row["torch_name"].startswith("pool."), row
        module = pipeline.load_torch(result.run_dir)
        assert module.get_parameter(row["torch_name"]).requires_grad
