"""The README and docs/ say only true things about the tree: every `make` target they name
exists, every `--flag` they show is an option of a tf2torch command (or of the generated
`train.py`, or of the named outside tool), and every relative link points at a file."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.cli import build_parser
from tests.test_flag_mentions import FLAG, OUTSIDE_FLAGS, _cli_flags, _train_script_flags

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
MAKE = re.compile(r"`make ([a-z][a-z0-9-]*)")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _make_targets() -> set[str]:
    makefile = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, flags=re.MULTILINE))


def test_the_pages_are_found() -> None:
    names = {p.name for p in PAGES}
    assert {"README.md", "comparing.md", "results.md", "known-limits.md"} <= names


def test_every_make_target_the_docs_name_exists() -> None:
    targets = _make_targets()
    assert {"demo", "test", "corpus"} <= targets  # the Makefile parse works
    missing = [
        f"{page.relative_to(REPO)}: make {name}"
        for page in PAGES
        for name in MAKE.findall(page.read_text())
        if name not in targets
    ]
    assert not missing, "docs name make targets the Makefile lacks:\n" + "\n".join(missing)


def test_every_flag_the_docs_show_is_real() -> None:
    real = _cli_flags(build_parser()) | _train_script_flags() | OUTSIDE_FLAGS
    unknown = sorted(
        {
            f"{page.relative_to(REPO)}: {flag}"
            for page in PAGES
            if "results" not in page.parts  # generated pages quote their own runs
            for flag in FLAG.findall(page.read_text())
            if flag not in real
        }
    )
    assert not unknown, "docs show flags no command has:\n" + "\n".join(unknown)


def test_every_relative_link_points_at_a_file() -> None:
    broken = [
        f"{page.relative_to(REPO)}: {target}"
        for page in PAGES
        for target in LINK.findall(page.read_text())
        if "://" not in target and not (page.parent / target).exists()
    ]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_readme_stays_short() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 270
