"""Run directories appear whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.errors import BadInputError
from pipeline.core.run_dir import staged_run_dir


def test_success_replaces_previous_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.json").write_text("old")
    with staged_run_dir(out) as staging:
        (staging / "report.json").write_text("new")
    assert (out / "report.json").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_error_leaves_previous_run_untouched(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.json").write_text("old")
    with pytest.raises(RuntimeError), staged_run_dir(out) as staging:
        (staging / "report.json").write_text("half")
        raise RuntimeError("stage failed")
    assert (out / "report.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_error_leaves_nothing_when_there_was_no_run(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), staged_run_dir(tmp_path / "run"):
        raise RuntimeError("stage failed")
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_replace_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(BadInputError, match="not a tf2torch run"), staged_run_dir(tmp_path):
        pass
    assert (tmp_path / "precious.txt").read_text() == "keep me"
