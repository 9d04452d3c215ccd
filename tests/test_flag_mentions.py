"""Every ``--flag`` that the pipeline's messages (or docstrings) mention is a real CLI flag.

An error that tells the user to pass a flag that does not exist is worse than no advice:
every string literal in ``pipeline/`` is searched for ``--name`` and each must be an option
of some ``tf2torch`` sub-command.
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

from pipeline.cli import build_parser
from pipeline.core.signature import DYNAMIC_SIZE, TensorSpec

REPO = Path(__file__).resolve().parents[1]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# Flags of other tools that messages and docs quote: pip in install advice and the Makefile's
# install lines, pytest in its recipes.
OUTSIDE_FLAGS = {"--no-deps", "--maxprocesses", "--upgrade", "--quiet"}


def _cli_flags(parser: argparse.ArgumentParser) -> set[str]:
    flags: set[str] = set()
    for action in parser._actions:
        flags.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= _cli_flags(sub)
    return flags


def _mentions() -> list[tuple[str, int, str]]:
    found = []
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found += [
                    (str(path.relative_to(REPO)), node.lineno, flag)
                    for flag in FLAG.findall(node.value)
                ]
    return found


def _train_script_flags() -> set[str]:
    """The options of the generated ``train.py`` (its own argparse, in the template)."""
    from pipeline.training import script

    return set(re.findall(r'add_argument\(\s*"(--[a-z][a-z0-9-]*)"', script._TEMPLATE))


def test_every_flag_a_message_mentions_exists() -> None:
    real = _cli_flags(build_parser())
    script_flags = _train_script_flags()
    assert "--epochs" in script_flags
    mentions = _mentions()
    assert len({flag for _, _, flag in mentions}) > 20  # the search does find the flags
    unknown = [
        f"{path}:{line}: {flag}"
        for path, line, flag in mentions
        if flag not in real
        and flag not in OUTSIDE_FLAGS
        and not (path.endswith("training/script.py") and flag in script_flags)
    ]
    assert not unknown, "messages name flags the CLI does not have:\n" + "\n".join(unknown)


def test_a_dynamic_sequence_dimension_gets_a_drawn_size() -> None:
    # Dynamic dimensions other than batch no longer stop a run with a message: they stay
    # dynamic in the exported models and the drawn inputs give them DYNAMIC_SIZE.
    spec = TensorSpec("token_ids", "int32", (None, None))
    assert spec.concrete_shape(2) == (2, DYNAMIC_SIZE)
