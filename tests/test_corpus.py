"""The real-network corpus (``models/applications.py``): every ``keras.applications`` network,
``weights=None`` with calibrated BatchNorm, converted with default options.

Each must pass three ways with every trainable variable mapped and every gradient checked,
and run at batch 1 and 7.  Slow: ``make test-slow`` (or ``make corpus``, which also writes
the README's table to ``runs/corpus.md``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from test_end_to_end import assert_dynamic_batch, assert_three_way_pass

import pipeline
from pipeline.commands.demo import load_catalog

REPO = Path(__file__).resolve().parents[1]
APPLICATIONS = REPO / "models" / "applications.py"
CORPUS = load_catalog().CORPUS
TABLE = Path(os.environ.get("TF2TORCH_CORPUS_TABLE", REPO / "runs" / "corpus.jsonl"))


def _worst(report: dict[str, object], pair: str) -> float:
    comparisons = report["comparisons"]
    assert isinstance(comparisons, list)
    return max(float(c["max_abs"]) for c in comparisons if c["pair"] == pair)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus_network_converts(name: str, tmp_path: Path) -> None:
    start = time.perf_counter()
    result = pipeline.convert(f"{APPLICATIONS}:{name}", tmp_path / name)
    seconds = time.perf_counter() - start
    report = result.report
    count = report["parameter_count"]
    row = {
        "network": name,
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
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    with TABLE.open("a") as table:
        table.write(json.dumps(row) + "\n")
    assert_three_way_pass(result)
    assert count["status"] == "full", count
    with np.load(result.run_dir / "golden.npz") as golden:
        inputs = {k.removeprefix("input/"): golden[k] for k in golden.files if k.startswith("input/")}
    names = [s["name"] for s in report["inputs"]]
    outputs = sorted({c["output"] for c in report["comparisons"]})
    assert_dynamic_batch(result.run_dir, result.module, inputs, names, outputs)
