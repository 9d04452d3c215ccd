"""The fuzzer's fixed seeds through ``python -m pipeline convert``: no silent outcome.

Each of :data:`fuzz.run.FIXED_SEEDS` is a tiny random Keras model (:mod:`fuzz.grammar`)
converted by the CLI, two at a time; each must pass in full or fail loudly with a classified
kind.  A seed whose silent outcome is a known limit (README, "Known limits") is a strict
xfail naming it: when the limit is lifted the test says so.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.outcome import SILENT
from fuzz.run import FIXED_SEEDS, ModelResult, run_fuzz

KNOWN_SILENT: dict[int, str] = {}


@pytest.fixture(scope="module")
def fixed_results(tmp_path_factory: pytest.TempPathFactory) -> dict[int, ModelResult]:
    out = tmp_path_factory.mktemp("fuzz")
    results = run_fuzz(FIXED_SEEDS, Path(out), timeout=300, jobs=2, echo=False)
    return {r.seed: r for r in results}


@pytest.mark.parametrize(
    "seed",
    [
        pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=KNOWN_SILENT[s]))
        if s in KNOWN_SILENT
        else s
        for s in FIXED_SEEDS
    ],
)
def test_fixed_seed_passes_or_fails_loudly(seed: int, fixed_results: dict[int, ModelResult]) -> None:
    result = fixed_results[seed]
    assert result.status != SILENT, f"{result.kind}: {result.detail} ({result.factory})"
