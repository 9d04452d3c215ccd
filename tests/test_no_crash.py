"""Every crash path closed: each ends in a verdict or one classified line, never a traceback.

- gradient stage: no trainable variables, integer/boolean outputs only, TF unable to
  differentiate -> skipped with the reason; mixed outputs -> the integer ones listed;
- an unexpected exception -> ``internal error in <stage>: ...`` (exit 2) and a log file;
- ``check --golden-only`` on a golden.npz whose outputs are not the graph's -> exit 2 naming them;
- a pass ONNX Runtime could not check numerically -> said on the terminal and in the report.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import pipeline
from pipeline import cli
from pipeline.core.run_dir import write_npz

REPO = Path(__file__).resolve().parents[1]

FACTORIES = textwrap.dedent(
    """
    import keras
    import tensorflow as tf
    from keras import layers, ops


    def no_variables():
        x = keras.Input((4,), name="x")
        return keras.Model(x, layers.ReLU(name="relu")(x))


    def integer_and_boolean_outputs():
        x = keras.Input((4,), name="x")
        h = layers.Dense(3, name="dense")(x)
        label = layers.Lambda(lambda t: ops.cast(t > 0, "int32"), name="label")(h)
        mask = layers.Lambda(lambda t: ops.greater(t, 0.0), name="mask")(h)
        return keras.Model(x, [label, mask])


    def gelu_and_label():
        x = keras.Input((4,), name="x")
        h = layers.Dense(3, activation=keras.activations.gelu, name="dense")(x)
        label = layers.Lambda(lambda t: ops.cast(t > 0, "int32"), name="label")(h)
        return keras.Model(x, [h, label])


    class BrokenGradient(layers.Layer):
        # A custom layer whose hand-written gradient is wrong: TF cannot differentiate it.
        def call(self, t):
            @tf.custom_gradient
            def double(v):
                def grad(dy):
                    return tf.reshape(dy, (-1, 7))
                return 2.0 * v, grad
            return double(t)


    def broken_gradient():
        x = keras.Input((4,), name="x")
        return keras.Model(x, BrokenGradient(name="broken")(layers.Dense(3, name="dense")(x)))
    """
)


@pytest.fixture(scope="module")
def factories(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("factories") / "crashy.py"
    path.write_text(FACTORIES)
    return path


def _convert(factories: Path, name: str, out: Path) -> pipeline.ConversionResult:
    return pipeline.convert(f"{factories}:{name}", out, pipeline.ConvertOptions(safe_mode=False))


def test_a_model_without_trainable_variables_passes_with_gradients_skipped(
    factories: Path, tmp_path: Path
) -> None:
    result = _convert(factories, "no_variables", tmp_path / "run")
    assert result.verdict == "pass"
    check = result.report["gradient_check"]
    assert check["status"] == "skipped"
    assert check["reason"] == "the model has no trainable variables"
    assert result.report["gradients"] == []
    assert result.report["stages"]["gradients"]["skipped"] == check["reason"]


def test_integer_and_boolean_outputs_only_skip_gradients_naming_them(
    factories: Path, tmp_path: Path
) -> None:
    result = _convert(factories, "integer_and_boolean_outputs", tmp_path / "run")
    assert result.verdict == "pass", result.report["comparisons"]
    check = result.report["gradient_check"]
    assert check["status"] == "skipped"
    assert "no floating-point output to differentiate" in check["reason"]
    assert "label (int32)" in check["reason"] and "mask (bool)" in check["reason"]


def test_tensorflow_unable_to_differentiate_skips_gradients_with_its_error(
    factories: Path, tmp_path: Path
) -> None:
    result = _convert(factories, "broken_gradient", tmp_path / "run")
    assert result.verdict == "pass", result.report["comparisons"]
    check = result.report["gradient_check"]
    assert check["status"] == "skipped"
    assert check["reason"].startswith("TensorFlow cannot differentiate the model: ")


@pytest.fixture(scope="module")
def gelu_run(
    tmp_path_factory: pytest.TempPathFactory, factories: Path
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """``gelu_and_label`` converted by the CLI: its run directory and the finished process."""
    run = tmp_path_factory.mktemp("runs") / "gelu_and_label"
    proc = subprocess.run(
        [
            sys.executable, "-m", "pipeline", "convert", f"{factories}:gelu_and_label",
            "-o", str(run), "--unsafe",
        ],
        capture_output=True, text=True, cwd=REPO, timeout=600, check=False,
    )  # fmt: skip
    return run, proc


def test_mixed_outputs_and_an_unchecked_pass_are_said_on_the_terminal(
    gelu_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    """Exact gelu leaves TF's Erfc in the raw graph, which ONNX Runtime cannot run: the erfc
    pass is checked for validity only, and the terminal says so, as it lists the integer
    output the gradient loss leaves out."""
    run, proc = gelu_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "integer/boolean outputs left out of the loss: label" in proc.stdout
    assert "gradients: 2/2 agree" in proc.stdout
    assert "fixup: 1 pass(es) not checked numerically: erfc (" in proc.stdout
    assert "the raw graph is not valid ONNX" in proc.stdout
    report = json.loads((run / "report.json").read_text())
    [erfc] = [p for p in report["passes"] if p["name"] == "erfc"]
    assert erfc["check"] == "validity" and "Erfc" in erfc["note"]
    assert "Pass erfc not checked numerically" in (run / "report.md").read_text()


def test_an_unexpected_exception_is_one_line_naming_the_stage_and_a_log(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A bug (here: the export stage raising KeyError) ends with exit 2 and one line, the
    traceback in the log file it names, never on the terminal and never exit 1."""

    def buggy_export(*args: object, **kwargs: object) -> None:
        raise KeyError("golden")

    monkeypatch.setattr("pipeline.api.export_model", buggy_export)
    monkeypatch.setenv("TF2TORCH_LOG_DIR", str(tmp_path / "logs"))
    code = cli.main(
        ["convert", f"{REPO / 'models' / 'zoo.py'}:dense_relu", "-o", str(tmp_path / "r"), "-q"]
    )
    err = capsys.readouterr().err
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("tf2torch: internal error in export: KeyError: 'golden' (details: ")
    log = Path(lines[0].rsplit("(details: ", 1)[1].rstrip(")"))
    assert log.parent == tmp_path / "logs"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "buggy_export" in text
    assert "stage: export" in text
    assert not (tmp_path / "r").exists()


def _rewrite_golden(run: Path, tmp_path: Path, keep: set[str], extra: str | None) -> Path:
    copy = tmp_path / "run"
    copy.mkdir()
    for f in run.iterdir():
        if f.is_file():
            (copy / f.name).write_bytes(f.read_bytes())
    with np.load(copy / "golden.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    outputs = {k: v for k, v in arrays.items() if k.startswith("output/")}
    kept = {k: v for k, v in arrays.items() if not k.startswith("output/") or k[7:] in keep}
    if extra:
        kept[f"output/{extra}"] = next(iter(outputs.values()))
    write_npz(copy / "golden.npz", kept)
    return copy


def test_golden_only_check_names_outputs_golden_lacks_or_adds(
    gelu_run: tuple[Path, subprocess.CompletedProcess[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    two_output_run = gelu_run[0]
    names = [k[7:] for k in np.load(two_output_run / "golden.npz").files if k.startswith("output/")]
    assert len(names) == 2
    run = _rewrite_golden(two_output_run, tmp_path, keep={names[0]}, extra="stale_head")
    code = cli.main(["check", str(run), "--golden-only", "--read-only"])
    err = capsys.readouterr().err
    assert code == 2
    [line] = [ln for ln in err.splitlines() if ln.strip()]
    assert line.startswith("tf2torch: error: ")
    assert f"lacks the model output(s) {names[1]}" in line
    assert "holds output(s) stale_head the model does not have" in line
    # The untouched run still passes the same check: the error is about the outputs.
    assert cli.main(["check", str(two_output_run), "--golden-only", "--read-only"]) == 0


def test_an_unexpected_exception_in_check_names_its_stage(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text(json.dumps({"source": "x.py:f", "verdict": "pass"}))

    def buggy_read(path: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("pipeline.verify.check.read_golden", buggy_read)
    monkeypatch.setenv("TF2TORCH_LOG_DIR", str(tmp_path / "logs"))
    assert cli.main(["check", str(run), "--golden-only"]) == 2
    [line] = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert line.startswith(
        "tf2torch: internal error in read run: ZeroDivisionError: division by zero (details: "
    )
    assert len(list((tmp_path / "logs").iterdir())) == 1


def test_a_dying_tf_worker_keeps_its_log_where_the_error_says(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The worker's log lives in the staging run directory, which a failed run removes: the
    one-line error points at the copy kept beside the (never created) run directory."""
    factory = tmp_path / "dies.py"
    factory.write_text(
        "import os, sys\n"
        "def make():\n"
        "    print('worker about to abort', flush=True)\n"
        "    os.abort()\n"
    )
    assert cli.main(["convert", f"{factory}:make", "-o", str(tmp_path / "run"), "-q"]) == 2
    [line] = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert "TensorFlow worker was killed by SIGABRT" in line
    assert "last log line: worker about to abort" in line
    log = Path(line.rsplit("(worker log: ", 1)[1].rstrip(")"))
    assert log == tmp_path / "run.failed" / "tf_worker.log"
    assert "worker about to abort" in log.read_text()
    assert 'dies.py", line 4 in make' in log.read_text()  # the crash's Python stack, kept
    assert not (tmp_path / "run").exists()
