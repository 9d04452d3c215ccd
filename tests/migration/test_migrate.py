"""``tf2torch migrate`` / ``pipeline.migrate``: manifests, parallel runs, timeouts, resume.

Conversions here are real (TF worker, ONNX Runtime, torch); each zoo model takes a few
seconds, so the module shares one 3-model migration and keeps the other runs small.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.errors import BadInputError
from pipeline.migration import (
    STATE_JSON,
    SUMMARY_JSON,
    ManifestError,
    MigrationEvent,
    fingerprint,
    load_manifest,
    migrate,
)

REPO = Path(__file__).resolve().parents[2]
ZOO = REPO / "models" / "zoo.py"
ZOO_MANIFEST = REPO / "models" / "zoo_migration.toml"
THREE = ("dense_relu", "linear_regression", "scale_layer_net")


def tf2torch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
        check=False,
    )


def zoo_manifest(path: Path, names: tuple[str, ...], extra: dict[str, str] | None = None) -> Path:
    """A manifest of zoo models; ``extra`` adds TOML lines to a model's table."""
    tables = []
    for name in names:
        lines = ["[[models]]", f'name = "{name}"', f'source = "{ZOO}:{name}"']
        if extra and name in extra:
            lines.append(extra[name])
        tables.append("\n".join(lines))
    path.write_text("\n\n".join(tables) + "\n")
    return path


def summary(root: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / SUMMARY_JSON).read_text())
    return data


def verdicts(root: Path) -> dict[str, str]:
    return {m["name"]: m["verdict"] for m in summary(root)["models"]}


def processes_mentioning(text: str) -> list[str]:
    """Live (non-zombie) processes whose command line contains ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(f"{proc.name}: {cmdline}")
    return found


def wait_for_no_processes(text: str, seconds: float = 15) -> list[str]:
    deadline = time.monotonic() + seconds
    while (left := processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


# --------------------------------------------------------------------------- validation

GOOD = f'[[models]]\nname = "a"\nsource = "{ZOO}:dense_relu"\n'

INVALID = {
    # manifest text -> what the one-line error must say
    "unknown_key": (
        GOOD + "atoll = 1e-4\n",
        ["model 'a'", "key 'atoll'", "unknown key"],
    ),
    "unknown_default": (
        "[defaults]\nopsett = 17\n" + GOOD,
        ["[defaults]", "key 'opsett'", "unknown key"],
    ),
    "missing_source": (
        GOOD + '\n[[models]]\nname = "b"\n',
        ["model 'b'", "key 'source'", "missing"],
    ),
    "missing_name": (
        GOOD + f'\n[[models]]\nsource = "{ZOO}:cnn"\n',
        ["model #2", "key 'name'", "missing"],
    ),
    "duplicate_name": (
        GOOD + GOOD,
        ["model 'a'", "key 'name'", "duplicate name (also model #1)"],
    ),
    "negative_tolerance": (
        GOOD + "atol = -1e-4\n",
        ["model 'a'", "key 'atol'", "bad tolerance"],
    ),
    "string_tolerance": (
        GOOD + 'rtol = "tight"\n',
        ["model 'a'", "key 'rtol'", "bad tolerance"],
    ),
    "nan_tolerance": (
        GOOD + "atol = nan\n",
        ["model 'a'", "key 'atol'", "bad tolerance"],
    ),
    "bad_output_tolerance": (
        GOOD + "output_tolerances = { logits = [1e-4] }\n",
        ["model 'a'", "key 'output_tolerances'", "bad tolerance"],
    ),
    "bad_input_range": (
        GOOD + "input_ranges = { tokens = [50, 0] }\n",
        ["model 'a'", "key 'input_ranges'", "HI must be greater than LO"],
    ),
    "bad_opset": (GOOD + 'opset = "17"\n', ["model 'a'", "key 'opset'", "expected an integer"]),
    "bad_name": (
        f'[[models]]\nname = "../escape"\nsource = "{ZOO}:cnn"\n',
        ["key 'name'", "bad name"],
    ),
    "bad_timeout": (GOOD + "timeout = 0\n", ["model 'a'", "key 'timeout'", "> 0"]),
    "no_models": ("[defaults]\nopset = 17\n", ["no models"]),
    "not_toml": ("[[models]\nname = 1\n", ["not valid TOML"]),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_manifest_names_model_and_key(tmp_path: Path, case: str) -> None:
    text, expected = INVALID[case]
    manifest = tmp_path / "migration.toml"
    manifest.write_text(text)
    with pytest.raises(ManifestError) as info:
        migrate(manifest, tmp_path / "root")
    message = str(info.value)
    assert "\n" not in message
    for part in expected:
        assert part in message, message
    assert isinstance(info.value, BadInputError)
    assert not (tmp_path / "root").exists()  # validated before anything started


def test_invalid_manifest_cli_exit_2_nothing_converted(tmp_path: Path) -> None:
    manifest = tmp_path / "migration.toml"
    manifest.write_text(GOOD + f'\n[[models]]\nname = "b"\nsource = "{ZOO}:cnn"\natol = -1\n')
    proc = tf2torch("migrate", str(manifest), "-o", str(tmp_path / "root"))
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("tf2torch: error: "), proc.stderr
    assert "model 'b'" in lines[0] and "key 'atol'" in lines[0]
    assert not (tmp_path / "root").exists()


def test_bad_jobs_and_timeout_are_bad_input(tmp_path: Path) -> None:
    manifest = tmp_path / "m.toml"
    manifest.write_text(GOOD)
    with pytest.raises(BadInputError, match="--jobs"):
        migrate(manifest, tmp_path / "root", jobs=0)
    with pytest.raises(BadInputError, match="--timeout"):
        migrate(manifest, tmp_path / "root", timeout=0)


def test_defaults_apply_and_paths_are_relative_to_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "patches").mkdir()
    manifest = tmp_path / "m.toml"
    manifest.write_text(
        '[defaults]\natol = 1e-3\npatches = "patches"\n\n'
        '[[models]]\nname = "a"\nsource = "net.keras"\n\n'
        '[[models]]\nname = "b"\nsource = "mypkg.models:build"\natol = 0.5\n'
        "input_ranges = { tokens = [0, 50] }\ntimeout = 3600\n"
    )
    a, b = load_manifest(manifest).models
    assert a.source == str(tmp_path / "net.keras")
    assert a.settings == {"atol": 1e-3, "patches": [str(tmp_path / "patches")]}
    assert b.source == "mypkg.models:build"
    assert b.settings["atol"] == 0.5 and b.settings["input_ranges"] == {"tokens": [0, 50]}
    assert (a.timeout, b.timeout) == (None, 3600) and "timeout" not in b.settings


def test_fingerprint_follows_settings_and_file_contents(tmp_path: Path) -> None:
    factory = tmp_path / "nets.py"
    factory.write_text("def make(): ...\n")
    inputs = tmp_path / "x.npz"
    inputs.write_bytes(b"one")
    (tmp_path / "patches").mkdir()
    manifest = tmp_path / "m.toml"
    manifest.write_text(
        '[[models]]\nname = "a"\nsource = "nets.py:make"\ninputs = "x.npz"\npatches = "patches"\n'
    )

    def current() -> str:
        return fingerprint(load_manifest(manifest).models[0])

    seen = {current()}
    assert current() in seen  # stable
    for change in (
        lambda: factory.write_text("def make(): return 1\n"),
        lambda: inputs.write_bytes(b"two"),
        lambda: (tmp_path / "patches" / "p.py").write_text("PATCH = None\n"),
        lambda: manifest.write_text(manifest.read_text() + "seed = 3\n"),
    ):
        change()
        new = current()
        assert new not in seen
        seen.add(new)


def test_zoo_manifest_lists_the_catalog() -> None:
    spec = importlib.util.spec_from_file_location("zoo_catalog", REPO / "models" / "catalog.py")
    assert spec is not None and spec.loader is not None
    catalog = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = catalog  # dataclasses look their module up
    spec.loader.exec_module(catalog)
    zoo = catalog.ZOO
    models = load_manifest(ZOO_MANIFEST).models
    assert [m.name for m in models] == list(zoo)
    for model in models:
        entry = zoo[model.name]
        assert model.source == f"{ZOO}:{model.name}"
        ranges = {k: tuple(v) for k, v in model.settings.get("input_ranges", {}).items()}
        assert ranges == dict(entry.input_ranges), model.name
        assert model.settings.get("keep_batchnorm", False) == entry.keep_batchnorm, model.name


# --------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def three(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    """Three zoo models migrated with --jobs 2 through the CLI: (manifest, root, process)."""
    tmp = tmp_path_factory.mktemp("three")
    manifest = zoo_manifest(tmp / "migration.toml", THREE)
    root = tmp / "root"
    proc = tf2torch("migrate", str(manifest), "-o", str(root), "--jobs", "2")
    return manifest, root, proc


def test_migrate_three_models_with_two_jobs(
    three: tuple[Path, Path, subprocess.CompletedProcess[str]],
) -> None:
    _, root, proc = three
    assert proc.returncode == 0, proc.stderr + proc.stdout
    data = summary(root)
    assert data["complete"] is True
    assert data["counts"] == {"pass": 3, "fail": 0, "error": 0, "timeout": 0}
    assert [m["name"] for m in data["models"]] == list(THREE)  # manifest order
    for model in data["models"]:
        assert model["verdict"] == "pass" and model["error"] is None
        assert model["run_dir"] == str(root / model["name"])
        assert set(model["worst"]) == {"tf-ort", "tf-torch", "ort-torch"}
        assert all(v is not None and v < 1e-4 for v in model["worst"].values())
        assert model["seconds"] > 0
        report = json.loads((root / model["name"] / "report.json").read_text())
        assert report["verdict"] == "pass"
        assert (root / model["name"] / "model.pt2").is_file()
        assert (root / model["name"] / STATE_JSON).is_file()
    for name in THREE:  # the summary table, and a line per model on stderr (not a terminal)
        assert name in proc.stdout and name in proc.stderr
    assert "PASS" in proc.stdout
    assert not list(root.glob(".*staging*"))


def test_resume_keeps_unchanged_runs(
    three: tuple[Path, Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    manifest, original, proc = three
    assert proc.returncode == 0, proc.stderr
    root = tmp_path / "root"
    shutil.copytree(original, root)  # keeps mtimes
    mtimes = {n: (root / n / "report.json").stat().st_mtime_ns for n in THREE}
    events: list[MigrationEvent] = []
    result = migrate(manifest, root, resume=True, on_event=events.append)
    assert result and result.exit_code == 0
    assert all(m.resumed for m in result.models)
    assert {e.stage for e in events} == {"resumed"}  # nothing converted
    assert {n: (root / n / "report.json").stat().st_mtime_ns for n in THREE} == mtimes
    assert summary(root)["complete"] is True


def test_interrupted_migration_with_changed_settings_resumes(
    three: tuple[Path, Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """Two models' settings change; the migration is killed (SIGKILL) after the first of them
    is redone, while the second converts.  --resume then redoes only the second."""
    _, original, proc = three
    assert proc.returncode == 0, proc.stderr
    root = tmp_path / "root"
    shutil.copytree(original, root)
    old = {n: (root / n / "report.json").stat().st_mtime_ns for n in THREE}
    changed = {"dense_relu": "seed = 7", "scale_layer_net": "seed = 7"}
    manifest = zoo_manifest(tmp_path / "changed.toml", THREE, changed)
    killed = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "migrate", str(manifest), "-o", str(root), "--resume"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    redone = root / "dense_relu" / "report.json"
    deadline = time.monotonic() + 300
    while not _redone(root / "dense_relu", old["dense_relu"]):
        assert killed.poll() is None, "the migration ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(2)  # scale_layer_net is now converting
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert wait_for_no_processes(str(root)) == []  # its conversions die with it
    # the run being converted when the kill came is the old one, whole
    assert (root / "scale_layer_net" / "report.json").stat().st_mtime_ns == old["scale_layer_net"]
    assert (root / "scale_layer_net" / "model.pt2").is_file()
    mtime = redone.stat().st_mtime_ns

    resumed = migrate(manifest, root, resume=True)
    assert resumed.exit_code == 0, [m.to_json() for m in resumed.models]
    models = {m["name"]: m for m in summary(root)["models"]}
    assert {n: m["resumed"] for n, m in models.items()} == {
        "dense_relu": True,
        "linear_regression": True,
        "scale_layer_net": False,
    }
    assert {n: m["verdict"] for n, m in models.items()} == dict.fromkeys(THREE, "pass")
    assert redone.stat().st_mtime_ns == mtime
    assert (root / "linear_regression" / "report.json").stat().st_mtime_ns == old[
        "linear_regression"
    ]
    for name in changed:
        report = json.loads((root / name / "report.json").read_text())
        assert report["inputs"][0]["source"] == "seed=7", name
    assert not [p for p in root.iterdir() if "staging" in p.name or ".old-" in p.name]


def _redone(run_dir: Path, old_mtime: int) -> bool:
    """The run was replaced by a new one and the migration recorded it (``.migrate.json``)."""
    try:
        return (run_dir / "report.json").stat().st_mtime_ns != old_mtime and (
            run_dir / STATE_JSON
        ).is_file()
    except FileNotFoundError:  # between the two renames of the replacement
        return False


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, float]:
    """A migration (--jobs 2) of a factory that hangs (timeout 40 s: enough for its TF worker
    to import TensorFlow and reach the factory on 2 busy cores), a corrupt .keras file
    and a good model: (tmp dir, MigrationResult, wall seconds)."""
    tmp = tmp_path_factory.mktemp("mixed")
    (tmp / "sleepy.py").write_text(
        "import os, pathlib, time\n"
        "def make():\n"  # runs in the TF worker: record its pid, then hang
        f"    pathlib.Path({str(tmp / 'factory_pid')!r}).write_text(str(os.getpid()))\n"
        "    time.sleep(600)\n"
    )
    (tmp / "corrupt.keras").write_bytes(b"PK\x03\x04 definitely not a Keras archive" * 10)
    manifest = tmp / "m.toml"
    manifest.write_text(
        '[[models]]\nname = "sleepy"\nsource = "sleepy.py:make"\ntimeout = 40\n\n'
        '[[models]]\nname = "broken"\nsource = "corrupt.keras"\n\n'
        f'[[models]]\nname = "good"\nsource = "{ZOO}:scale_layer_net"\n'
    )
    start = time.monotonic()
    result = migrate(manifest, tmp / "root", jobs=2)
    return tmp, result, time.monotonic() - start


def test_corrupt_model_is_that_models_error(mixed: tuple[Path, Any, float]) -> None:
    tmp, result, _ = mixed
    assert result.exit_code == 1 and not result
    models = {m["name"]: m for m in summary(tmp / "root")["models"]}
    assert models["good"]["verdict"] == "pass"
    broken = models["broken"]
    assert broken["verdict"] == "error"
    assert broken["error"]["kind"] == "bad_input"
    assert "corrupt.keras" in broken["error"]["message"]
    assert not (tmp / "root" / "broken").exists()


def test_timeout_kills_the_model_and_its_workers(mixed: tuple[Path, Any, float]) -> None:
    tmp, result, seconds = mixed
    root = tmp / "root"
    sleepy = result.models[0]
    assert sleepy.name == "sleepy" and sleepy.verdict == "timeout"
    assert sleepy.error_kind == "timeout" and "timeout of 40 s" in (sleepy.error_message or "")
    assert 40 <= sleepy.seconds < 60 and seconds < 165
    pid_file = tmp / "factory_pid"
    assert pid_file.is_file(), "the TF worker never reached the factory; raise the timeout"
    assert wait_for_no_processes(str(root)) == []
    worker = Path("/proc") / pid_file.read_text()  # the TF worker (the child's child) is gone
    assert not worker.exists() or (worker / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    assert verdicts(root)["sleepy"] == "timeout"
    assert not list(root.glob(".sleepy.*"))  # the killed run's staging directory is gone
    assert not (root / "sleepy").exists()


@pytest.mark.slow
def test_migrate_the_whole_zoo_with_two_jobs(tmp_path: Path) -> None:
    proc = tf2torch("migrate", str(ZOO_MANIFEST), "-o", str(tmp_path / "zoo"), "--jobs", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = summary(tmp_path / "zoo")
    assert data["complete"] and data["counts"]["pass"] == len(load_manifest(ZOO_MANIFEST).models)


def test_python_api_is_exported() -> None:
    import pipeline

    assert callable(pipeline.migrate)  # the function (the library module is pipeline.migration)
    assert pipeline.MigrationResult.__name__ == "MigrationResult"
    assert issubclass(pipeline.ManifestError, pipeline.BadInputError)
