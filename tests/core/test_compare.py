"""Output comparison: tolerances, metrics, non-finite values and JSON output.

Expected values are worked out by hand (or with plain numpy) from the formulas in the
``pipeline.core.compare`` module docstring, never copied from a run of the code under test.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from pipeline.core.compare import (
    EXACT,
    NOISE_EPS_FACTOR,
    NOISE_FACTOR,
    Noise,
    Tolerance,
    Tolerances,
    compare_all,
    compare_pair,
)
from pipeline.core.errors import BadInputError

REQUIRED_JSON_KEYS = {
    "pair",
    "output",
    "max_abs",
    "max_rel",
    "mismatch_fraction",
    "cosine",
    "atol",
    "rtol",
    "pass",
}


def strict_json(data: object) -> Any:
    """Serialise with NaN/Inf forbidden and read back."""
    return json.loads(json.dumps(data, allow_nan=False))


# --- Tolerances -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (np.float16, Tolerance(1e-2, 1e-2)),
        (np.float32, Tolerance(1e-4, 1e-4)),
        (np.float64, Tolerance(1e-7, 1e-7)),
        ("float32", Tolerance(1e-4, 1e-4)),
        (np.dtype("float64"), Tolerance(1e-7, 1e-7)),
        (np.int8, Tolerance(0.0, 0.0)),
        (np.int32, Tolerance(0.0, 0.0)),
        (np.int64, Tolerance(0.0, 0.0)),
        (np.uint8, Tolerance(0.0, 0.0)),
        (np.bool_, Tolerance(0.0, 0.0)),
    ],
)
def test_dtype_defaults(dtype: object, expected: Tolerance) -> None:
    assert Tolerances().for_output("y", dtype) == expected


def test_bfloat16_default() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    assert Tolerances().for_output("y", ml_dtypes.bfloat16) == Tolerance(1e-2, 1e-2)


def test_global_atol_replaces_only_atol_of_float_outputs() -> None:
    tols = Tolerances(atol=1e-3)
    assert tols.for_output("y", np.float32) == Tolerance(1e-3, 1e-4)
    assert tols.for_output("y", np.float16) == Tolerance(1e-3, 1e-2)
    assert tols.for_output("y", np.float64) == Tolerance(1e-3, 1e-7)


def test_global_rtol_replaces_only_rtol_of_float_outputs() -> None:
    tols = Tolerances(rtol=0.5)
    assert tols.for_output("y", np.float32) == Tolerance(1e-4, 0.5)
    assert tols.for_output("y", np.float64) == Tolerance(1e-7, 0.5)


def test_global_overrides_leave_integer_and_bool_outputs_exact() -> None:
    tols = Tolerances(atol=1.0, rtol=1.0)
    assert tols.for_output("y", np.int64) == Tolerance(0.0, 0.0)
    assert tols.for_output("y", np.bool_) == Tolerance(0.0, 0.0)


# --- the float32 noise model -----------------------------------------------------------------

EPS32 = float(np.finfo(np.float32).eps)


def test_noise_tolerance_is_k_times_both_floors_plus_eps_floor() -> None:
    # k = 2, f = 16: atol = 2·(1e-4 + 1e-4) + 16·eps32·2 = 4e-4 + 3.8e-6 → 4.1e-4 (2 digits, up).
    assert (NOISE_FACTOR, NOISE_EPS_FACTOR) == (2.0, 16.0)
    assert Noise(noise=1e-4, scale=2.0).tolerance() == Tolerance(4.1e-4, 0.0)
    # No noise at all: the eps floor alone, 16·eps32·1 = 1.907e-6 → 2.0e-6.
    assert Noise(noise=0.0, scale=1.0).tolerance() == Tolerance(2.0e-6, 0.0)
    assert Noise(noise=0.0, scale=0.0).tolerance() == Tolerance(0.0, 0.0)


def test_noise_tolerance_uses_the_outputs_epsilon() -> None:
    # 16·eps16 = 16·2**-10 = 0.015625 → 0.016; float32 would give 1.9e-6.
    assert Noise(0.0, 1.0, "float16").tolerance().atol == 0.016


def test_measured_noise_sets_the_tolerance_of_its_floating_output() -> None:
    tols = Tolerances(noise={"logits": Noise(1e-4, 2.0)})
    assert tols.for_output("logits", np.float32) == Tolerance(4.1e-4, 0.0)
    assert tols.noise_for("logits", np.float32) == Noise(1e-4, 2.0)
    # Other outputs, float64 outputs and integer outputs keep their defaults.
    assert tols.for_output("other", np.float32) == Tolerance(1e-4, 1e-4)
    assert tols.for_output("logits", np.float64) == Tolerance(1e-7, 1e-7)
    assert tols.for_output("logits", np.int64) == EXACT
    assert tols.noise_for("logits", np.float64) is None


def test_noise_that_is_a_large_part_of_the_output_fails_instead_of_passing_anything() -> None:
    """EfficientNetB7 calibrated on 8 images: float32 off float64 by 4.2e4 on logits of 8.1e4,
    a tolerance of 1.7e5 that any output would pass.  Such a comparison fails, and says why."""
    logits = np.array([[51281.3, -2.0]], np.float32)
    wrong = np.array([[-9000.0, 7.0]], np.float32)
    unstable = Tolerances(noise={"logits": Noise(42027.5, 81138.2)})
    [result] = compare_all({"tf": {"logits": logits}, "ort": {"logits": wrong}}, unstable)
    assert result.max_abs is not None and result.max_abs < result.atol  # within the tolerance
    assert not result.passed and "cannot compute this model" in (result.note or "")
    # TF's own floor counts too (the tf-* pairs' ``noise_other``).
    assert Noise(1e-3, 1.0, noise_other=0.5).unstable() is not None
    # A stable deep network (EfficientNetB6: 0.89 on 827, 0.11 %) is judged as before.
    stable = Tolerances(noise={"logits": Noise(0.89, 827.0)})
    [result] = compare_all({"tf": {"logits": logits}, "ort": {"logits": logits + 1}}, stable)
    assert result.passed and result.note is None
    # A user's tolerance decides on its own terms.
    forced = Tolerances(atol=2e5, noise={"logits": Noise(42027.5, 81138.2)})
    [result] = compare_all({"tf": {"logits": logits}, "ort": {"logits": wrong}}, forced)
    assert result.passed


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ({"atol": 1e-2}, Tolerance(1e-2, 1e-4)),
        ({"rtol": 1e-2}, Tolerance(1e-4, 1e-2)),
        ({"per_output": {"logits": Tolerance(0.5, 0.0)}}, Tolerance(0.5, 0.0)),
    ],
)
def test_user_tolerances_override_the_noise_floor(
    user: dict[str, Any], expected: Tolerance
) -> None:
    tols = Tolerances(noise={"logits": Noise(1e-4, 2.0)}, **user)
    assert tols.for_output("logits", np.float32) == expected
    assert tols.noise_for("logits", np.float32) is None


def test_noise_floor_decides_pass_and_is_recorded() -> None:
    ref = np.zeros(4, np.float32)
    tols = Tolerances(noise={"y": Noise(1e-4, 1.0)})  # atol = 4e-4 + 1.9e-6 → 4.1e-4
    quiet = compare_all({"tf": {"y": ref}, "torch": {"y": ref + np.float32(3e-4)}}, tols)
    loud = compare_all({"tf": {"y": ref}, "torch": {"y": ref + np.float32(5e-4)}}, tols)
    assert [c.passed for c in quiet + loud] == [True, False]
    assert quiet[0].noise_floor == 1e-4 and quiet[0].to_json()["noise_floor"] == 1e-4
    assert "noise floor" in str(loud[0])
    fixed = compare_all({"tf": {"y": ref}, "torch": {"y": ref + np.float32(3e-4)}}, Tolerances())
    assert not fixed[0].passed and fixed[0].noise_floor is None


def test_tolerances_json_round_trip_keeps_noise_floors() -> None:
    tols = Tolerances(
        rtol=1e-3,
        per_output={"a": Tolerance(1.0, 0.0)},
        noise={"y": Noise(1e-5, 3.0, "float16")},
    )
    data = strict_json(tols.to_json())
    assert data["noise_floor"]["y"]["atol"] == Noise(1e-5, 3.0, "float16").tolerance().atol
    assert data["noise_model"]["k"] == NOISE_FACTOR
    assert Tolerances.from_json(data) == tols
    # A report from before noise floors: none, and the rest as it was.
    assert Tolerances.from_json({"atol": None, "rtol": 1e-3}) == Tolerances(rtol=1e-3)


def test_per_output_override_wins_for_that_name_only() -> None:
    tols = Tolerances(atol=1e-3, rtol=1e-3, per_output={"logits": Tolerance(0.5, 0.25)})
    assert tols.for_output("logits", np.float32) == Tolerance(0.5, 0.25)
    assert tols.for_output("logits", np.int32) == Tolerance(0.5, 0.25)
    assert tols.for_output("probs", np.float32) == Tolerance(1e-3, 1e-3)


def test_tolerances_to_json() -> None:
    tols = Tolerances(atol=2e-4, per_output={"y": Tolerance(1.0, 0.0)})
    data = strict_json(tols.to_json())
    assert data["atol"] == 2e-4
    assert data["rtol"] is None
    assert data["per_output"] == {"y": {"atol": 1.0, "rtol": 0.0}}
    assert data["defaults"]["float32"] == {"atol": 1e-4, "rtol": 1e-4}
    assert data["defaults"]["float16"] == {"atol": 1e-2, "rtol": 1e-2}
    assert data["defaults"]["float64"] == {"atol": 1e-7, "rtol": 1e-7}
    assert data["integer_and_bool"] == "exact"


# --- compare_pair: metrics --------------------------------------------------------------


def test_identical_float_outputs_pass_with_perfect_metrics() -> None:
    x = np.array([[0.5, -1.25], [3.0, 0.0]], dtype=np.float32)
    c = compare_pair("tf-ort", "y", x, x.copy(), Tolerance(1e-4, 1e-4))
    assert c.passed
    assert bool(c) is True
    assert c.max_abs == 0.0
    assert c.max_rel == 0.0
    assert c.mismatch_fraction == 0.0
    assert c.cosine == pytest.approx(1.0, abs=1e-12)
    assert c.note is None
    assert (c.pair, c.output) == ("tf-ort", "y")
    assert (c.atol, c.rtol) == (1e-4, 1e-4)


def test_max_abs_and_max_rel_are_elementwise_maxima() -> None:
    # Differences [0.5, 1.0]; relative [0.5 / 1, 1 / 100] -> max_rel 0.5, not 1 / 100.
    ref = np.array([1.0, 100.0])
    other = np.array([1.5, 101.0])
    c = compare_pair("tf-torch", "y", ref, other, Tolerance(0.0, 0.0))
    assert c.max_abs == 1.0
    assert c.max_rel == 0.5


def test_max_rel_divides_by_reference_not_other() -> None:
    # ref=4, other=2: |a-b|/|b| = 2/4 = 0.5 (dividing by |a| would give 1.0).
    c = compare_pair("tf-ort", "y", np.array([4.0]), np.array([2.0]), Tolerance(0.0, 0.0))
    assert c.max_rel == 0.5


def test_max_rel_uses_absolute_value_of_negative_reference() -> None:
    c = compare_pair("tf-ort", "y", np.array([-4.0]), np.array([-3.0]), Tolerance(0.0, 0.0))
    assert c.max_abs == 1.0
    assert c.max_rel == 0.25


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_zero_reference_divides_by_tiny_of_reference_dtype(dtype: type) -> None:
    ref = np.array([0.0, 2.0], dtype=dtype)
    other = np.array([0.25, 2.0], dtype=dtype)
    c = compare_pair("tf-ort", "y", ref, other, Tolerance(0.0, 0.0))
    expected = 0.25 / float(np.finfo(dtype).tiny)
    assert c.max_rel == pytest.approx(expected, rel=1e-12)
    assert math.isfinite(c.max_rel)
    assert strict_json(c.to_json())["max_rel"] == pytest.approx(expected, rel=1e-12)


def test_float32_differences_are_computed_in_float64() -> None:
    # 1 + 2**-23 and 1 are adjacent float32 values; their difference is exactly 2**-23.
    ref = np.array([1.0], dtype=np.float32)
    other = np.array([1.0 + 2.0**-23], dtype=np.float32)
    c = compare_pair("tf-ort", "y", ref, other, Tolerance(0.0, 0.0))
    assert c.max_abs == 2.0**-23
    assert not c.passed


def test_mismatch_boundary_is_inclusive() -> None:
    # allowed = atol + rtol*|b| = 0.25 + 0.25*1 = 0.5 exactly (all values dyadic).
    tol = Tolerance(0.25, 0.25)
    at_limit = compare_pair("tf-ort", "y", np.array([1.0]), np.array([1.5]), tol)
    assert at_limit.passed
    assert at_limit.mismatch_fraction == 0.0
    just_over = compare_pair(
        "tf-ort", "y", np.array([1.0]), np.array([np.nextafter(1.5, 2.0)]), tol
    )
    assert not just_over.passed
    assert just_over.mismatch_fraction == 1.0


def test_mismatch_rtol_scales_with_reference() -> None:
    # ref=1, other=3, rtol=1: allowed 1*|1| = 1 < diff 2 -> mismatch.
    # (Scaling by |other| would allow 3 and pass.)
    tol = Tolerance(0.0, 1.0)
    assert not compare_pair("tf-ort", "y", np.array([1.0]), np.array([3.0]), tol).passed
    # Swapped: ref=3 allows 3 >= 2 -> match.
    assert compare_pair("tf-ort", "y", np.array([3.0]), np.array([1.0]), tol).passed


def test_mismatch_fraction_counts_elements_outside_tolerance() -> None:
    ref = np.zeros(8)
    other = np.zeros(8)
    other[[1, 4, 6]] = [0.2, -0.3, 0.05]  # atol 0.1: 0.2 and 0.3 mismatch, 0.05 does not
    c = compare_pair("tf-ort", "y", ref, other, Tolerance(0.1, 0.0))
    assert c.mismatch_fraction == 2 / 8
    assert not c.passed
    assert c.max_abs == pytest.approx(0.3)


def test_cosine_matches_hand_formula() -> None:
    ref = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    other = np.array([[2.0, 1.0], [4.0, -1.0]], dtype=np.float32)
    # a.b = 2 + 2 + 12 - 4 = 12; |a| = sqrt(4+1+16+1) = sqrt(22); |b| = sqrt(30)
    expected = 12.0 / (math.sqrt(22.0) * math.sqrt(30.0))
    c = compare_pair("tf-ort", "y", ref, other, Tolerance(1e-4, 1e-4))
    assert c.cosine == pytest.approx(expected, rel=1e-12)


def test_cosine_of_opposite_vectors_is_minus_one() -> None:
    ref = np.array([1.0, -2.0, 3.0])
    c = compare_pair("tf-ort", "y", ref, -ref, Tolerance(0.0, 0.0))
    assert c.cosine == pytest.approx(-1.0, abs=1e-12)


def test_cosine_of_two_zero_outputs_is_one() -> None:
    z = np.zeros((2, 3), dtype=np.float32)
    c = compare_pair("tf-ort", "y", z, z.copy(), Tolerance(1e-4, 1e-4))
    assert c.cosine == 1.0
    assert c.passed


@pytest.mark.parametrize("zero_side", ["ref", "other"])
def test_cosine_is_zero_when_exactly_one_output_is_zero(zero_side: str) -> None:
    z = np.zeros(3)
    x = np.array([1.0, 2.0, 3.0])
    ref, other = (z, x) if zero_side == "ref" else (x, z)
    c = compare_pair("tf-ort", "y", ref, other, Tolerance(0.0, 0.0))
    assert c.cosine == 0.0
    assert not c.passed


def test_worst_index_and_values_locate_the_largest_difference() -> None:
    ref = np.arange(12, dtype=np.float64).reshape(3, 4)
    other = ref.copy()
    other[0, 1] += 0.5
    other[2, 3] -= 2.0  # the largest |a - b|
    other[1, 0] += 1.0
    c = compare_pair("tf-torch", "y", ref, other, Tolerance(0.0, 0.0))
    assert c.worst_index == (2, 3)
    assert c.worst_ref == 11.0  # ref is the pair's first framework
    assert c.worst_other == 9.0
    assert c.max_abs == 2.0
    assert c.mismatch_fraction == 3 / 12


def test_scalar_outputs() -> None:
    c = compare_pair("tf-ort", "y", np.float32(2.0), np.float32(2.5), Tolerance(0.0, 0.0))
    assert not c.passed
    assert c.max_abs == 0.5
    assert c.max_rel == 0.25
    assert c.worst_index == ()
    strict_json(c.to_json())


# --- compare_pair: failures -------------------------------------------------------------


def test_shape_mismatch_fails_with_null_metrics() -> None:
    ref = np.zeros((2, 3), dtype=np.float32)
    other = np.zeros((3, 2), dtype=np.float32)
    c = compare_pair("tf-ort", "y", ref, other, Tolerance(1e-4, 1e-4))
    assert not c.passed
    assert (c.max_abs, c.max_rel, c.mismatch_fraction, c.cosine) == (None, None, None, None)
    assert c.note is not None
    assert "shape mismatch" in c.note
    assert "[2, 3]" in c.note
    assert "[3, 2]" in c.note
    data = strict_json(c.to_json())
    assert data["pass"] is False
    assert data["max_abs"] is None


def test_broadcastable_shapes_still_mismatch() -> None:
    c = compare_pair("tf-ort", "y", np.ones(3), np.ones((1, 3)), Tolerance(1.0, 1.0))
    assert not c.passed
    assert c.note is not None and "shape mismatch" in c.note


def test_dtype_mismatch_fails_but_reports_float64_metrics() -> None:
    ref = np.array([1.0, 2.0], dtype=np.float32)
    other = np.array([1.0, 2.5], dtype=np.float64)
    c = compare_pair("tf-torch", "y", ref, other, Tolerance(1.0, 1.0))
    assert not c.passed  # values are within tolerance; the dtype alone fails it
    assert c.note is not None
    assert "dtype mismatch" in c.note
    assert "float32" in c.note and "float64" in c.note
    assert c.max_abs == 0.5
    assert c.max_rel == 0.25
    assert c.mismatch_fraction == 0.0


def test_dtype_mismatch_with_equal_values_still_fails() -> None:
    c = compare_pair(
        "tf-ort", "y", np.array([1, 2], dtype=np.int32), np.array([1, 2], dtype=np.int64), EXACT
    )
    assert not c.passed
    assert c.max_abs == 0.0
    assert c.note is not None and "dtype mismatch" in c.note


@pytest.mark.parametrize("side", ["ref", "other", "both"])
def test_nan_fails_and_is_named(side: str) -> None:
    ref = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    other = ref.copy()
    if side in ("ref", "both"):
        ref[1] = np.nan
    if side in ("other", "both"):
        other[1] = np.nan
    c = compare_pair("tf-ort", "y", ref, other, Tolerance(1e9, 1e9))
    assert not c.passed
    assert c.note is not None and "NaN" in c.note
    if side in ("ref", "both"):
        assert "NaN in tf output" in c.note
    if side in ("other", "both"):
        assert "NaN in ort output" in c.note
    data = strict_json(c.to_json())
    assert data["pass"] is False
    assert data["note"] == c.note


def test_nan_count_is_reported() -> None:
    other = np.array([np.nan, 0.0, np.nan, np.nan])
    c = compare_pair("tf-torch", "y", np.zeros(4), other, Tolerance(1.0, 1.0))
    assert c.note is not None and "NaN in torch output (3 elements)" in c.note
    assert c.mismatch_fraction == 3 / 4


def test_all_nan_gives_null_metrics_in_json() -> None:
    nan = np.full(3, np.nan, dtype=np.float32)
    c = compare_pair("tf-ort", "y", nan, nan.copy(), Tolerance(1.0, 1.0))
    assert not c.passed
    data = strict_json(c.to_json())
    assert data["max_abs"] is None
    assert data["max_rel"] is None
    assert data["worst_ref"] is None
    assert data["worst_other"] is None


def test_matching_infinities_pass_but_are_noted() -> None:
    ref = np.array([1.0, np.inf, -np.inf], dtype=np.float32)
    c = compare_pair("tf-ort", "y", ref, ref.copy(), Tolerance(1e-4, 1e-4))
    assert c.passed
    assert c.mismatch_fraction == 0.0
    assert c.max_abs == 0.0
    assert c.note is not None
    assert "Inf in tf output (2 elements)" in c.note
    assert "Inf in ort output (2 elements)" in c.note
    strict_json(c.to_json())


def test_infinity_of_opposite_sign_fails() -> None:
    ref = np.array([1.0, np.inf])
    other = np.array([1.0, -np.inf])
    c = compare_pair("tf-ort", "y", ref, other, Tolerance(1e-4, 1e-4))
    assert not c.passed
    assert c.mismatch_fraction == 0.5
    assert c.note is not None and "Inf" in c.note


@pytest.mark.parametrize(
    ("ref", "other"),
    [([np.inf], [1e308]), ([1e308], [np.inf]), ([0.0], [-np.inf])],
)
def test_one_sided_infinity_fails_whatever_the_tolerance(
    ref: list[float], other: list[float]
) -> None:
    c = compare_pair("tf-ort", "y", np.array(ref), np.array(other), Tolerance(1e300, 1e300))
    assert not c.passed
    assert c.mismatch_fraction == 1.0
    assert c.note is not None and "Inf" in c.note
    data = strict_json(c.to_json())  # infinite max_abs must become null, not Infinity
    assert data["max_abs"] is None
    assert data["pass"] is False


@pytest.mark.parametrize("shape", [(0,), (2, 0, 3)])
def test_zero_size_outputs_pass(shape: tuple[int, ...]) -> None:
    empty = np.zeros(shape, dtype=np.float32)
    c = compare_pair("tf-ort", "y", empty, empty.copy(), Tolerance(1e-4, 1e-4))
    assert c.passed
    assert c.mismatch_fraction == 0.0
    assert c.max_abs == 0.0
    assert c.note is not None and "empty" in c.note
    strict_json(c.to_json())


def test_zero_size_outputs_with_different_shapes_fail() -> None:
    c = compare_pair("tf-ort", "y", np.zeros((0, 3)), np.zeros((0, 4)), Tolerance(1.0, 1.0))
    assert not c.passed
    assert c.note is not None and "shape mismatch" in c.note


def test_zero_size_outputs_with_different_dtypes_fail() -> None:
    c = compare_pair(
        "tf-ort", "y", np.zeros(0, np.float32), np.zeros(0, np.float64), Tolerance(1.0, 1.0)
    )
    assert not c.passed
    assert c.note is not None and "dtype mismatch" in c.note


def test_integer_outputs_compare_exactly() -> None:
    ref = np.array([3, 7, 7, 1], dtype=np.int64)
    same = compare_pair("tf-ort", "argmax", ref, ref.copy(), EXACT)
    assert same.passed
    assert same.max_abs == 0.0
    off_by_one = ref.copy()
    off_by_one[2] = 6
    c = compare_pair("tf-ort", "argmax", ref, off_by_one, EXACT)
    assert not c.passed
    assert c.max_abs == 1.0
    assert c.mismatch_fraction == 1 / 4
    assert c.worst_index == (2,)


def test_bool_outputs_compare_exactly() -> None:
    ref = np.array([True, False, True])
    c = compare_pair("tf-ort", "mask", ref, np.array([True, True, True]), EXACT)
    assert not c.passed
    assert c.mismatch_fraction == pytest.approx(1 / 3)
    assert compare_pair("tf-ort", "mask", ref, ref.copy(), EXACT).passed


def test_bug_large_int64_outputs_compare_exactly() -> None:
    ref = np.array([2**53], dtype=np.int64)
    other = np.array([2**53 + 1], dtype=np.int64)
    assert not compare_pair("tf-ort", "ids", ref, other, EXACT).passed


def test_bug_float64_zero_reference_gives_finite_max_rel() -> None:
    c = compare_pair("tf-ort", "y", np.array([0.0]), np.array([10.0]), Tolerance(0.0, 0.0))
    assert c.max_rel is not None and math.isfinite(c.max_rel)


def test_bug_bfloat16_nan_is_named() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    ref = np.array([1.0, np.nan], dtype=ml_dtypes.bfloat16)
    c = compare_pair("tf-ort", "y", ref, ref.copy(), Tolerance(1e-2, 1e-2))
    assert not c.passed
    assert c.note is not None and "NaN" in c.note


def test_bug_bfloat16_max_rel_uses_reference_magnitude() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    ref = np.array([2.0**-7], dtype=ml_dtypes.bfloat16)
    other = np.array([2.0**-6], dtype=ml_dtypes.bfloat16)
    c = compare_pair("tf-ort", "y", ref, other, Tolerance(1e-2, 1e-2))
    assert c.max_rel == 1.0  # (2**-6 - 2**-7) / 2**-7


def test_float64_zero_reference_max_rel_is_clamped_and_noted() -> None:
    c = compare_pair("tf-ort", "y", np.array([0.0, 1.0]), np.array([10.0, 1.0]), EXACT)
    assert c.max_rel == np.finfo(np.float64).max
    assert c.max_abs == 10.0
    assert c.note is not None and "max_rel beyond the float64 range" in c.note
    assert "max_abs" not in c.note
    assert strict_json(c.to_json())["max_rel"] == np.finfo(np.float64).max


def test_float64_difference_overflow_is_clamped_and_noted() -> None:
    c = compare_pair("tf-ort", "y", np.array([-1e308]), np.array([1e308]), Tolerance(0.0, 0.0))
    assert not c.passed
    assert c.max_abs == np.finfo(np.float64).max
    assert c.note is not None and "max_abs beyond the float64 range" in c.note
    assert c.cosine == pytest.approx(-1.0, abs=1e-12)  # huge values do not overflow the norms


def test_infinite_reference_does_not_hide_the_other_elements() -> None:
    # Element 0: ref +Inf vs finite (named, fails); element 1: |1.5 - 1| = 0.5.
    ref = np.array([np.inf, 1.0])
    other = np.array([1.0, 1.5])
    c = compare_pair("tf-ort", "y", ref, other, Tolerance(1.0, 1.0))
    assert not c.passed
    assert c.mismatch_fraction == 0.5
    assert c.max_abs == 0.5
    assert c.max_rel == 0.5
    assert c.note is not None and "Inf in tf output (1 elements)" in c.note


def test_large_int64_worst_values_stay_exact_in_json() -> None:
    ref = np.array([0, 2**62 + 1], dtype=np.int64)
    other = np.array([0, 2**62 + 3], dtype=np.int64)
    c = compare_pair("tf-ort", "ids", ref, other, EXACT)
    assert not c.passed
    assert c.max_abs == 2.0
    assert c.mismatch_fraction == 0.5
    data = strict_json(c.to_json())
    assert (data["worst_ref"], data["worst_other"]) == (2**62 + 1, 2**62 + 3)


def test_int64_extremes_do_not_overflow() -> None:
    info = np.iinfo(np.int64)
    ref = np.array([info.min, 5], dtype=np.int64)
    other = np.array([info.max, 5], dtype=np.int64)
    c = compare_pair("tf-ort", "ids", ref, other, EXACT)
    assert not c.passed
    assert c.max_abs == float(2**64 - 1)
    assert c.worst_index == (0,)


def test_uint64_against_int64_compares_exactly() -> None:
    ref = np.array([2**63, 1], dtype=np.uint64)
    other = np.array([2**63 - 1, 1], dtype=np.int64)
    c = compare_pair("tf-ort", "ids", ref, other, EXACT)
    assert not c.passed
    assert c.note is not None and "dtype mismatch" in c.note
    assert c.max_abs == 1.0
    assert c.mismatch_fraction == 0.5


def test_bfloat16_matching_outputs_pass_and_inf_is_noted() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    ref = np.array([0.5, np.inf, -3.0], dtype=ml_dtypes.bfloat16)
    c = compare_pair("tf-ort", "y", ref, ref.copy(), Tolerance(1e-2, 1e-2))
    assert c.passed
    assert c.max_abs == 0.0
    assert c.note is not None and "Inf in tf output (1 elements)" in c.note


# --- OutputComparison -------------------------------------------------------------------


def test_to_json_keys_and_pass_field() -> None:
    c = compare_pair("ort-torch", "y", np.array([1.0]), np.array([1.25]), Tolerance(0.5, 0.0))
    data = strict_json(c.to_json())
    assert isinstance(data, dict)
    assert set(data) >= REQUIRED_JSON_KEYS
    assert data["pair"] == "ort-torch"
    assert data["output"] == "y"
    assert data["max_abs"] == 0.25
    assert data["max_rel"] == 0.25
    assert data["mismatch_fraction"] == 0.0
    assert data["atol"] == 0.5
    assert data["rtol"] == 0.0
    assert data["pass"] is True
    assert data["worst_index"] == [0]
    assert "passed" not in data


def test_str_shows_verdict() -> None:
    ok = compare_pair("tf-ort", "logits", np.ones(2), np.ones(2), EXACT)
    bad = compare_pair("tf-ort", "logits", np.ones(2), np.zeros(2), EXACT)
    assert str(ok).startswith("PASS tf-ort logits")
    assert str(bad).startswith("FAIL tf-ort logits")


# --- compare_all ------------------------------------------------------------------------


def test_compare_all_runs_every_pair_present_in_order() -> None:
    x = np.array([1.0, 2.0], dtype=np.float32)
    outputs = {"tf": {"y": x}, "ort": {"y": x.copy()}, "torch": {"y": x.copy()}}
    results = compare_all(outputs, Tolerances())
    assert [(c.pair, c.output) for c in results] == [
        ("tf-ort", "y"),
        ("tf-torch", "y"),
        ("ort-torch", "y"),
    ]
    assert all(results)


@pytest.mark.parametrize(
    ("present", "pairs"),
    [
        (("tf", "torch"), ["tf-torch"]),
        (("tf", "ort"), ["tf-ort"]),
        (("ort", "torch"), ["ort-torch"]),
        (("tf",), []),
        ((), []),
    ],
)
def test_compare_all_skips_pairs_with_an_absent_framework(
    present: tuple[str, ...], pairs: list[str]
) -> None:
    x = np.zeros(2, dtype=np.float32)
    outputs = {name: {"y": x.copy()} for name in present}
    assert [c.pair for c in compare_all(outputs, Tolerances())] == pairs


def test_compare_all_missing_output_fails_with_note() -> None:
    x = np.ones(3, dtype=np.float32)
    outputs = {"tf": {"a": x, "b": x}, "ort": {"a": x.copy()}}
    results = compare_all(outputs, Tolerances())
    by_output = {c.output: c for c in results}
    assert set(by_output) == {"a", "b"}
    assert by_output["a"].passed
    missing = by_output["b"]
    assert not missing.passed
    assert missing.note is not None and "missing" in missing.note and "ort" in missing.note
    assert missing.max_abs is None
    assert (missing.atol, missing.rtol) == (1e-4, 1e-4)
    strict_json(missing.to_json())


def test_compare_all_output_names_follow_the_reference() -> None:
    x = np.ones(3, dtype=np.float32)
    outputs = {"tf": {"a": x}, "ort": {"a": x.copy(), "extra": x.copy()}}
    assert [c.output for c in compare_all(outputs, Tolerances())] == ["a"]


def test_compare_all_picks_tolerance_from_reference_dtype_and_overrides() -> None:
    outputs = {
        "tf": {
            "f32": np.zeros(2, np.float32),
            "f64": np.zeros(2, np.float64),
            "ids": np.zeros(2, np.int64),
            "custom": np.zeros(2, np.float32),
        },
        "torch": {
            "f32": np.zeros(2, np.float32),
            "f64": np.zeros(2, np.float64),
            "ids": np.zeros(2, np.int64),
            "custom": np.zeros(2, np.float32),
        },
    }
    tols = Tolerances(rtol=0.5, per_output={"custom": Tolerance(3.0, 4.0)})
    got = {c.output: (c.atol, c.rtol) for c in compare_all(outputs, tols)}
    assert got == {
        "f32": (1e-4, 0.5),
        "f64": (1e-7, 0.5),
        "ids": (0.0, 0.0),
        "custom": (3.0, 4.0),
    }


def test_compare_all_reference_is_first_framework_of_each_pair() -> None:
    # rtol=1, atol=0: the pair passes only when |other - ref| <= |ref|.
    outputs = {
        "tf": {"y": np.array([3.0])},
        "ort": {"y": np.array([1.0])},
        "torch": {"y": np.array([3.0])},
    }
    tols = Tolerances(per_output={"y": Tolerance(0.0, 1.0)})
    by_pair = {c.pair: c for c in compare_all(outputs, tols)}
    assert by_pair["tf-ort"].passed  # ref tf=3: |1-3| = 2 <= 3
    assert by_pair["tf-torch"].passed
    assert not by_pair["ort-torch"].passed  # ref ort=1: |3-1| = 2 > 1
    assert by_pair["ort-torch"].worst_ref == 1.0
    assert by_pair["ort-torch"].worst_other == 3.0


def test_compare_all_custom_pairs() -> None:
    before = {"y": np.array([1.0, 2.0], dtype=np.float32)}
    after = {"y": np.array([1.0, 2.5], dtype=np.float32)}
    results = compare_all({"before": before, "after": after}, Tolerances(), [("before", "after")])
    assert len(results) == 1
    assert results[0].pair == "before-after"
    assert not results[0].passed
    assert results[0].max_abs == 0.5


def test_compare_all_integer_output_fails_on_any_difference_despite_global_tolerance() -> None:
    outputs = {"tf": {"ids": np.array([1, 2, 3])}, "ort": {"ids": np.array([1, 2, 4])}}
    (c,) = compare_all(outputs, Tolerances(atol=10.0, rtol=10.0))
    assert (c.atol, c.rtol) == (0.0, 0.0)
    assert not c.passed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"atol": -1.0}, "atol is -1"),
        ({"rtol": math.inf}, "rtol is inf"),
        ({"per_output": {"y": Tolerance(0.0, math.nan)}}, "rtol of output 'y' is nan"),
    ],
)
def test_a_negative_or_non_finite_tolerance_is_bad_input(
    kwargs: dict[str, Any], message: str
) -> None:
    # A negative atol failed every output, NaN crashed the JSON report: both are user errors.
    with pytest.raises(BadInputError, match=message):
        Tolerances(**kwargs)
    assert Tolerances(atol=0.0, rtol=0.0).atol == 0.0  # exact comparison stays allowed
