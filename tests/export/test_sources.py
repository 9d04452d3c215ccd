"""Source parsing: every accepted form, and a clear error for the rest."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from pipeline.core.errors import BadInputError
from pipeline.export.sources import SourceKind, parse_source


def test_factory_file_and_module(tmp_path: Path) -> None:
    factory = tmp_path / "nets.py"
    factory.write_text("def make():\n    pass\n")
    parsed = parse_source(f"{factory}:make")
    assert parsed.kind is SourceKind.FACTORY_FILE
    assert parsed.location == str(factory.resolve()) and parsed.function == "make"
    parsed = parse_source("models.zoo:dense_mlp")
    assert parsed.kind is SourceKind.FACTORY_MODULE
    assert (parsed.location, parsed.function) == ("models.zoo", "dense_mlp")


def test_files_and_saved_model(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "m.keras", "w") as archive:
        archive.writestr("config.json", "{}")
    (tmp_path / "m.h5").write_bytes(b"x")
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"x")
    assert parse_source(str(tmp_path / "m.keras")).kind is SourceKind.KERAS
    assert parse_source(str(tmp_path / "m.h5")).kind is SourceKind.H5
    assert parse_source(str(tmp_path / "sm")).kind is SourceKind.SAVED_MODEL


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: str(d / "absent.keras"), "model not found"),
        (lambda d: str(d), "not a SavedModel"),
        (lambda d: str(d / "absent.py") + ":make", "factory file not found"),
        (
            lambda d: (d / "m.onnx").write_bytes(b"x") and str(d / "m.onnx"),
            "unrecognised model file",
        ),
        (lambda d: "not a/module:fn", "cannot read"),
        (
            # A truncated .keras: refused here, before TensorFlow starts.
            lambda d: (d / "t.keras").write_bytes(b"PK\x03\x04 cut") and str(d / "t.keras"),
            "cannot load .*t.keras: not a zip archive",
        ),
    ],
)
def test_bad_sources(tmp_path: Path, make: object, message: str) -> None:
    assert callable(make)
    with pytest.raises(BadInputError, match=message):
        parse_source(make(tmp_path))
