"""Imports point one way: commands → api → features → stages → core.

Each unit below has a rank.  A module may import its own unit and any unit of a lower rank,
nothing else: a stage never reaches up into the API or a command, and two features never
lean on each other sideways.  The stages are ranked in pipeline order, so a later stage may
read an earlier stage's data types (verify reads the import stage's parameter table) but
never the reverse.  Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

RANKS: dict[str, int] = {
    "pipeline.core": 0,
    "pipeline.export": 1,
    "pipeline.passes": 2,
    "pipeline.to_torch": 3,
    "pipeline.verify": 4,
    "pipeline.api": 5,
    "pipeline.diff": 5,
    "pipeline.scaling": 5,
    "pipeline.init": 5,
    "pipeline.testing": 5,
    "pipeline.training": 5,
    "pipeline.migration": 6,
    "pipeline.commands": 7,
    "pipeline.cli": 8,
    "pipeline": 8,  # the package facade (pipeline/__init__.py) re-exports the public API
    "pipeline.__main__": 9,
}
SAME_UNIT = {"patches": "pipeline.passes"}
"""Custom-op patches are fixup passes: the fixup stage loads them, they use its helpers."""


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_of(module: str) -> str | None:
    """The ranked unit a dotted module name belongs to (the longest matching prefix)."""
    for alias, unit in SAME_UNIT.items():
        if module == alias or module.startswith(alias + "."):
            return unit
    best = None
    for unit in RANKS:
        if (module == unit or module.startswith(unit + ".")) and (
            best is None or len(unit) > len(best)
        ):
            best = unit
    return best


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import of our own packages in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in ("pipeline", "patches"):
                # `from pipeline import api` imports the submodule pipeline.api.
                for alias in node.names:
                    yield node.lineno, f"{node.module}.{alias.name}"
            else:
                yield node.lineno, node.module


def _sources(root: Path = REPO) -> list[Path]:
    return sorted([*(root / "pipeline").rglob("*.py"), *(root / "patches").rglob("*.py")])


def violations(root: Path = REPO) -> list[str]:
    """Every import under ``root`` that points up or sideways, as ``file:line: unit -> unit``."""
    found = []
    for path in _sources(root):
        own = unit_of(_module_name(path, root))
        assert own is not None, f"{path} belongs to no ranked unit: add it to RANKS"
        for line, target in _imports(path):
            if not target.startswith(("pipeline", "patches")):
                continue
            other = unit_of(target)
            if other is None:
                # A name imported from the facade (`from pipeline import convert`).
                other = "pipeline"
            if other == own or RANKS[other] < RANKS[own]:
                continue
            found.append(f"{path.relative_to(root)}:{line}: {own} -> {other}")
    return found


def test_imports_point_down() -> None:
    assert violations() == []


def test_every_module_has_a_unit() -> None:
    for path in _sources():
        assert unit_of(_module_name(path, REPO)) is not None, path


def test_upward_and_sideways_imports_are_caught(tmp_path: Path) -> None:
    # The checker must be able to fail: plant a lazy upward import and a sideways one.
    core = tmp_path / "pipeline" / "core"
    core.mkdir(parents=True)
    (core / "errors.py").write_text("def f():\n    from pipeline.api import convert\n")
    (tmp_path / "pipeline" / "init.py").write_text("from pipeline import scaling\n")
    (tmp_path / "pipeline" / "scaling.py").write_text("from pipeline.core import errors\n")
    (tmp_path / "patches").mkdir()
    assert violations(tmp_path) == [
        "pipeline/core/errors.py:2: pipeline.core -> pipeline.api",
        "pipeline/init.py:1: pipeline.init -> pipeline.scaling",
    ]


EXPORT_SIDE = ("pipeline/export", "pipeline/core/errors.py", "pipeline/core/signature.py")


@pytest.mark.parametrize("heavy", ["torch", "onnx2torch", "torchvision"])
def test_export_stage_never_imports_torch(heavy: str) -> None:
    # The export stage runs in the TensorFlow worker, where torch must never be imported
    # (torchvision after TensorFlow segfaults).
    for path in _sources():
        rel = str(path.relative_to(REPO))
        if not rel.startswith(EXPORT_SIDE):
            continue
        for line, target in _imports(path):
            assert target != heavy and not target.startswith(heavy + "."), f"{rel}:{line}"
