"""The command line as a user meets it: help, exit codes, one-line errors, nothing half written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "models" / "zoo.py"


def tf2torch(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run the CLI as ``python -m pipeline`` in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        check=False,
    )


def assert_clean_error(proc: subprocess.CompletedProcess[str], message: str) -> None:
    """Exit 2, one line on stderr that says ``message``, and no traceback."""
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tf2torch: error: ")
    assert message in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


def test_help_lists_commands_and_options() -> None:
    top = tf2torch("--help")
    assert top.returncode == 0 and "convert" in top.stdout and "demo" in top.stdout
    sub = tf2torch("convert", "--help")
    assert sub.returncode == 0
    for option in (
        "--inputs",
        "--seed",
        "--input-range",
        "--opset",
        "--atol",
        "--rtol",
        "--patches",
        "--custom-objects",
        "--input-spec",
        "--output-tol",
    ):
        assert option in sub.stdout


def _bad_inputs(tmp_path: Path) -> dict[str, list[str]]:
    """CLI argument lists that must each fail cleanly, keyed by the message they must give."""
    not_a_model = tmp_path / "just_a_dir"
    not_a_model.mkdir()
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(b"PK\x03\x04 this is not a whole zip archive")
    factory = tmp_path / "raising.py"
    factory.write_text("def make():\n    raise RuntimeError('weights file missing')\n")
    wrong_shape = tmp_path / "wrong_shape.npz"
    np.savez(wrong_shape, x=np.zeros((2, 11), np.float32))
    wrong_dtype = tmp_path / "wrong_dtype.npz"
    np.savez(wrong_dtype, x=np.zeros((2, 10), np.float64))
    dense = f"{ZOO}:dense_relu"
    return {
        "model not found": ["convert", str(tmp_path / "absent.keras")],
        "not a SavedModel": ["convert", str(not_a_model)],
        "cannot load": ["convert", str(truncated)],
        "raised RuntimeError: weights file missing": ["convert", f"{factory}:make"],
        "has shape [2, 11]": ["convert", dense, "--inputs", str(wrong_shape)],
        "is float64, the model expects float32": ["convert", dense, "--inputs", str(wrong_dtype)],
        "unknown --input-range name(s) nope": ["convert", dense, "--input-range", "nope=0:3"],
        "bad tolerance: rtol of output 'dense' is nan": [
            "convert",
            dense,
            "--output-tol",
            "dense=0:nan",
        ],
    }


BAD_INPUT_MESSAGES = [
    "model not found",
    "not a SavedModel",
    "cannot load",
    "raised RuntimeError: weights file missing",
    "has shape [2, 11]",
    "is float64, the model expects float32",
    "unknown --input-range name(s) nope",
    "bad tolerance: rtol of output 'dense' is nan",
]


@pytest.mark.parametrize("message", BAD_INPUT_MESSAGES)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(message: str, tmp_path: Path) -> None:
    bad_inputs = _bad_inputs(tmp_path)
    assert sorted(bad_inputs) == sorted(BAD_INPUT_MESSAGES)  # every case is a parameter
    args = bad_inputs[message]
    out = tmp_path / "runs" / "x"
    proc = tf2torch(*args, "-o", str(out), "-q")
    assert_clean_error(proc, message)
    # Nothing but the TF worker's log of the failure, which the error line names.
    left = sorted(p.relative_to(tmp_path) for p in tmp_path.glob("runs/**/*"))
    kept = [Path("runs/x.failed"), Path("runs/x.failed/tf_worker.log")]
    assert left in ([], kept), (message, left)
    if left:
        assert str(tmp_path / kept[1]) in proc.stderr, message


def test_error_keeps_the_previous_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.json").write_text('{"verdict": "pass"}')
    proc = tf2torch("convert", str(tmp_path / "absent.h5"), "-o", str(out))
    assert_clean_error(proc, "model not found")
    assert (out / "report.json").read_text() == '{"verdict": "pass"}'
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_patches_lists_builtin_and_user_patches(tmp_path: Path) -> None:
    (tmp_path / "my_gain.py").write_text(
        "from pipeline.passes import PassResult\n"
        "class Gain:\n"
        "    name = 'my_gain'\n"
        "    description = 'a user patch'\n"
        "    def apply(self, model):\n"
        "        return PassResult(model, 0)\n"
        "PATCH = Gain()\n"
    )
    proc = tf2torch("patches", "--patches", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    names = [
        "erfc",
        "variable_layout",
        "batch_norm",
        "layer_norm",
        "transposes",
        "conv_bias",
        "keras_gru_loop",
        "attention_pooling",
        "scale_layer",
        "my_gain",
    ]
    positions = [proc.stdout.index(n) for n in names]
    assert positions == sorted(positions)  # listed in the order they run


def test_patches_names_a_broken_user_patch(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import no_such_module_anywhere\n")
    proc = tf2torch("patches", "--patches", str(tmp_path))
    assert_clean_error(proc, "broken.py failed to import")


def test_quiet_convert_of_an_lstm_is_one_line_and_stderr_stays_empty(tmp_path: Path) -> None:
    # ONNX Runtime has no float64 LSTM: its float64 noise-floor run fails, and ORT used to
    # print that as a red error line on a run that passes.  It belongs in the report only.
    out = tmp_path / "lstm"
    proc = tf2torch("convert", f"{ZOO}:lstm", "-o", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"PASS {out}: worst "), proc.stdout
    assert lines[0].endswith(" s")
    unmeasured = json.loads((out / "report.json").read_text())["tolerances"]
    assert "does not support double" in unmeasured["noise_own_unmeasured"]["ort"]


def test_quiet_fail_names_what_failed(tmp_path: Path) -> None:
    out = tmp_path / "mlp"
    proc = tf2torch(
        "convert", f"{ZOO}:dense_mlp", "-o", str(out), "-q", "--atol", "0", "--rtol", "0"
    )
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stdout
    assert lines[0].startswith(f"FAIL {out}: ") and "out of tolerance" in lines[0], lines[0]


def test_a_string_input_is_refused_by_name(tmp_path: Path) -> None:
    factory = tmp_path / "lookup.py"
    factory.write_text(
        "import keras\n"
        "def make():\n"
        "    x = keras.Input((1,), dtype='string', name='text')\n"
        "    return keras.Model(x, keras.layers.StringLookup(vocabulary=['a', 'b'])(x))\n"
    )
    proc = tf2torch("convert", f"{factory}:make", "-o", str(tmp_path / "run"), "-q")
    assert_clean_error(proc, "input(s) text take strings")
    assert not (tmp_path / "run").exists()
