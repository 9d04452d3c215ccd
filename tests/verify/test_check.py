"""The CI equivalence gate ``tf2torch check``: passes clean runs, catches every mutation.

Real stack, nothing mocked: runs are made with ``pipeline.convert`` from the zoo, mutated on
disk (``model.pt2`` through ``torch.export.load``/``save``, ``model.onnx`` through its
initializers and attributes) and checked through the CLI.  The golden-only check also runs
in a subprocess where ``import tensorflow`` fails, as in a PyTorch deployment's CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import pipeline
from pipeline.cli import main
from pipeline.commands.demo import load_catalog
from pipeline.verify.check import check_run

REPO = Path(__file__).resolve().parents[2]
ZOO = load_catalog().ZOO
ALL_PAIRS = {"tf-ort", "tf-torch", "ort-torch"}
# Checked three times in the default run; the rest of the zoo is in `make test-slow`.
QUICK_ZOO = ("scale_layer_net", "attention_pooling")


def _convert(name: str, out: Path) -> Path:
    entry = ZOO[name]
    options = pipeline.ConvertOptions(
        input_ranges=dict(entry.input_ranges), keep_batchnorm=entry.keep_batchnorm
    )
    result = pipeline.convert(f"{REPO}/models/zoo.py:{name}", out, options)
    assert result.verdict == "pass", result.report["comparisons"]
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Convert a zoo model once per module; returns its (pristine) run directory."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = _convert(name, tmp_path_factory.mktemp("runs") / name)
        return cache[name]

    return get


def _copy(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / run.name
    shutil.copytree(run, target)
    return target


def _check(*args: str) -> int:
    return main(["check", *args])


def _failed_pairs(run: Path) -> set[str]:
    report = json.loads((run / "report.json").read_text())
    return {c["pair"] for c in report["comparisons"] if not c["pass"]}


# --- golden-only without TensorFlow ----------------------------------------------------------

NO_TF = """raise ModuleNotFoundError("No module named 'tensorflow' (hidden by the test)")\n"""


def _without_tensorflow(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python finds a ``tensorflow`` that fails to import."""
    blocker = tmp_path / "no_tensorflow"
    blocker.mkdir()
    for name in ("tensorflow", "tf2onnx", "keras"):
        (blocker / f"{name}.py").write_text(NO_TF.replace("tensorflow", name))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), str(REPO)])
    return env


def test_golden_only_check_runs_without_tensorflow(
    converted: Callable[[str], Path], tmp_path: Path
) -> None:
    run = _copy(converted("scale_layer_net"), tmp_path)  # model.onnx has a tf2torch-domain node
    env = _without_tensorflow(tmp_path)
    probe = subprocess.run(
        [sys.executable, "-c", "import tensorflow"], env=env, capture_output=True, text=True
    )
    assert probe.returncode != 0 and "hidden by the test" in probe.stderr
    junit = tmp_path / "out" / "check.xml"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "check",
            str(run),
            "--golden-only",
            "--junit",
            str(junit),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS" in done.stdout
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "0", "0")
    cases = {(c.get("classname"), c.get("name")) for c in suite.iter("testcase")}
    assert cases == {(f"tf2torch.{run.name}.{p}", "logits") for p in ALL_PAIRS}
    report = json.loads((run / "report.json").read_text())
    assert report["verdict"] == "pass"
    assert [c["mode"] for c in report["checks"]] == ["golden-only"]
    assert report["parameters"] and report["gradients"]  # the rest of the report is kept


def test_full_check_reruns_tensorflow(converted: Callable[[str], Path], tmp_path: Path) -> None:
    run = _copy(converted("dense_mlp"), tmp_path)
    result = check_run(run)
    assert result, [str(c) for c in result.comparisons]
    assert {c.pair for c in result.comparisons} == {"golden-tf", *ALL_PAIRS}
    golden_tf = next(c for c in result.comparisons if c.pair == "golden-tf")
    assert golden_tf.max_abs is not None and golden_tf.max_abs <= 1e-6


# --- the gate must be able to fail -------------------------------------------------------


def _mutate_pt2(run: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """Edit the ExportedProgram's parameters in place and save it back."""
    program = torch.export.load(str(run / "model.pt2"))
    with torch.no_grad():
        edit(program.state_dict)
    torch.export.save(program, str(run / "model.pt2"))


def _mutate_onnx(run: Path, edit: Callable[[onnx.ModelProto], None]) -> None:
    model = onnx.load(str(run / "model.onnx"))
    edit(model)
    onnx.save(model, str(run / "model.onnx"))


def _edit_initializer(
    model: onnx.ModelProto, name_part: str, edit: Callable[[np.ndarray], np.ndarray]
) -> None:
    (init,) = [i for i in model.graph.initializer if name_part in i.name]
    init.CopyFrom(numpy_helper.from_array(edit(numpy_helper.to_array(init).copy()), init.name))


def _swap_rows(array: np.ndarray, axis: int) -> np.ndarray:
    order = [1, 0, *range(2, array.shape[axis])]
    return np.take(array, order, axis=axis)


# scale_layer_net: x[16] -> dense_in (16->32, relu) -> ScaleLayer -> logits (32->4).
# model.pt2 holds torch layouts (Linear weight [out, in]); model.onnx holds Keras's ([in, out]),
# each variable an initializer named after its path.
_PT2, _ONNX = "model.pt2", "model.onnx"
MUTATIONS = {
    "weight_1e-3_pt2": (
        _PT2,
        lambda sd: sd["dense_in.weight"].mul_(1 + 1e-3),
    ),
    "weight_1e-3_onnx": (
        _ONNX,
        lambda m: _edit_initializer(m, "dense_in/kernel", lambda w: w * (1 + 1e-3)),
    ),
    "bias_dropped_pt2": (_PT2, lambda sd: sd["logits.bias"].zero_()),
    "bias_dropped_onnx": (
        _ONNX,
        lambda m: _edit_initializer(m, "logits/bias", np.zeros_like),
    ),
    "input_channels_swapped_pt2": (
        _PT2,
        lambda sd: sd["dense_in.weight"].copy_(sd["dense_in.weight"][:, [1, 0, *range(2, 16)]]),
    ),
    "input_channels_swapped_onnx": (
        _ONNX,
        lambda m: _edit_initializer(m, "dense_in/kernel", lambda w: _swap_rows(w, axis=0)),
    ),
}
# Pairs that involve the mutated artifact must fail, the one that does not must still pass.
FAILING = {_PT2: {"tf-torch", "ort-torch"}, _ONNX: {"tf-ort", "ort-torch"}}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_mutation_is_caught(
    mutation: str, converted: Callable[[str], Path], tmp_path: Path
) -> None:
    artifact, edit = MUTATIONS[mutation]
    run = _copy(converted("scale_layer_net"), tmp_path)
    if artifact == _PT2:
        _mutate_pt2(run, edit)
    else:
        _mutate_onnx(run, edit)
    junit = tmp_path / "check.xml"
    assert _check(str(run), "--golden-only", "--junit", str(junit)) == 1
    assert _failed_pairs(run) == FAILING[artifact]
    report = json.loads((run / "report.json").read_text())
    assert report["verdict"] == "fail" and report["checks"][-1]["verdict"] == "fail"
    failures = ET.parse(junit).getroot().findall(".//failure")
    assert len(failures) == 2
    assert all("max_abs=" in (f.get("message") or "") for f in failures)
    assert all("mismatch=" in (f.get("message") or "") for f in failures)


def test_softmax_over_the_wrong_axis_is_caught(
    converted: Callable[[str], Path], tmp_path: Path
) -> None:
    """dense_mlp ends in Softmax over its 10 classes; over the batch axis (2 rows) it differs."""
    run = _copy(converted("dense_mlp"), tmp_path)

    def batch_axis(model: onnx.ModelProto) -> None:
        (softmax,) = [n for n in model.graph.node if n.op_type == "Softmax"]
        del softmax.attribute[:]
        softmax.attribute.append(onnx.helper.make_attribute("axis", 0))

    _mutate_onnx(run, batch_axis)
    assert _check(str(run), "--golden-only") == 1
    assert _failed_pairs(run) == FAILING[_ONNX]


def test_tolerances_default_to_the_runs_and_can_be_overridden(
    converted: Callable[[str], Path], tmp_path: Path
) -> None:
    run = _copy(converted("scale_layer_net"), tmp_path)
    _mutate_pt2(run, MUTATIONS["weight_1e-3_pt2"][1])
    assert _check(str(run), "--golden-only", "--read-only") == 1
    assert _check(str(run), "--golden-only", "--read-only", "--atol", "1e-2") == 0
    assert _check(str(run), "--golden-only", "--read-only", "--output-tol", "logits=1e-2:0") == 0
    report_path = run / "report.json"
    report = json.loads(report_path.read_text())
    assert "checks" not in report  # --read-only wrote nothing
    report["tolerances"]["atol"] = 1e-2  # as if converted with --atol 1e-2
    report_path.write_text(json.dumps(report))
    assert _check(str(run), "--golden-only") == 0
    assert _check(str(run), "--golden-only", "--atol", "1e-4") == 1


# --- and must not cry wolf -----------------------------------------------------------------


def _zoo_params() -> list[object]:
    return [
        pytest.param(name, marks=[] if name in QUICK_ZOO else [pytest.mark.slow], id=name)
        for name, entry in ZOO.items()
        if entry.expected == "pass" and not entry.slow
    ]


@pytest.mark.parametrize("name", _zoo_params())
def test_zoo_model_passes_three_checks_in_a_row(
    name: str, converted: Callable[[str], Path], tmp_path: Path
) -> None:
    run = _copy(converted(name), tmp_path)
    for _ in range(3):
        result = check_run(run, golden_only=True)
        assert result, [str(c) for c in result.failures]
    report = json.loads((run / "report.json").read_text())
    assert report["verdict"] == "pass"
    assert [c["verdict"] for c in report["checks"]] == ["pass"] * 3


# --- could not check: exit 2, one line --------------------------------------------------------


def _garble(path: Path) -> None:
    path.write_bytes(b"\x00 not what it should be " * 10)


BROKEN: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing_dir": (lambda run: shutil.rmtree(run), "not found"),
    "not_a_run": (lambda run: (run / "report.json").unlink(), "not a tf2torch run directory"),
    "corrupt_report": (lambda run: _garble(run / "report.json"), "cannot read"),
    "no_golden": (lambda run: (run / "golden.npz").unlink(), "golden.npz not found"),
    "corrupt_golden": (lambda run: _garble(run / "golden.npz"), "cannot read"),
    "no_onnx": (lambda run: (run / "model.onnx").unlink(), "no model.onnx"),
    "corrupt_onnx": (lambda run: _garble(run / "model.onnx"), "model.onnx"),
    "no_pt2": (lambda run: (run / "model.pt2").unlink(), "no model.pt2"),
    "corrupt_pt2": (lambda run: _garble(run / "model.pt2"), "cannot load"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_unusable_run_directory_exits_2_with_one_line(
    case: str,
    converted: Callable[[str], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    breaker, message = BROKEN[case]
    run = _copy(converted("dense_mlp"), tmp_path)
    breaker(run)
    junit = tmp_path / "check.xml"
    assert _check(str(run), "--golden-only", "--junit", str(junit)) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("tf2torch: error: "), err
    assert message in lines[0], lines[0]
    errors = ET.parse(junit).getroot().findall(".//error")
    assert len(errors) == 1 and message in (errors[0].get("message") or "")


def test_cli_error_has_no_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "check", str(tmp_path / "nope"), "--golden-only"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert "not found" in done.stderr
