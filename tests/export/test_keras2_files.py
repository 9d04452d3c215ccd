"""Keras 2 files (written by ``tf-keras`` at test time) convert as Keras models: a legacy
``.h5`` through Keras 3's own loader with the config keys Keras 3 refuses translated, a Keras 2
SavedModel rebuilt from ``tf-keras`` as the same Keras 3 model.  Every variable is its own
torch tensor by construction (route ``stateless``), BatchNorm's moving statistics are buffers,
and every trainable variable's gradient is checked."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import pipeline
from pipeline.core.errors import BadInputError
from pipeline.export.worker.signature_export import SIGNATURE_ROUTE

CASES = Path(__file__).with_name("keras2_cases.py")
REPO = Path(__file__).resolve().parents[2]
RANGES = {"text_gru": {"tokens": (0, 20)}}
DEFAULT = {("conv_bn_lstm", "saved_model")}
"""The issue's own model as a Keras 2 SavedModel runs by default (tf-keras writes it as .h5,
which the .h5 route reads); the rest is slow."""


class Keras2Files:
    """Keras 2 files of keras2_cases.py, each written (by tf-keras, in a subprocess) the first
    time a test asks for it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.written: set[str] = set()

    def __call__(self, *cases: str) -> Path:
        """The directory holding the files of ``cases``."""
        missing = [c for c in cases if c not in self.written]
        if missing:
            subprocess.run(
                [sys.executable, str(CASES), str(self.root), *missing],
                check=True,
                capture_output=True,
                timeout=600,
            )
            self.written.update(missing)
        return self.root


@pytest.fixture(scope="module")
def keras2_files(tmp_path_factory: pytest.TempPathFactory) -> Keras2Files:
    """Writes Keras 2 files on demand (the issue's model and the refused one at once)."""
    # Found, not imported: tf_keras imports TensorFlow, which the pytest process must not.
    assert importlib.util.find_spec("tf_keras"), "tf-keras (make setup installs it) is missing"
    files = Keras2Files(tmp_path_factory.mktemp("keras2"))
    files("conv_bn_lstm", "time_major")
    return files


def _source(root: Path, case: str, fmt: str) -> Path:
    return root / (f"{case}.h5" if fmt == "h5" else case)


def _assert_full(result: Any, route: str = "stateless") -> dict[str, dict[str, Any]]:
    """Pass in full on ``route``: every trainable variable a trainable parameter of its own
    with its gradient checked, every other one a buffer."""
    report = result.report
    count = report["parameter_count"]
    assert result.verdict == "pass", count
    assert count["status"] == "full" and count["export_route"] == route, count
    rows = {r["tf_name"]: r for r in report["parameters"] if r["tf_name"]}
    parameters = dict(result.module.named_parameters())
    buffers = dict(result.module.named_buffers())
    trainable = {name for name, row in rows.items() if row["trainable"]}
    for row in rows.values():
        if row["trainable"]:
            assert row["torch_name"] in parameters, row
        else:
            assert row["torch_name"] in buffers, row
    checked = {g["tf_name"] for g in report["gradients"] if g["checked"]}
    assert checked == trainable and all(g["pass"] for g in report["gradients"])
    return rows


def _params(case: str, fmt: str) -> Any:
    marks = () if (case, fmt) in DEFAULT else (pytest.mark.slow,)
    return pytest.param(case, fmt, marks=marks, id=f"{case}-{fmt}")


@pytest.mark.parametrize(
    ("case", "fmt"),
    [
        _params(c, f)
        for c in ("conv_bn_lstm", "text_gru", "gru_v1", "attention", "convs")
        for f in ("h5", "saved_model")
    ],
)
def test_keras2_file_converts_in_full(
    case: str, fmt: str, keras2_files: Keras2Files, tmp_path: Path
) -> None:
    options = pipeline.ConvertOptions(input_ranges=RANGES.get(case, {}))
    result = pipeline.convert(_source(keras2_files(case), case, fmt), tmp_path / "run", options)
    rows = _assert_full(result)
    if case == "conv_bn_lstm":  # the model: BatchNorm a module, not folded
        bn = {n: r for n, r in rows.items() if "/bn/" in n}
        assert len(bn) == 4 and all(r["torch_name"] for r in bn.values()), bn
        assert rows["conv_bn_lstm/bn/moving_mean"]["torch_name"].endswith("running_mean")


@pytest.mark.slow  # the signature route runs by default in test_savedmodel_variables.py
def test_subclassed_keras2_saved_model_goes_through_its_signature(
    keras2_files: Keras2Files, tmp_path: Path
) -> None:
    """tf-keras cannot write a subclassed model's config, so Keras 3 cannot rebuild it: its
    serving signature is exported with the variables as inputs, and the route says why."""
    result = pipeline.convert(keras2_files("subclassed") / "subclassed", tmp_path / "run")
    route = result.report["parameter_count"]["export_route"]
    assert route.startswith(f"{SIGNATURE_ROUTE}: a Keras 2 SavedModel that Keras 3 cannot")
    rows = _assert_full(result, route)
    assert rows["subclassed/norm/moving_variance"]["torch_name"].endswith("running_var")


def test_time_major_true_is_refused_in_one_line(keras2_files: Keras2Files, tmp_path: Path) -> None:
    """Keras 3 has no time-major LSTM: the file is refused naming the layer and the key."""
    with pytest.raises(BadInputError) as raised:
        pipeline.convert(keras2_files("time_major") / "time_major.h5", tmp_path / "run")
    message = str(raised.value)
    assert "Keras 2 layer 'lstm' (LSTM) has time_major=True" in message
    assert "\n" not in message
    assert not (tmp_path / "run").exists()


def test_keras2_saved_model_without_tf_keras_says_what_to_install(
    keras2_files: Keras2Files,
) -> None:
    """Where tf-keras is not installed (made unimportable in the worker-side process), a Keras
    2 SavedModel is refused in one line naming the keras2 extra."""
    request = {
        "source": {
            "kind": "saved_model",
            "location": str(keras2_files("conv_bn_lstm") / "conv_bn_lstm"),
        },
        "input_specs": [],
    }
    script = (
        "import json, sys\n"
        "sys.modules['tf_keras'] = None\n"
        "from pipeline.core.errors import BadInputError\n"
        "from pipeline.export.worker.loading import load_model\n"
        "try:\n"
        f"    load_model(json.loads({json.dumps(request)!r}))\n"
        "except BadInputError as err:\n"
        "    print('REFUSED', err)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    refused = [line for line in done.stdout.splitlines() if line.startswith("REFUSED")]
    assert len(refused) == 1, done.stdout + done.stderr[-2000:]
    assert "is a Keras 2 SavedModel (keras_metadata.pb)" in refused[0]
    assert "pip install 'tf2torch[keras2]'" in refused[0]


def test_tf_keras_installed_without_full_tensorflow() -> None:
    """The Makefile installs tf-keras with ``--no-deps`` at its ``constraints.txt`` pin (it
    declares a full ``tensorflow``), with the ``keras2`` extra; no full TensorFlow is there."""
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"pip install .*--no-deps .*tf-keras==2\.21\.0", makefile)
    assert re.search(r"keras2[,\]]", makefile)
    assert "tf_keras==2.21.0" in (REPO / "constraints.txt").read_text().splitlines()
    assert importlib.metadata.version("tf-keras") == "2.21.0"
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("tensorflow")
