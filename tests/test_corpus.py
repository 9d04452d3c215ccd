"""The real-network corpus (``models/applications.py``): every ``keras.applications`` network,
``weights=None`` with calibrated BatchNorm, converted with default options.

Each must pass three ways with every trainable variable mapped and every gradient checked,
run at batch 1 and 7, and still fail on each planted fault of ``tests/mutations.py``.  Slow:
``make test-slow`` (or ``make corpus``, which also writes the README's table to
``runs/corpus.md``).  The keras-hub-style text backbones
(``models/text.py``: dict inputs, masks, dynamic sequence length) are small and run by default.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from mutations import MUTATIONS, plant
from test_end_to_end import assert_dynamic_batch, assert_three_way_pass

import pipeline
from pipeline.commands.demo import load_catalog
from pipeline.core.ort_runner import OrtRunner
from pipeline.core.torch_runner import run_torch

REPO = Path(__file__).resolve().parents[1]
APPLICATIONS = REPO / "models" / "applications.py"
CORPUS = load_catalog().CORPUS
SEED = int(os.environ.get("TF2TORCH_CORPUS_SEED", "0"))
TABLE = Path(os.environ.get("TF2TORCH_CORPUS_TABLE", REPO / "runs" / "corpus.jsonl"))
# Planting the faults costs more than the conversion (eight checks per network); a false-alarm
# rerun at another seed may skip them (``make corpus CORPUS_SEED=N CORPUS_FAULTS=0``).
PLANT_FAULTS = os.environ.get("TF2TORCH_CORPUS_FAULTS", "1") != "0"


def _resolution(report: dict[str, Any]) -> float:
    """The gate's relative resolution: the largest tolerance over the output's scale."""
    floors = report["tolerances"]["noise_floor"] or {}
    return max(
        (
            c["atol"] / floors[c["output"]]["scale"]
            for c in report["comparisons"]
            if c["output"] in floors
        ),
        default=0.0,
    )


def _headroom(report: dict[str, Any]) -> float | None:
    """The worst comparison's max error over its tolerance (a false alarm is above 1)."""
    ratios = [c["max_abs"] / c["atol"] for c in report["comparisons"] if c["atol"] > 0]
    return max(ratios) if ratios else None


def _worst(report: dict[str, object], pair: str) -> float:
    comparisons = report["comparisons"]
    assert isinstance(comparisons, list)
    return max(float(c["max_abs"]) for c in comparisons if c["pair"] == pair)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus_network_converts(name: str, tmp_path: Path) -> None:
    start = time.perf_counter()
    # A rerun (``TF2TORCH_CORPUS_SEED``) draws other weights and other inputs.
    options = pipeline.ConvertOptions(seed=SEED)
    result = pipeline.convert(f"{APPLICATIONS}:{name}", tmp_path / name, options)
    seconds = time.perf_counter() - start
    report = result.report
    count = report["parameter_count"]
    row = {
        "network": name,
        "seed": os.environ.get("TF2TORCH_CORPUS_SEED", "default"),
        "size": CORPUS[name],
        "verdict": result.verdict,
        "tf-ort": _worst(report, "tf-ort"),
        "tf-torch": _worst(report, "tf-torch"),
        "ort-torch": _worst(report, "ort-torch"),
        "variables": f"{sum(1 for r in report['parameters'] if r['torch_name'] and r['tf_name'])}"
        f"/{sum(1 for r in report['parameters'] if r['tf_name'])}",
        "status": count.get("status"),
        "gradients": f"{sum(1 for g in report['gradients'] if g['pass'])}/{len(report['gradients'])}",
        "export_s": round(report["stages"]["export"]["seconds"], 1),
        "total_s": round(seconds, 1),
    }
    # Still sharp: each planted fault must fail the golden check (margin: how far past the
    # tolerance it landed, on the worst pair that reads the mutated artifact).
    planting = PLANT_FAULTS and result.verdict == "pass"
    outcomes = [plant(result.run_dir, m) for m in MUTATIONS] if planting else []
    row["mutations"] = {o.mutation: round(o.margin, 2) for o in outcomes}
    row["below_resolution"] = [o.mutation for o in outcomes if o.below_resolution]
    row["resolution"] = _resolution(report)
    row["worst_over_atol"] = _headroom(report)
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    with TABLE.open("a") as table:
        table.write(json.dumps(row) + "\n")
    assert_three_way_pass(result)
    assert count["status"] == "full", count
    assert all(o.untouched_passes for o in outcomes), outcomes
    # A fault the check cannot resolve (its exact effect under 1.5x the tolerance: see
    # tests/mutations.py) is measured and shown, not asserted; every other must fail.
    assert all(o.caught for o in outcomes if not o.below_resolution), outcomes
    with np.load(result.run_dir / "golden.npz") as golden:
        inputs = {
            k.removeprefix("input/"): golden[k] for k in golden.files if k.startswith("input/")
        }
    names = [s["name"] for s in report["inputs"]]
    outputs = sorted({c["output"] for c in report["comparisons"]})
    assert_dynamic_batch(result.run_dir, result.module, inputs, names, outputs)


TEXT_MODELS = REPO / "models" / "text.py"
TEXT_OUTPUTS = {"bert_encoder": {"sequence_output", "pooled_output"}, "gpt_decoder": {"logits"}}


@pytest.mark.parametrize(
    "name",
    [
        # The encoder by default; the decoder (causal mask, the same dict inputs) is slow.
        pytest.param(n, marks=[pytest.mark.slow] if n != "bert_encoder" else [])
        for n in load_catalog().TEXT
    ],
)
def test_text_backbone_converts_with_dict_inputs(name: str, tmp_path: Path) -> None:
    """keras-hub-style backbones: dict inputs and outputs keep their names, the sequence
    length stays dynamic (two lengths, neither the traced one), masks and all."""
    ranges = load_catalog().TEXT[name]
    options = pipeline.ConvertOptions(input_ranges=dict(ranges))
    result = pipeline.convert(f"{TEXT_MODELS}:{name}", tmp_path / name, options)
    assert_three_way_pass(result)
    report = result.report
    assert {s["name"] for s in report["inputs"]} == set(ranges)
    assert report["static_dims"] == []
    names = [s["name"] for s in report["inputs"]]
    graph = onnx.load(str(result.run_dir / "model.onnx"))
    outputs = [o.name for o in graph.graph.output]  # the module returns them in this order
    assert set(outputs) == TEXT_OUTPUTS[name]  # the Keras model's dict keys
    assert {c["output"] for c in report["comparisons"]} == TEXT_OUTPUTS[name]
    ort = OrtRunner(graph)
    loaded = pipeline.load_torch(result.run_dir)
    rng = np.random.default_rng(0)
    for length in (5, 13):
        inputs = {
            k: rng.integers(lo, hi, (3, length)).astype(np.int32) for k, (lo, hi) in ranges.items()
        }
        got = run_torch(loaded, inputs, names, outputs)
        expected = ort.run(inputs)
        for o in outputs:
            assert got[o].shape == expected[o].shape and got[o].shape[0] == 3, o
            if got[o].ndim == 3:  # per-token outputs follow the sequence length
                assert got[o].shape[1] == length, (o, got[o].shape)
            np.testing.assert_allclose(got[o], expected[o], rtol=1e-4, atol=1e-5)
