"""The CI gate installs without TensorFlow: a real environment built from the base
dependencies only (``pip install -c constraints.txt .``, reusing the wheels pip already has),
where ``check --golden-only`` passes on a run directory and ``convert`` refuses in one line.

Slow (building the environment copies torch and its CUDA libraries): ``make test-slow``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "models" / "zoo.py"


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


@pytest.mark.slow
def test_gate_in_an_environment_without_tensorflow(tmp_path: Path) -> None:
    run = tmp_path / "run"
    made = subprocess.run(
        [sys.executable, "-m", "pipeline", "convert", f"{ZOO}:dense_mlp", "-o", str(run), "-q"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert made.returncode == 0, made.stderr

    # Build from a copy of the sources so the build never writes into the checkout.
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "*.egg-info"))
    venv = tmp_path / "base"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "-c", str(REPO / "constraints.txt"), str(src)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    python, cli = venv / "bin" / "python", venv / "bin" / "tf2torch"

    for absent in ("tensorflow", "tf2onnx", "keras"):
        probe = subprocess.run([str(python), "-c", f"import {absent}"], capture_output=True)
        assert probe.returncode != 0, f"{absent} is installed in the base environment"

    gate = subprocess.run(
        [str(cli), "check", str(run), "--golden-only", "--read-only"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert gate.returncode == 0, gate.stdout + gate.stderr

    refused = subprocess.run(
        [str(cli), "convert", f"{ZOO}:dense_mlp", "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "tf2torch: error: tf2torch convert needs TensorFlow (tensorflow, tf2onnx not "
        "installed): pip install 'tf2torch[tf]'"
    ]
    assert not (tmp_path / "out").exists()
    print(
        f"\nbase environment {_size_mb(venv):.0f} MB; "
        f"full environment {_size_mb(Path(sys.prefix)):.0f} MB"
    )
