"""The keras-hub corpus (``models/keras_hub.py``): real ``keras_hub.models`` backbones built
tiny from their constructors, every variable redrawn, converted with default options.

Each must pass three ways with every trainable variable mapped to its own named parameter and
every gradient checked.  The catalog (``models/catalog.py`` ``HUB``) says which run by default
(``slow=False``); the rest are ``make test-slow``.

keras-hub is installed by the project's own files (``make setup``: the ``hub`` extra, then
``keras-hub`` itself with ``--no-deps``, pinned in ``constraints.txt``), because it declares
``tensorflow-text``, which pulls a full ``tensorflow`` beside ``tensorflow-cpu``.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import pytest
from test_end_to_end import assert_three_way_pass

import pipeline
from pipeline.commands.demo import load_catalog
from pipeline.core.ort_runner import OrtRunner
from pipeline.core.torch_runner import run_torch

REPO = Path(__file__).resolve().parents[1]
HUB_FILE = REPO / "models" / "keras_hub.py"
HUB = load_catalog().HUB
KERAS_HUB_VERSION = "0.32.0"


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_keras_hub_installed_without_full_tensorflow() -> None:
    """keras-hub is there at its pin, on ``tensorflow-cpu``, and neither ``tensorflow`` nor
    ``tensorflow-text`` (which keras-hub declares, and which pulls ``tensorflow``) is."""
    assert importlib.metadata.version("keras-hub") == KERAS_HUB_VERSION
    assert _installed("tensorflow-cpu")
    assert not _installed("tensorflow"), "a full tensorflow is installed beside tensorflow-cpu"
    assert not _installed("tensorflow-text"), "tensorflow-text is installed (it pulls tensorflow)"
    # What keras-hub imports in place of its declared dependencies comes from the `hub` extra.
    for name in ("regex", "kagglehub", "kagglesdk", "sentencepiece", "tokenizers"):
        assert _installed(name), name


def test_keras_hub_installed_by_the_project_files() -> None:
    """The Makefile installs keras-hub with ``--no-deps`` at the version ``constraints.txt``
    pins, and the main install takes the ``hub`` extra."""
    makefile = (REPO / "Makefile").read_text()
    assert re.search(
        r"pip install .*--no-deps .*keras-hub==" + re.escape(KERAS_HUB_VERSION), makefile
    )
    extras = re.search(r"pip install .*-e '\.\[([a-z0-9,]+)\]'", makefile)
    assert extras and "hub" in extras.group(1).split(","), "the main install lacks the hub extra"
    pins = (REPO / "constraints.txt").read_text().splitlines()
    assert f"keras-hub=={KERAS_HUB_VERSION}" in pins
    assert not any(re.match(r"tensorflow(-text)?==", line) for line in pins)


def test_catalog_names_every_factory() -> None:
    """``HUB`` and the public factories of ``models/keras_hub.py`` are the same names (read
    from the source: no TensorFlow in the test process)."""
    tree = ast.parse(HUB_FILE.read_text())
    factories = {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and not node.name.startswith("_")
        and not node.args.args
    }
    assert factories == set(HUB)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=[pytest.mark.slow] if entry.slow else [], id=name)
        for name, entry in HUB.items()
    ],
)
def test_keras_hub_backbone_converts(name: str, tmp_path: Path) -> None:
    entry = HUB[name]
    options = pipeline.ConvertOptions(input_ranges=dict(entry.input_ranges))
    start = time.perf_counter()
    try:
        result = pipeline.convert(f"{HUB_FILE}:{name}", tmp_path / name, options)
    except Exception as exc:  # recorded for the results table, then failed as it is
        line = str(exc).splitlines()[0] if str(exc) else ""
        _record(
            {"backbone": name, "verdict": "error", "error": f"{type(exc).__name__}: {line}"}, start
        )
        raise
    report = result.report
    _record(_row(name, result), start)
    assert_three_way_pass(result)
    assert report["parameter_count"]["status"] == "full", report["parameter_count"]
    mapped = [r for r in report["parameters"] if r["tf_name"]]
    assert mapped and all(r["torch_name"] for r in mapped if r["trainable"]), mapped
    gradients = report["gradients"]
    assert gradients and all(g["pass"] for g in gradients), gradients
    # Every integer input the model has was drawn from its catalog range.
    integer_inputs = {s["name"] for s in report["inputs"] if "int" in s["dtype"]}
    assert integer_inputs == set(entry.input_ranges)
    _assert_other_shapes_agree(result.run_dir, entry.input_ranges)
    source = (result.run_dir / "torch_model" / "model.py").read_text()
    assert ".item()" not in source and ".tolist()" not in source
    for pattern in CODE_READS.get(name, ()):
        assert re.search(pattern, source), pattern


CODE_READS: dict[str, tuple[str, ...]] = {
    # A decoder LLM: rotary embedding, attention and MLP under the Keras layer names, the
    # positions computed from the input's length, not from the example's.
    "llama": (
        r"# transformer_layer_0: LlamaTransformerDecoder",
        r"torch\.arange\(0, \w+\.shape\[1\], 1, dtype=torch\.float32",
        r"rotary_embedding\w* = torch\.(sin|cos)\(",
        r"self\.transformer_layer_1\.self_attention\.query\(",
        r"self\.transformer_layer_1\.feedforward_gate_dense\(",
    ),
    # A text encoder: the position table sliced to the input's length.
    "bert": (r"self\.position_embedding\.\w+\[:\w+\.shape\[1\]",),
}
"""Regular expressions each backbone's generated ``model.py`` must match."""


def _row(name: str, result: pipeline.ConversionResult) -> dict[str, object]:
    """The results table's row of one conversion."""
    report = result.report
    rows = [r for r in report["parameters"] if r["tf_name"]]
    ratios = [c["max_abs"] / c["atol"] for c in report["comparisons"] if c["atol"] > 0]
    gradients = report["gradients"]
    return {
        "backbone": name,
        "verdict": result.verdict,
        "status": report["parameter_count"]["status"],
        "variables": f"{sum(1 for r in rows if r['torch_name'])}/{len(rows)}",
        "unused": sum(1 for r in rows if r.get("unused")),
        "gradients": f"{sum(1 for g in gradients if g['pass'] and g.get('checked', True))}"
        f"/{len(gradients)}",
        "worst_over_tolerance": max(ratios, default=0.0),
        "error": "",
    }


def _record(row: dict[str, object], start: float) -> None:
    """Append ``row`` to ``$TF2TORCH_HUB_TABLE`` (``make keras-hub`` renders it)."""
    table = os.environ.get("TF2TORCH_HUB_TABLE")
    if table:
        row["seconds"] = round(time.perf_counter() - start, 1)
        with Path(table).open("a") as out:
            out.write(json.dumps(row) + "\n")


def _assert_other_shapes_agree(run_dir: Path, ranges: Mapping[str, tuple[int, int]]) -> None:
    """The generated module and model.onnx agree at batch 1 and 7 and, for text inputs, at two
    more sequence lengths, within the run's own ort-torch tolerance."""
    report = json.loads((run_dir / "report.json").read_text())
    tolerance = {
        c["output"]: (c["atol"], c["rtol"])
        for c in report["comparisons"]
        if c["pair"] == "ort-torch"
    }
    golden = np.load(run_dir / "golden.npz")
    names = [s["name"] for s in report["inputs"]]
    inputs = {name: golden[f"input/{name}"] for name in names}
    graph = onnx.load(str(run_dir / "model.onnx"))
    outputs = [o.name for o in graph.graph.output]  # the module returns them in this order
    dynamic = {
        i.name: [not d.HasField("dim_value") for d in i.type.tensor_type.shape.dim]
        for i in graph.graph.input
    }
    # An axis model.pt2 had to fix (SigLIP's text adds its whole position table) keeps its size.
    for fixed in report["static_dims"]:
        dynamic[fixed["input"]][fixed["axis"]] = False
    loaded = pipeline.load_torch(run_dir)
    ort = OrtRunner(graph)
    rng = np.random.default_rng(11)
    for batch, length in ((1, 5), (7, 12)):
        drawn = {}
        for name, value in inputs.items():
            shape = [batch, *value.shape[1:]]
            if len(shape) > 1 and dynamic[name][1]:
                shape[1] = length
            if name in ranges:
                low, high = ranges[name]
                drawn[name] = rng.integers(low, high, shape).astype(value.dtype)
            else:
                drawn[name] = rng.normal(size=shape).astype(value.dtype)
            if name == "padding_mask":
                drawn[name] = np.ones(shape, value.dtype)
        got = run_torch(loaded, drawn, names, outputs)
        expected = ort.run(drawn)
        for output in outputs:
            atol, rtol = tolerance[output]
            assert got[output].shape == expected[output].shape, output
            np.testing.assert_allclose(got[output], expected[output], rtol=rtol, atol=atol)
