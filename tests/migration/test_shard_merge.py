"""``migrate --shard K/N``, ``migrate-merge`` and the manifest's ``memory`` key, without
converting anything: slicing, the merge's refusals, JUnit, the Ray memory request, and the
CLI's one-line errors (``--ray`` without Ray installed included)."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.errors import BadInputError
from pipeline.migration import (
    ManifestError,
    ModelResult,
    Shard,
    load_manifest,
    merge_shards,
    parse_shard,
    select_shard,
)
from pipeline.migration.resources import BASELINE_MEMORY, MEMORY_MULTIPLE, memory_request
from pipeline.migration.scheduler import Collector
from pipeline.migration.shard import shard_of

REPO = Path(__file__).resolve().parents[2]


def manifest_of(path: Path, names: list[str], extra: str = "") -> Path:
    path.write_text(
        "".join(f'[[models]]\nname = "{n}"\nsource = "nets/{n}.keras"\n{extra}\n' for n in names)
    )
    return path


def tf2torch(*args: str, python: str = "pass") -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess; ``python`` runs first (e.g. to hide a module)."""
    code = f"import sys; {python}; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


# --------------------------------------------------------------------------- shards


@pytest.mark.parametrize(
    ("text", "expected"), [("1/1", Shard(1, 1)), ("3/4", Shard(3, 4)), (" 2 / 7 ", Shard(2, 7))]
)
def test_parse_shard(text: str, expected: Shard) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/3", "4/3", "1/0", "x", "1/3/4", "-1/3", "1.5/3", ""])
def test_bad_shard_is_one_line(text: str) -> None:
    with pytest.raises(BadInputError, match="--shard") as info:
        parse_shard(text)
    assert "\n" not in str(info.value)


def test_shards_partition_the_manifest_and_survive_added_models(tmp_path: Path) -> None:
    names = [f"model_{i:03d}" for i in range(60)]
    models = load_manifest(manifest_of(tmp_path / "m.toml", names)).models
    for count in (1, 2, 3, 4, 7):
        slices = [select_shard(models, Shard(k, count)) for k in range(1, count + 1)]
        flat = [m.name for s in slices for m in s]
        assert sorted(flat) == sorted(names)  # each model in exactly one shard
        for part in slices:  # manifest order inside a shard
            assert [m.name for m in part] == [n for n in names if n in {m.name for m in part}]
        if count == 4:  # hash buckets are not empty or lopsided on 60 models
            assert all(5 <= len(part) <= 25 for part in slices), [len(p) for p in slices]
    # adding and reordering models moves no model to another shard
    grown = load_manifest(
        manifest_of(tmp_path / "grown.toml", ["new_a", *reversed(names), "new_b"])
    ).models
    for count in (3, 4):
        before = {
            m.name: k for k in range(1, count + 1) for m in select_shard(models, Shard(k, count))
        }
        after = {
            m.name: k for k in range(1, count + 1) for m in select_shard(grown, Shard(k, count))
        }
        assert {n: after[n] for n in names} == before
    assert shard_of("model_000", 4) == shard_of("model_000", 4)  # no per-process salt


# --------------------------------------------------------------------------- merge


def fake_shard(
    tmp: Path, manifest: Path, shard: Shard, verdicts: dict[str, str], complete: bool = True
) -> Path:
    """A shard's output root, its summary written by the migration's own Collector."""
    parsed = load_manifest(manifest)
    root = tmp / f"shard{shard.index}"
    root.mkdir()
    chosen = select_shard(parsed.models, shard)
    collector = Collector(parsed, chosen, root, lambda _e: None, shard)
    for spec in chosen:
        verdict = verdicts[spec.name]
        collector.done(
            ModelResult(
                name=spec.name,
                source=spec.source,
                verdict=verdict,
                run_dir=root / spec.name,
                seconds=1.5,
                error_kind="bad_input" if verdict == "error" else None,
                error_message="corrupt file" if verdict == "error" else None,
                worst={"tf-ort": 1e-7, "tf-torch": 2e-3, "ort-torch": 2e-3},
            )
        )
    collector.write_summary(complete=complete)
    return root


NAMES = [f"net{i}" for i in range(9)]


@pytest.fixture
def three_shards(tmp_path: Path) -> tuple[Path, list[Path], dict[str, str]]:
    manifest = manifest_of(tmp_path / "m.toml", NAMES)
    verdicts = dict.fromkeys(NAMES, "pass") | {"net3": "fail", "net5": "error"}
    dirs = [fake_shard(tmp_path, manifest, Shard(k, 3), verdicts) for k in (1, 2, 3)]
    return manifest, dirs, verdicts


def test_merge_joins_shards_in_manifest_order(
    tmp_path: Path, three_shards: tuple[Path, list[Path], dict[str, str]]
) -> None:
    _, dirs, verdicts = three_shards
    result = merge_shards(list(reversed(dirs)), tmp_path / "out")
    merged = json.loads(result.summary_path.read_text())
    assert [m["name"] for m in merged["models"]] == NAMES
    assert {m["name"]: m["verdict"] for m in merged["models"]} == verdicts
    assert merged["counts"] == {"pass": 7, "fail": 1, "error": 1, "timeout": 0}
    assert merged["complete"] is True and result.exit_code == 1
    for model in merged["models"]:  # run dirs point into the shard that converted it
        assert Path(model["run_dir"]).parent in dirs
    suite = ET.parse(result.junit_path).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("9", "1", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert list(cases) == NAMES
    failure = cases["net3"].find("failure")
    assert failure is not None and "tf-torch 2.0e-03" in (failure.get("message") or "")
    error = cases["net5"].find("error")
    assert error is not None and error.get("message") == "corrupt file"


def test_merge_of_a_moved_shard_points_at_its_new_place(
    tmp_path: Path, three_shards: tuple[Path, list[Path], dict[str, str]]
) -> None:
    _, dirs, _ = three_shards
    moved = tmp_path / "downloaded"
    moved.mkdir()
    new_dirs = [d.rename(moved / d.name) for d in dirs]  # a CI artifact lands elsewhere
    merged = json.loads(merge_shards(new_dirs, tmp_path / "out").summary_path.read_text())
    assert all(Path(m["run_dir"]).parent in new_dirs for m in merged["models"])


def test_merge_refuses_shards_that_do_not_fit(
    tmp_path: Path, three_shards: tuple[Path, list[Path], dict[str, str]]
) -> None:
    manifest, dirs, verdicts = three_shards
    refusals = {
        "missing": (dirs[:2], "shard 3/3 missing"),
        "twice": ([dirs[0], dirs[1], dirs[1]], "shard 2/3 given twice"),
        "none": ([], "at least one shard"),
    }
    other = tmp_path / "other"
    other.mkdir()
    refusals["other_count"] = (
        [*dirs, fake_shard(other, manifest, Shard(1, 2), verdicts)],
        "one of 2 shards",
    )
    grown = manifest_of(tmp_path / "grown.toml", [*NAMES, "net9"])
    refusals["other_manifest"] = (
        [*dirs[:2], fake_shard(other, grown, Shard(3, 3), verdicts | {"net9": "pass"})],
        "different models",
    )
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    refusals["incomplete"] = (
        [*dirs[:2], fake_shard(unfinished, manifest, Shard(3, 3), verdicts, complete=False)],
        "did not finish",
    )
    for case, (given, message) in refusals.items():
        out = tmp_path / f"out_{case}"
        with pytest.raises(BadInputError, match=message) as info:
            merge_shards(given, out)
        assert "\n" not in str(info.value), case
        assert not out.exists(), case  # nothing written


def test_merge_refuses_a_summary_that_is_not_a_shard(
    tmp_path: Path, three_shards: tuple[Path, list[Path], dict[str, str]]
) -> None:
    _, dirs, _ = three_shards
    whole = tmp_path / "whole"
    whole.mkdir()
    data: dict[str, Any] = json.loads((dirs[0] / "summary.json").read_text())
    del data["shard"]
    (whole / "summary.json").write_text(json.dumps(data))
    with pytest.raises(BadInputError, match="not a shard's summary"):
        merge_shards([whole, *dirs[1:]], tmp_path / "out")
    with pytest.raises(BadInputError, match=r"no summary\.json"):
        merge_shards([tmp_path / "nowhere"], tmp_path / "out")


def test_merge_cli(tmp_path: Path, three_shards: tuple[Path, list[Path], dict[str, str]]) -> None:
    _, dirs, _ = three_shards
    proc = tf2torch("migrate-merge", *map(str, dirs), "-o", str(tmp_path / "out"))
    assert proc.returncode == 1, proc.stderr  # net3 fails, net5 errors
    assert "7 pass, 1 fail, 1 error" in proc.stdout
    proc = tf2torch("migrate-merge", str(dirs[0]), "-o", str(tmp_path / "out2"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "tf2torch: error: shard 2/3, 3/3 missing: pass the directories of all 3 shards"
    ]


# --------------------------------------------------------------------------- memory, CLI


def test_memory_key_and_request(tmp_path: Path) -> None:
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "big.keras").write_bytes(b"\0" * 1_000_000)
    manifest = tmp_path / "m.toml"
    manifest.write_text(
        '[defaults]\nmemory = "2GiB"\n\n'
        '[[models]]\nname = "a"\nsource = "nets/a.keras"\n\n'
        '[[models]]\nname = "b"\nsource = "nets/b.keras"\nmemory = 3000000000\n\n'
        '[[models]]\nname = "c"\nsource = "nets/c.keras"\nmemory = "1.5 GB"\n'
    )
    a, b, c = load_manifest(manifest).models
    assert (a.memory, b.memory, c.memory) == (2 * 2**30, 3_000_000_000, 1_500_000_000)
    assert "memory" not in a.settings  # not a convert option: not in the fingerprint
    assert memory_request(b) == 3_000_000_000
    manifest.write_text('[[models]]\nname = "big"\nsource = "nets/big.keras"\n')
    big = load_manifest(manifest).models[0]
    assert memory_request(big) == int(BASELINE_MEMORY + MEMORY_MULTIPLE * 1_000_000)
    manifest.write_text('[[models]]\nname = "f"\nsource = "nets.py:make"\n')
    assert memory_request(load_manifest(manifest).models[0]) == BASELINE_MEMORY
    for bad in ('"lots"', "0", '"-1GB"', "true", '"8 XB"'):
        manifest.write_text(f'[[models]]\nname = "a"\nsource = "a.keras"\nmemory = {bad}\n')
        with pytest.raises(ManifestError, match="key 'memory'"):
            load_manifest(manifest)


def test_ray_without_ray_installed_is_one_line(tmp_path: Path) -> None:
    manifest = manifest_of(tmp_path / "m.toml", ["a"])
    proc = tf2torch(
        "migrate",
        str(manifest),
        "-o",
        str(tmp_path / "root"),
        "--ray",
        "auto",
        python="sys.modules['ray'] = None",  # find_spec reports a None entry as not installed
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "tf2torch: error: --ray needs Ray (ray not installed): pip install 'tf2torch[ray]'"
    ]
    assert not (tmp_path / "root").exists()


def test_bad_shard_cli_exit_2(tmp_path: Path) -> None:
    manifest = manifest_of(tmp_path / "m.toml", ["a"])
    proc = tf2torch("migrate", str(manifest), "-o", str(tmp_path / "root"), "--shard", "5/4")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "tf2torch: error: --shard 5/4: K must be between 1 and N (1 <= K <= N)"
    ]
    assert not (tmp_path / "root").exists()
