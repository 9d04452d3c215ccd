"""Dynamic dimensions other than batch (a sequence length) stay dynamic in model.onnx and
model.pt2; a dimension the module cannot keep dynamic is fixed, reported, and named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import pipeline
from pipeline.core.ort_runner import OrtRunner
from pipeline.core.torch_runner import run_torch
from pipeline.to_torch.importer import export_program

SEQUENCE_MODEL = """
import keras
from keras import layers

def tagger():
    keras.utils.set_random_seed(3)
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    h = layers.Embedding(40, 16, name="embedding")(tokens)
    h = layers.Dense(16, activation="gelu", name="proj")(h)
    a = layers.MultiHeadAttention(num_heads=2, key_dim=8, name="attention")(h, h)
    h = layers.LayerNormalization(name="norm")(h + a)
    pooled = layers.GlobalAveragePooling1D(name="pool")(h)
    return keras.Model(tokens, layers.Dense(5, name="logits")(pooled), name="tagger")
"""


@pytest.fixture(scope="module")
def sequence_run(tmp_path_factory: pytest.TempPathFactory) -> pipeline.ConversionResult:
    root = tmp_path_factory.mktemp("seq")
    (root / "tagger.py").write_text(SEQUENCE_MODEL)
    options = pipeline.ConvertOptions(input_ranges={"tokens": (0, 40)})
    return pipeline.convert(f"{root / 'tagger.py'}:tagger", root / "run", options)


def test_sequence_model_converts_with_no_static_dims(
    sequence_run: pipeline.ConversionResult,
) -> None:
    report = sequence_run.report
    assert report["static_dims"] == []
    assert report["inputs"][0]["shape"] == [2, 8]  # batch 2, the drawn sequence length
    assert all(c["pass"] for c in report["comparisons"]), report["comparisons"]


@pytest.mark.parametrize("length", [5, 11])
def test_two_sequence_lengths_agree(sequence_run: pipeline.ConversionResult, length: int) -> None:
    run = sequence_run.run_dir
    graph = onnx.load(str(run / "model.onnx"))
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert len(dims) == 2 and not dims[1].HasField("dim_value")  # dynamic in ONNX too
    tokens = np.random.default_rng(length).integers(0, 40, (3, length)).astype(np.int32)
    loaded = pipeline.load_torch(run)
    got = run_torch(loaded, {"tokens": tokens}, ["tokens"], ["logits"])["logits"]
    expected = OrtRunner(graph).run({"tokens": tokens})["logits"]
    assert got.shape == (3, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


class _FlattensTheSequence(torch.nn.Module):
    """Needs the sequence length to be 6: a weight sized for it."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(6 * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.reshape(x.shape[0], -1))


def test_a_dimension_that_cannot_be_dynamic_is_fixed_and_named(tmp_path: Path) -> None:
    example = [np.ones((2, 6, 4), np.float32)]
    fixed = export_program(
        _FlattensTheSequence(),
        example,
        tmp_path / "m.pt2",
        dynamic_axes=[[0, 1]],
        input_names=["x"],
    )
    assert [(d.input, d.axis, d.size) for d in fixed] == [("x", 1, 6)]
    assert fixed[0].reason  # what torch.export said when asked to keep it dynamic
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    assert program(torch.ones(5, 6, 4)).shape == (5, 2)  # batch still dynamic
