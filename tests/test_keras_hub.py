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
import re
from pathlib import Path

import pytest
from test_end_to_end import assert_three_way_pass

import pipeline
from pipeline.commands.demo import load_catalog

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
    assert ".[tf,dev,hub]" in makefile
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
    result = pipeline.convert(f"{HUB_FILE}:{name}", tmp_path / name, options)
    assert_three_way_pass(result)
    report = result.report
    assert report["parameter_count"]["status"] == "full", report["parameter_count"]
    mapped = [r for r in report["parameters"] if r["tf_name"]]
    assert mapped and all(r["torch_name"] for r in mapped if r["trainable"]), mapped
    gradients = report["gradients"]
    assert gradients and all(g["pass"] for g in gradients), gradients
    # Every integer input the model has was drawn from its catalog range.
    integer_inputs = {s["name"] for s in report["inputs"] if "int" in s["dtype"]}
    assert integer_inputs == set(entry.input_ranges)
