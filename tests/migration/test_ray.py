"""``migrate --ray`` on a real local Ray cluster (``--ray local``: the driver starts a private
Ray instance with ``--jobs`` CPUs and stops it at the end).  Never a mock.

Every driver runs in a subprocess with ``RAY_TMPDIR`` set to a fresh directory, so each
test can check that no process of its Ray instance (raylet, GCS, workers) nor any
conversion outlives it.  Starting Ray takes about 4 s here; a zoo conversion 10-20 s, so
everything but the smoke test is in the slow suite.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.migration import STATE_JSON, SUMMARY_JSON
from tests.migration.test_migrate import (
    THREE,
    ZOO,
    processes_mentioning,
    wait_for_no_processes,
    zoo_manifest,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    """A private RAY_TMPDIR (short: Ray's socket paths must fit 107 bytes); afterwards no
    process may still mention it (every Ray process's command line names its session)."""
    path = Path(tempfile.mkdtemp(prefix="tf2t-ray-", dir="/tmp"))
    yield path
    left = wait_for_no_processes(str(path), seconds=30)
    shutil.rmtree(path, ignore_errors=True)
    assert left == [], "Ray processes outlived the driver:\n" + "\n".join(left)


def driver_env(ray_tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["RAY_TMPDIR"] = str(ray_tmp)
    env.pop("RAY_ADDRESS", None)
    return env


def migrate_cli(
    ray_tmp: Path, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``tf2torch migrate ARGS`` as a driver process (fails the test rather than hang)."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "migrate", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=driver_env(ray_tmp),
        timeout=timeout,
        check=False,
    )


def summary(root: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / SUMMARY_JSON).read_text())
    return data


def by_name(root: Path) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in summary(root)["models"]}


# --------------------------------------------------------------------------- fast


def test_ray_smoke_errors_come_back_and_ray_stops(tmp_path: Path, ray_tmp: Path) -> None:
    """A real local Ray, two models that end quickly: a missing file (the task's conversion
    process answers bad_input) and one asking for more memory than any node has (refused
    before it is submitted, never a task that waits forever)."""
    manifest = tmp_path / "m.toml"
    manifest.write_text(
        '[[models]]\nname = "missing"\nsource = "nowhere/missing.keras"\n\n'
        f'[[models]]\nname = "huge"\nsource = "{ZOO}:dense_relu"\nmemory = "1000TB"\n'
    )
    root, junit = tmp_path / "root", tmp_path / "junit.xml"
    start = time.monotonic()
    proc = migrate_cli(
        ray_tmp,
        str(manifest),
        "-o",
        str(root),
        "--ray",
        "local",
        "--junit",
        str(junit),
        timeout=120,
    )
    seconds = time.monotonic() - start
    assert proc.returncode == 1, proc.stderr
    models = by_name(root)
    missing, huge = models["missing"], models["huge"]
    assert missing["verdict"] == "error" and missing["error"]["kind"] == "bad_input"
    assert "missing.keras" in missing["error"]["message"]
    assert missing["host"] and missing["attempts"] == 1  # it ran as a Ray task
    assert huge["verdict"] == "error" and huge["error"]["kind"] == "too_large"
    assert "1000000.0 GB" in huge["error"]["message"] and huge["attempts"] == 0
    assert summary(root)["complete"] is True
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("errors")) == ("2", "2")
    assert not list((root / ".migrate").glob("*.stage"))
    assert not list((root / ".migrate").glob("*.attempts"))
    assert seconds < 60, seconds


# --------------------------------------------------------------------------- slow


@pytest.fixture(scope="module")
def ray_three(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, Path, subprocess.CompletedProcess[str]]]:
    """Three zoo models on a local Ray cluster with 2 CPUs: (manifest, root, process)."""
    tmp = tmp_path_factory.mktemp("ray_three")
    ray_dir = Path(tempfile.mkdtemp(prefix="tf2t-ray-", dir="/tmp"))
    manifest = zoo_manifest(tmp / "migration.toml", THREE)
    root = tmp / "root"
    proc = migrate_cli(
        ray_dir,
        str(manifest),
        "-o",
        str(root),
        "--ray",
        "local",
        "--jobs",
        "2",
        "--junit",
        str(tmp / "junit.xml"),
    )
    left = wait_for_no_processes(str(ray_dir), seconds=30)
    shutil.rmtree(ray_dir, ignore_errors=True)
    assert left == [], left
    yield manifest, root, proc


@pytest.mark.slow
def test_small_manifest_passes_on_ray(
    ray_three: tuple[Path, Path, subprocess.CompletedProcess[str]],
) -> None:
    manifest, root, proc = ray_three
    assert proc.returncode == 0, proc.stderr + proc.stdout
    data = summary(root)
    assert data["complete"] is True
    assert data["counts"] == {"pass": 3, "fail": 0, "error": 0, "timeout": 0}
    assert [m["name"] for m in data["models"]] == list(THREE)
    for model in data["models"]:
        assert model["attempts"] == 1 and model["host"]
        assert all(v is not None and v < 1e-4 for v in model["worst"].values())
        assert (root / model["name"] / "model.pt2").is_file()
        assert json.loads((root / model["name"] / STATE_JSON).read_text())["verdict"] == "pass"
    assert not [p for p in root.iterdir() if "staging" in p.name or ".old-" in p.name]
    junit = ET.parse(manifest.parent / "junit.xml").getroot().find("testsuite")
    assert junit is not None and (junit.get("tests"), junit.get("failures")) == ("3", "0")
    assert processes_mentioning(str(root)) == []


@pytest.mark.slow
def test_shards_merged_equal_the_unsharded_run(
    ray_three: tuple[Path, Path, subprocess.CompletedProcess[str]], tmp_path: Path, ray_tmp: Path
) -> None:
    """Shards 1/3, 2/3, 3/3 on one Ray instance (the Python API inside the caller's own Ray
    session), merged by the CLI, equal the unsharded Ray run model for model."""
    manifest, whole_root, proc = ray_three
    assert proc.returncode == 0, proc.stderr
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import sys, ray\n"
        "from pipeline.migration import migrate\n"
        "ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)\n"
        "for k in (1, 2, 3):\n"
        f"    migrate({str(manifest)!r}, {str(tmp_path)!r} + f'/shard{{k}}', shard=f'{{k}}/3', ray='auto')\n"
        "ray.shutdown()\n"
    )
    run = subprocess.run(
        [sys.executable, str(driver)],
        cwd=REPO,
        env=driver_env(ray_tmp),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    shards = [tmp_path / f"shard{k}" for k in (1, 2, 3)]
    owned = [summary(s)["shard"]["models"] for s in shards]
    assert sorted(n for names in owned for n in names) == sorted(THREE)
    merged = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "migrate-merge",
            *map(str, shards),
            "-o",
            str(tmp_path / "merged"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert merged.returncode == 0, merged.stderr
    keys = ("name", "source", "verdict", "error", "worst", "resumed")
    ours = summary(tmp_path / "merged")
    whole = summary(whole_root)
    assert [{k: m[k] for k in keys} for m in ours["models"]] == [
        {k: m[k] for k in keys} for m in whole["models"]
    ]
    assert ours["counts"] == whole["counts"] and ours["complete"] is True
    for model in ours["models"]:  # each run dir is the shard's that converted it
        assert Path(model["run_dir"]).parent in shards
        assert (Path(model["run_dir"]) / "report.json").is_file()


@pytest.mark.slow
def test_timeout_kills_the_task_and_its_tf_worker(tmp_path: Path, ray_tmp: Path) -> None:
    (tmp_path / "sleepy.py").write_text(
        "import os, pathlib, time\n"
        "def make():\n"  # runs in the TF worker: record its pid, then hang
        f"    pathlib.Path({str(tmp_path / 'factory_pid')!r}).write_text(str(os.getpid()))\n"
        "    time.sleep(600)\n"
    )
    manifest = tmp_path / "m.toml"
    manifest.write_text('[[models]]\nname = "sleepy"\nsource = "sleepy.py:make"\ntimeout = 40\n')
    root = tmp_path / "root"
    proc = migrate_cli(ray_tmp, str(manifest), "-o", str(root), "--ray", "local", timeout=300)
    assert proc.returncode == 1, proc.stderr
    sleepy = by_name(root)["sleepy"]
    assert sleepy["verdict"] == "timeout" and "timeout of 40 s" in sleepy["error"]["message"]
    assert 40 <= sleepy["seconds"] < 60
    pid_file = tmp_path / "factory_pid"
    assert pid_file.is_file(), "the TF worker never reached the factory; raise the timeout"
    worker = Path("/proc") / pid_file.read_text()
    assert not worker.exists() or (worker / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    assert wait_for_no_processes(str(root)) == []
    assert not (root / "sleepy").exists() and not list(root.glob(".sleepy.*"))


def _child_of(root: Path, name: str, deadline: float) -> tuple[int, int]:
    """(pid of the conversion process of ``name``, pid of the Ray worker that runs it), once
    the conversion is past loading torch (its stage file says export or later)."""
    request = f"{root}/.migrate/{name}.request.json"
    stage = root / ".migrate" / f"{name}.stage"
    while time.monotonic() < deadline:
        found = [p.split(":")[0] for p in processes_mentioning(request)]
        ready = stage.is_file() and stage.read_text() not in ("", "starting")
        if found and ready:
            pid = int(found[0])
            ppid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
            return pid, ppid
        time.sleep(0.2)
    raise AssertionError(f"{name} never started converting")


@pytest.mark.slow
@pytest.mark.parametrize("retries", [0, 1])
def test_killed_ray_worker_is_an_error_or_a_retry(
    tmp_path: Path, ray_tmp: Path, retries: int
) -> None:
    """SIGKILL the Ray worker process running a model: with no retries the model is an
    error naming the lost task; with one retry Ray reruns it and it passes (attempt 2).
    Either way the driver ends, and the killed conversion's processes are gone."""
    manifest = zoo_manifest(tmp_path / "m.toml", ("dense_relu",))
    root = tmp_path / "root"
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "migrate",
            str(manifest),
            "-o",
            str(root),
            "--ray",
            "local",
            "--ray-retries",
            str(retries),
            "-q",
        ],
        cwd=REPO,
        env=driver_env(ray_tmp),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        child, worker = _child_of(root, "dense_relu", time.monotonic() + 180)
        cmdline = (Path("/proc") / str(worker) / "cmdline").read_bytes()
        assert cmdline.startswith(b"ray::tf2torch:dense_relu"), cmdline  # the task's worker
        os.kill(worker, signal.SIGKILL)
        _out, err = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert (
        not (Path("/proc") / str(child)).exists()
        or "Z" in (Path("/proc") / str(child) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    )
    model = by_name(root)["dense_relu"]
    if retries == 0:
        assert driver.returncode == 1, err
        assert model["verdict"] == "error" and model["error"]["kind"] == "ray_task_failed"
        assert "lost after 1 attempt(s)" in model["error"]["message"], model["error"]
        assert not (root / "dense_relu").exists()
    else:
        assert driver.returncode == 0, err
        assert model["verdict"] == "pass" and model["attempts"] == 2
    assert wait_for_no_processes(str(root)) == []
    assert not [p for p in root.iterdir() if "staging" in p.name]


@pytest.mark.slow
def test_resume_after_interrupting_the_driver(tmp_path: Path, ray_tmp: Path) -> None:
    """SIGINT the driver once a model is complete: it exits 130 with Ray and the running
    conversions stopped; ``--resume`` then keeps exactly the complete runs."""
    manifest = zoo_manifest(tmp_path / "m.toml", THREE)
    root = tmp_path / "root"
    args = [str(manifest), "-o", str(root), "--ray", "local", "--jobs", "2"]
    driver = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "migrate", *args, "-q"],
        cwd=REPO,
        env=driver_env(ray_tmp),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not list(root.glob(f"*/{STATE_JSON}")):
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        driver.send_signal(signal.SIGINT)
        _, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 130, err
    assert "interrupted" in err
    complete = {p.parent.name for p in root.glob(f"*/{STATE_JSON}")}
    assert 1 <= len(complete) < len(THREE), complete
    assert summary(root)["complete"] is False
    assert wait_for_no_processes(str(root)) == []
    assert wait_for_no_processes(str(ray_tmp), seconds=30) == []

    proc = migrate_cli(ray_tmp, *args, "--resume")
    assert proc.returncode == 0, proc.stderr
    models = by_name(root)
    assert {n: m["resumed"] for n, m in models.items()} == {n: n in complete for n in THREE}
    assert all(m["verdict"] == "pass" for m in models.values())
    assert summary(root)["complete"] is True


def _pids_mentioning(*texts: str) -> set[int]:
    return {int(line.split(":")[0]) for text in texts for line in processes_mentioning(text)}


def _children(pids: set[int]) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) in pids:
                found.add(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


@pytest.fixture
def ray_cluster(ray_tmp: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A Ray cluster started with ``ray start --head`` on the loopback address (its own
    RAY_TMPDIR; token auth off: nothing but this test talks to it): (address, env).
    Stopped by killing exactly its processes (``ray stop`` would stop every Ray here)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = driver_env(ray_tmp) | {"RAY_AUTH_MODE": "disabled"}
    ray = Path(sys.executable).with_name("ray")
    start = [str(ray), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1"]
    start += ["--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"]
    try:
        subprocess.run(start, env=env, capture_output=True, check=True, timeout=120)
        yield f"127.0.0.1:{port}", env
    finally:
        # the Ray client server names only the port (and the machine's address, not ours)
        ours = _pids_mentioning(str(ray_tmp), f":{port} ")
        for pid in ours | _children(ours):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert wait_for_no_processes(f":{port} ") == []


@pytest.mark.slow
def test_existing_cluster_by_address_and_a_killed_driver(
    tmp_path: Path, ray_cluster: tuple[str, dict[str, str]]
) -> None:
    """``--ray HOST:PORT`` on a cluster that outlives the driver: a model passes; then the
    driver is SIGKILLed mid-conversion and Ray's cleanup of its tasks takes the conversion
    and its TF worker down too, while the cluster stays up."""
    address, env = ray_cluster
    manifest = zoo_manifest(tmp_path / "m.toml", ("dense_relu",))
    root = tmp_path / "root"
    command = [sys.executable, "-m", "pipeline", "migrate", str(manifest), "-o", str(root)]
    proc = subprocess.run(
        [*command, "--ray", address, "-q"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert by_name(root)["dense_relu"]["verdict"] == "pass"

    (tmp_path / "sleepy.py").write_text(
        "import os, pathlib, time\n"
        "def make():\n"
        f"    pathlib.Path({str(tmp_path / 'factory_pid')!r}).write_text(str(os.getpid()))\n"
        "    time.sleep(600)\n"
    )
    manifest.write_text('[[models]]\nname = "sleepy"\nsource = "sleepy.py:make"\n')
    root = tmp_path / "root2"
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "migrate",
            str(manifest),
            "-o",
            str(root),
            "--ray",
            address,
            "-q",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pid_file = tmp_path / "factory_pid"
    deadline = time.monotonic() + 180
    while not pid_file.is_file():
        assert driver.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    driver.kill()
    driver.wait()
    assert wait_for_no_processes(str(root), seconds=30) == []
    worker = Path("/proc") / pid_file.read_text()
    deadline = time.monotonic() + 15
    while worker.exists() and "Z" not in (worker / "stat").read_text().rsplit(")", 1)[1].split()[0]:
        assert time.monotonic() < deadline, "the TF worker outlived the killed driver"
        time.sleep(0.2)
    raylets = [p for p in processes_mentioning(str(env["RAY_TMPDIR"])) if "raylet" in p]
    assert raylets, "the cluster went down with the driver"
