"""The fuzzer's fixed seeds through ``python -m pipeline convert``: no silent outcome.

Each of :data:`fuzz.run.FIXED_SEEDS` is a tiny random Keras model (:mod:`fuzz.grammar`)
converted by the CLI, two at a time; each must pass in full or fail loudly with a classified
kind.  The first :data:`DEFAULT_SEEDS` run by default, the rest in the slow suite.  A seed whose silent outcome is a known limit (README, "Known limits") is a strict
xfail naming it: when the limit is lifted the test says so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fuzz.outcome import PASS, SILENT
from fuzz.run import FIXED_SEEDS, ModelResult, run_fuzz

KNOWN_SILENT: dict[int, str] = {}
DEFAULT_SEEDS = 5
"""How many of the fixed seeds the default suite converts (two at a time)."""
_GROUPS = (FIXED_SEEDS[:DEFAULT_SEEDS], FIXED_SEEDS[DEFAULT_SEEDS:])


@pytest.fixture(scope="module")
def fixed_results(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[int], ModelResult]:
    """The result of a seed, its group (default or slow) converted two at a time on first use."""
    results: dict[int, ModelResult] = {}

    def result_of(seed: int) -> ModelResult:
        if seed not in results:
            [group] = [g for g in _GROUPS if seed in g]
            out = tmp_path_factory.mktemp("fuzz")
            results.update(
                {r.seed: r for r in run_fuzz(group, Path(out), timeout=300, jobs=2, echo=False)}
            )
        return results[seed]

    return result_of


def _seed_param(seed: int) -> Any:
    marks = [pytest.mark.slow] if seed in _GROUPS[1] else []
    if seed in KNOWN_SILENT:
        marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_SILENT[seed]))
    return pytest.param(seed, marks=marks)


@pytest.mark.parametrize("seed", [_seed_param(s) for s in FIXED_SEEDS])
def test_fixed_seed_passes_or_fails_loudly(
    seed: int, fixed_results: Callable[[int], ModelResult]
) -> None:
    result = fixed_results(seed)
    assert result.status != SILENT, f"{result.kind}: {result.detail} ({result.factory})"


REGRESSION_SEEDS: dict[int, str] = {
    1143: "transposes: a graph output replaced by a new node's value lost its type",
    1001: "conv_bias: an Add straight after the Conv dropped the bias (pass check)",
    1020: "conv_bias: the same, seen as an unmapped depthwise bias",
    1049: "codegen: SELU had no readable form",
    1104: "conv_bias: a bias sum that is the model's output raised ValueError",
    1036: "export: an input returned as an output named an Identity like the input (SerdeError)",
}
"""Fuzz seeds that failed loudly on a bug this tree fixed: each must now pass in full.  The
first runs by default; the rest are in the slow suite (the fixes have unit tests too)."""


@pytest.mark.parametrize(
    "seed",
    [
        s if i == 0 else pytest.param(s, marks=pytest.mark.slow)
        for i, s in enumerate(REGRESSION_SEEDS)
    ],
)
def test_fixed_fuzz_failure_now_passes_in_full(seed: int, tmp_path: Path) -> None:
    [result] = run_fuzz([seed], tmp_path, timeout=300, jobs=1, echo=False)
    assert result.status == PASS and result.kind == "full pass", (
        f"{REGRESSION_SEEDS[seed]}: now {result.kind}: {result.detail}"
    )
