"""Fingerprints for ``--resume``: a SHA-256 over a model's settings and the content of its files."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from pipeline.migration.manifest import ModelSpec

# --------------------------------------------------------------------------- fingerprints


def _hash_path(digest: Any, path: Path) -> None:
    if path.is_file():
        digest.update(b"file\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    elif path.is_dir():
        digest.update(b"dir\0")
        for child in sorted(path.rglob("*")):
            if "__pycache__" in child.parts or not child.is_file():
                continue
            digest.update(str(child.relative_to(path)).encode() + b"\0")
            _hash_path(digest, child)
    else:
        digest.update(b"missing\0")


def _module_file(dotted: str) -> Path | None:
    """Where ``package.module`` lives on the import path, found without importing it."""
    parts = dotted.split(".")
    for entry in [os.getcwd(), *sys.path]:
        base = Path(entry or ".", *parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _content_paths(spec: ModelSpec) -> list[Path]:
    paths: list[Path] = []
    path_part, sep, function = spec.source.rpartition(":")
    if sep and function.isidentifier():
        found = Path(path_part) if path_part.endswith(".py") else _module_file(path_part)
        if found is not None:
            paths.append(found)
    else:
        paths.append(Path(spec.source))
    if "inputs" in spec.settings:
        paths.append(Path(spec.settings["inputs"]))
    paths.extend(Path(p) for p in spec.settings.get("patches", ()))
    custom = spec.settings.get("custom_objects")
    if custom:
        found = Path(custom) if custom.endswith(".py") else _module_file(custom)
        if found is not None:
            paths.append(found)
    return paths


def fingerprint(spec: ModelSpec) -> str:
    """SHA-256 over the model's source, settings and the content of every file it uses."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        tool_version = version("tf2torch")
    except PackageNotFoundError:
        tool_version = "unknown"
    digest = hashlib.sha256()
    header = {"source": spec.source, "settings": spec.settings, "tf2torch": tool_version}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for path in _content_paths(spec):
        digest.update(str(path).encode() + b"\0")
        _hash_path(digest, path)
    return digest.hexdigest()
