"""The fork server runs a worker module exactly as a new ``python -m`` process would, faster.

Each test runs a small worker module written into ``tmp_path`` through
:func:`pipeline.export.forkserver.run_module`, both forked from the server and spawned, and
checks what the worker saw and how it ended.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.export import forkserver

PROBE = """
import json, os, sys, time
print(json.dumps({
    "argv": sys.argv[1:],
    "cwd": os.getcwd(),
    "marker": os.environ.get("PROBE_MARKER"),
    "volatile": os.environ.get("PYTEST_CURRENT_TEST"),
    "tf_preloaded": "tensorflow" in sys.modules,
    "torch": "torch" in sys.modules,
}))
import onnx  # preloaded by the server: one module object, were workers not processes
print("leak from an earlier worker:", getattr(onnx, "_probe_leak", None))
onnx._probe_leak = sys.argv[1]
sys.stdout.flush()
action = sys.argv[2]
if action == "kill":
    os.kill(os.getpid(), 9)
if action == "kill-server":
    if "tensorflow" in sys.modules:  # forked: the parent is the server
        os.kill(os.getppid(), 9)
        time.sleep(60)
    sys.exit(7)
if action == "sleep":
    time.sleep(60)
sys.exit(int(action))
"""


@pytest.fixture(scope="module", autouse=True)
def _stop_server() -> Iterator[None]:
    # One server (one TensorFlow import) for the module's tests; none left for the next.
    yield
    forkserver._drop_server()


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A worker module ``probe_worker`` importable from the working directory ``tmp_path``."""
    (tmp_path / "probe_worker.py").write_text(PROBE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(
    probe: Path,
    mode: str,
    *args: str,
    marker: str = "a",
    timeout: float | None = 120,
    env: dict[str, str] | None = None,
) -> tuple[int, list[str]]:
    env = {**os.environ, "TF2TORCH_FORKSERVER": mode, "PROBE_MARKER": marker, **(env or {})}
    log = probe / f"{mode}-{args[0]}.log"
    code = forkserver.run_module("probe_worker", list(args), log, env, timeout)
    # The probe's own lines only (TensorFlow logs its start-up to the same file).
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith(("{", "leak"))]
    return code, lines


@pytest.mark.parametrize("mode", ["1", "0"])
def test_worker_sees_its_args_cwd_env_and_exit_code(probe: Path, mode: str) -> None:
    code, lines = _run(probe, mode, "first", "5")
    assert code == 5
    seen = json.loads(lines[0])
    assert seen["argv"] == ["first", "5"]
    assert Path(seen["cwd"]) == probe
    assert seen["marker"] == "a"
    assert seen["tf_preloaded"] is (mode == "1")  # forked from the server: imported already
    assert seen["torch"] is False
    assert lines[1] == "leak from an earlier worker: None"


def test_forked_workers_do_not_share_state(probe: Path) -> None:
    assert _run(probe, "1", "first", "0")[0] == 0
    code, lines = _run(probe, "1", "second", "0")
    assert code == 0
    assert lines[1] == "leak from an earlier worker: None"


def test_a_new_environment_gets_a_new_server(probe: Path) -> None:
    _run(probe, "1", "first", "0", marker="a", env={"PYTEST_CURRENT_TEST": "one"})
    first = forkserver._server
    # A volatile variable is passed on as it is, and keeps the server.
    code, lines = _run(probe, "1", "again", "0", marker="a", env={"PYTEST_CURRENT_TEST": "two"})
    assert code == 0 and forkserver._server is first
    assert json.loads(lines[0])["volatile"] == "two"
    code, lines = _run(probe, "1", "second", "0", marker="b")
    assert code == 0 and '"marker": "b"' in lines[0]
    assert forkserver._server is not None and forkserver._server is not first


@pytest.mark.parametrize("mode", ["1", "0"])
def test_a_killed_worker_reports_the_signal(probe: Path, mode: str) -> None:
    code, _ = _run(probe, mode, "first", "kill")
    assert code == -signal.SIGKILL


@pytest.mark.parametrize("mode", ["1", "0"])
def test_a_worker_past_its_timeout_is_killed(probe: Path, mode: str) -> None:
    with pytest.raises(forkserver.WorkerTimeout):
        _run(probe, mode, "first", "sleep", timeout=5)
    if mode == "1":  # the server outlives the worker it killed and serves the next one
        assert _run(probe, mode, "second", "0")[0] == 0


def test_a_worker_whose_server_dies_is_run_again_as_a_new_process(probe: Path) -> None:
    code, lines = _run(probe, "1", "first", "kill-server", timeout=60)
    assert code == 7
    assert json.loads(lines[-2])["tf_preloaded"] is False  # the run that answered: spawned
    assert _run(probe, "1", "second", "0")[0] == 0  # and a new server serves the next


@pytest.mark.parametrize(
    "worker",
    ["pipeline.export.worker.serve", "pipeline.diff.tf_worker", "pipeline.training.tf_worker"],
)
def test_tf_workers_import_no_torch(worker: str) -> None:
    # A worker forked from the server has TensorFlow already: torchvision imported after it
    # segfaults, so no worker module may pull in torch (the diff worker once did, through
    # its package's __init__).
    code = f"import sys, {worker}; print(sorted(m for m in ('torch', 'tensorflow') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout
