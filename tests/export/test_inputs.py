"""Input drawing, parsing and validation (NumPy only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import BadInputError
from pipeline.core.signature import TensorSpec
from pipeline.export.inputs import draw_inputs, load_inputs, parse_input_ranges, parse_input_specs

SPECS = [TensorSpec("x", "float32", (None, 3)), TensorSpec("tokens", "int32", (None, 5))]


def test_parse_ranges_and_specs() -> None:
    assert parse_input_ranges(["tokens=0:50", "ids=-2:3"]) == {"tokens": (0, 50), "ids": (-2, 3)}
    for bad in ["tokens", "tokens=0", "tokens=a:b", "tokens=5:5"]:
        with pytest.raises(BadInputError, match="--input-range"):
            parse_input_ranges([bad])
    assert parse_input_specs(["x=float32[None,28,28,1]"]) == [
        TensorSpec("x", "float32", (None, 28, 28, 1))
    ]
    with pytest.raises(BadInputError, match="unknown dtype"):
        parse_input_specs(["x=floaty[3]"])


def test_draw_is_seeded_and_respects_ranges() -> None:
    a = draw_inputs(SPECS, batch=4, seed=7, ranges={"tokens": (3, 9)})
    b = draw_inputs(SPECS, batch=4, seed=7, ranges={"tokens": (3, 9)})
    c = draw_inputs(SPECS, batch=4, seed=8, ranges={"tokens": (3, 9)})
    assert a["x"].shape == (4, 3) and a["x"].dtype == np.float32
    assert a["tokens"].dtype == np.int32 and a["tokens"].min() >= 3 and a["tokens"].max() < 9
    np.testing.assert_array_equal(a["x"], b["x"])
    assert not np.array_equal(a["x"], c["x"])


def test_draw_errors() -> None:
    with pytest.raises(BadInputError, match="integer input 'tokens' needs a range"):
        draw_inputs(SPECS, batch=2, seed=0, ranges={})
    with pytest.raises(BadInputError, match=r"unknown --input-range name.*tokns"):
        draw_inputs(SPECS, batch=2, seed=0, ranges={"tokns": (0, 5)})


def test_load_inputs_checks_keys_dtypes_and_shapes(tmp_path: Path) -> None:
    good = {"x": np.zeros((2, 3), np.float32), "tokens": np.zeros((2, 5), np.int32)}
    np.savez(tmp_path / "good.npz", **good)
    loaded = load_inputs(tmp_path / "good.npz", SPECS)
    assert list(loaded) == ["x", "tokens"]
    cases = {
        "shape": ({**good, "x": np.zeros((2, 4), np.float32)}, r"shape \[2, 4\].*\[\?, 3\]"),
        "dtype": (
            {**good, "x": np.zeros((2, 3), np.float64)},
            "is float64, the model expects float32",
        ),
        "keys": ({"x": good["x"]}, "missing: tokens"),
        "batch": ({**good, "tokens": np.zeros((3, 5), np.int32)}, "disagree on the batch size"),
    }
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(BadInputError, match=message):
            load_inputs(tmp_path / f"{name}.npz", SPECS)
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip")
    with pytest.raises(BadInputError, match="cannot read inputs file"):
        load_inputs(tmp_path / "corrupt.npz", SPECS)
