"""TF's float64 twin is built only once the float32 model's variables are freed (their
values and gradients are on disk by then): float32 and float64 are never side by side in
the TF worker, which at LLM scale would be three times the weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CASE = Path(__file__).with_name("twin_release_cases.py")


def test_the_twin_is_built_after_every_float32_variable_is_freed(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(CASE), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["variables"] > 0 and seen["alive_at_twin"] == [0], seen
    # The twin was built and measured TF's floor from the values on disk.
    assert seen["gradient_error"] is None and seen["unmeasured"] is None, seen
    assert seen["floors"] > 0, seen
    # The released model refuses to run rather than compute with stale storage.
    assert "released for its float64 twin" in seen["after"], seen
