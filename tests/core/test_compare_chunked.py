"""Block-by-block comparison (``compare_pair`` with :data:`COMPARE_BLOCK`) against the
whole-array implementation it replaced.

``_reference_compare_pair`` below is that implementation, kept verbatim (bar names) as the
oracle: every field of the blocked result must equal the oracle's bit for bit (compared by
``repr``, so ``-0.0``/``0.0``, ``int``/``float`` and NaN all count), except the cosine, whose
sums now run block by block in another order: it must agree to 1e-15.  Block sizes are
shrunk so that a few dozen elements cross several block boundaries.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from pipeline.core import compare
from pipeline.core.compare import (
    _FLOAT64_MAX,
    OutputComparison,
    Tolerance,
    _finfo,
    _is_exact,
    compare_pair,
)

COSINE_AGREEMENT = 1e-15
"""How far the blocked cosine may be from the whole-array one (absolute, on a value in
[-1, 1]): the sums are the same numbers added in another order."""


# --- the whole-array implementation, as it was before blocks -----------------------------


def _ref_as_float64(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float64)


def _ref_exact_integers(ref: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = ref.astype(np.int64) if ref.dtype.kind in "bV" else ref
    other = other.astype(np.int64) if other.dtype.kind in "bV" else other
    lo = min(int(ref.min()), int(other.min()))
    hi = max(int(ref.max()), int(other.max()))
    if lo > -(2**62) and hi < 2**62:
        return ref.astype(np.int64), other.astype(np.int64)
    return ref.astype(object), other.astype(object)


def _ref_nonfinite_notes(
    ref: np.ndarray, other: np.ndarray, ref_name: str, other_name: str
) -> list[str]:
    notes = []
    for array, who in ((ref, ref_name), (other, other_name)):
        if array.dtype.kind == "c" or _finfo(array.dtype) is not None:
            array = array if array.dtype.kind in "fc" else _ref_as_float64(array)
            nans = int(np.isnan(array).sum())
            infs = int(np.isinf(array).sum())
            if nans:
                notes.append(f"NaN in {who} output ({nans} elements)")
            if infs:
                notes.append(f"Inf in {who} output ({infs} elements)")
    return notes


def _ref_cosine(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = (np.ldexp(x, -np.frexp(np.abs(x).max(initial=0.0))[1]) for x in (a, b))
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if not (math.isfinite(na) and math.isfinite(nb)):
        return None
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _reference_compare_pair(
    pair: str, output: str, ref: np.ndarray, other: np.ndarray, tol: Tolerance
) -> OutputComparison:
    ref_name, _, other_name = pair.partition("-")
    ref, other = np.asarray(ref), np.asarray(other)
    if ref.shape != other.shape:
        return OutputComparison(
            pair,
            output,
            None,
            None,
            None,
            None,
            tol.atol,
            tol.rtol,
            False,
            note=f"shape mismatch: {ref_name} {list(ref.shape)} vs {other_name} "
            f"{list(other.shape)}",
        )
    failing_notes = []
    if ref.dtype != other.dtype:
        failing_notes.append(
            f"dtype mismatch: {ref_name} {ref.dtype.name} vs {other_name} {other.dtype.name}"
        )
    nonfinite = _ref_nonfinite_notes(ref, other, ref_name, other_name)
    failing_notes += [n for n in nonfinite if n.startswith("NaN")]
    notes = failing_notes + [n for n in nonfinite if not n.startswith("NaN")]

    b = _ref_as_float64(ref).ravel()
    a = _ref_as_float64(other).ravel()
    if b.size == 0:
        return OutputComparison(
            pair,
            output,
            0.0,
            0.0,
            0.0,
            1.0,
            tol.atol,
            tol.rtol,
            not failing_notes,
            note="; ".join(notes) or "empty output",
        )
    finite = np.isfinite(a) & np.isfinite(b)
    with np.errstate(invalid="ignore", over="ignore"):
        allowed = tol.atol + tol.rtol * np.abs(b)
    worst_ref: float | None
    worst_other: float | None
    if _is_exact(ref.dtype) and _is_exact(other.dtype):
        bi, ai = (x.ravel() for x in _ref_exact_integers(ref, other))
        diff_int = np.abs(ai - bi)
        mismatched = np.asarray(diff_int > allowed, dtype=bool)
        worst = int(np.argmax(diff_int))
        max_abs: float | None = float(diff_int[worst])
        rel = np.asarray(diff_int / np.maximum(np.abs(bi), 1), dtype=np.float64)
        max_rel: float | None = float(rel.max())
        worst_ref, worst_other = int(bi[worst]), int(ai[worst])
    else:
        same_inf = np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b))
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.where(same_inf, 0.0, np.abs(a - b))
        nan = np.isnan(diff)
        info = _finfo(ref.dtype)
        tiny = float(info.tiny) if info is not None else 1.0
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            rel = diff / np.maximum(np.abs(b), tiny)
            mismatched = np.where(same_inf, False, nan | ~np.isfinite(diff) | (diff > allowed))
        worst = int(np.argmax(np.where(nan, np.inf, diff)))
        overflow_abs = finite & np.isinf(diff)
        overflow_rel = finite & np.isinf(rel)
        diff = np.where(overflow_abs, _FLOAT64_MAX, diff)
        rel = np.where(overflow_rel, _FLOAT64_MAX, rel)
        counted = np.isfinite(b) & ~nan
        max_abs = float(diff[counted].max()) if counted.any() else None
        max_rel = float(rel[counted].max()) if counted.any() else None
        for metric, value, overflow in (
            ("max_abs", max_abs, overflow_abs),
            ("max_rel", max_rel, overflow_rel),
        ):
            if overflow.any() and value == _FLOAT64_MAX:
                notes.append(f"{metric} beyond the float64 range, shown as {_FLOAT64_MAX:.3g}")
        worst_ref, worst_other = float(b[worst]), float(a[worst])
    passed = not failing_notes and not bool(mismatched.any())
    return OutputComparison(
        pair=pair,
        output=output,
        max_abs=max_abs,
        max_rel=max_rel,
        mismatch_fraction=float(mismatched.mean()),
        cosine=_ref_cosine(a[finite], b[finite]),
        atol=tol.atol,
        rtol=tol.rtol,
        passed=passed,
        note="; ".join(notes) or None,
        worst_index=tuple(int(i) for i in np.unravel_index(worst, ref.shape)),
        worst_ref=worst_ref,
        worst_other=worst_other,
    )


# --- the check --------------------------------------------------------------------------


def assert_same(
    ref: np.ndarray, other: np.ndarray, tol: Tolerance, label: str, cosine: bool = True
) -> OutputComparison:
    """Blocked and whole-array results agree: every field bit for bit, the cosine to
    :data:`COSINE_AGREEMENT` (unless ``cosine`` is False: the caller checks it)."""
    expected = _reference_compare_pair("tf-torch", "y", ref, other, tol)
    got = compare_pair("tf-torch", "y", ref, other, tol)
    for f in fields(OutputComparison):
        want, have = getattr(expected, f.name), getattr(got, f.name)
        if f.name == "cosine" and want is not None and have is not None:
            assert not cosine or abs(have - want) <= COSINE_AGREEMENT, (label, want, have)
        else:
            # repr: exact for floats (and tells -0.0, NaN, int from float apart).
            assert repr(have) == repr(want), (label, f.name, want, have)
    return got


@pytest.fixture(params=[1, 3, 8, 64])
def block(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """A small :data:`COMPARE_BLOCK`, so short outputs cross block boundaries."""
    monkeypatch.setattr(compare, "COMPARE_BLOCK", request.param)
    return int(request.param)


# --- random cases -----------------------------------------------------------------------

FLOATS = [np.float16, np.float32, np.float64, ml_dtypes.bfloat16]
INTS = [np.int8, np.int32, np.int64, np.uint8, np.uint64, np.bool_, ml_dtypes.int4]
TOLERANCES = [Tolerance(0.0, 0.0), Tolerance(1e-4, 1e-4), Tolerance(1e-2, 0.0), Tolerance(0, 1.0)]
SPECIALS = [np.nan, np.inf, -np.inf]


def _floats(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Random values of one magnitude (huge, tiny, subnormal or ordinary), some zeros."""
    scale = rng.choice([1.0, 1e-30, 1e30, 1e300, 1e-310, 1e308])
    values = np.where(rng.random(shape) < 0.1, 0.0, rng.standard_normal(shape) * scale)
    return np.asarray(values.astype(dtype))


def _ints(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Random integers, small or spanning the dtype's range (int64: past 2**62)."""
    if np.dtype(dtype) == np.bool_:
        return rng.random(shape) < 0.5
    info = ml_dtypes.iinfo(dtype) if np.dtype(dtype).kind == "V" else np.iinfo(dtype)
    lo, hi = (int(info.min), int(info.max)) if rng.random() < 0.5 else (max(info.min, -5), 5)
    return rng.integers(
        lo, hi, shape, dtype=np.int64 if hi < 2**63 else np.uint64, endpoint=True
    ).astype(dtype)


def _perturbed(rng: np.random.Generator, ref: np.ndarray) -> np.ndarray:
    """The other side: equal, nudged, unrelated, zero or constant-off (ties everywhere)."""
    mode = rng.integers(5)
    if mode == 0:
        return ref.copy()
    if mode == 1 and ref.dtype.kind == "f":
        nudge = 1 + 1e-3 * rng.standard_normal(ref.shape)
        return (ref.astype(np.float64) * nudge).astype(ref.dtype)
    if mode == 2:
        fresh = _floats if ref.dtype.kind == "f" or ref.dtype == ml_dtypes.bfloat16 else _ints
        return fresh(rng, ref.shape, ref.dtype)
    if mode == 3:
        return np.zeros_like(ref)
    return (ref.astype(np.float64) + 1).astype(ref.dtype)


def _plant_specials(rng: np.random.Generator, ref: np.ndarray, other: np.ndarray) -> None:
    """NaN and ±Inf at random places of either side, sometimes the same Inf on both."""
    if ref.size == 0 or _finfo(ref.dtype) is None or _finfo(other.dtype) is None:
        return
    for _ in range(rng.integers(4)):
        where = tuple(rng.integers(n) for n in ref.shape)
        value = rng.choice(SPECIALS)
        side = rng.integers(3)
        if side in (0, 2):
            ref[where] = value
        if side in (1, 2):
            other[where] = value if side == 2 or rng.random() < 0.5 else -value


def _noncontiguous(rng: np.random.Generator, array: np.ndarray) -> np.ndarray:
    """The same values in a non-C-contiguous layout: strided, reversed or Fortran order."""
    if array.ndim == 0:
        return array  # a scalar has no other layout
    kind = rng.integers(3)
    if kind == 0:
        spaced = np.empty((*array.shape[:-1], 2 * array.shape[-1]), array.dtype)[..., ::2]
        spaced[...] = array
        return spaced
    if kind == 1:
        return np.flip(np.flip(array).copy())
    return np.asfortranarray(array)


SHAPES = [
    (),
    (0,),
    (3, 0),
    (1,),
    (2,),
    (3,),
    (7,),
    (8,),
    (9,),
    (17,),
    (64,),
    (65,),
    (5, 13),
    (2, 3, 4),
    (4, 33),
]


def random_cases(seed: int, count: int) -> list[tuple[np.ndarray, np.ndarray, Tolerance, str]]:
    """``count`` seeded random pairs over dtypes, magnitudes, specials, shapes, layouts."""
    rng = np.random.default_rng(seed)
    with np.errstate(all="ignore"):  # overflowing values and casts are part of the point
        return list(_random_cases(rng, count))


def _random_cases(
    rng: np.random.Generator, count: int
) -> Iterator[tuple[np.ndarray, np.ndarray, Tolerance, str]]:
    for number in range(count):
        shape = SHAPES[rng.integers(len(SHAPES))]
        dtype = (FLOATS + INTS)[rng.integers(len(FLOATS) + len(INTS))]
        exact = np.dtype(dtype).kind in "biu" or np.dtype(dtype) == ml_dtypes.int4
        ref = (_ints if exact else _floats)(rng, shape, dtype)
        other = _perturbed(rng, ref)
        if rng.random() < 0.15:  # a dtype mismatch
            other = other.astype((FLOATS + INTS)[rng.integers(len(FLOATS) + len(INTS))])
        ref, other = np.array(ref), np.array(other)
        _plant_specials(rng, ref, other)
        if rng.random() < 0.3:
            ref = _noncontiguous(rng, ref)
        if rng.random() < 0.3:
            other = _noncontiguous(rng, other)
        tol = TOLERANCES[rng.integers(len(TOLERANCES))]
        yield ref, other, tol, f"case {number}: {shape} {ref.dtype} vs {other.dtype} {tol}"


def test_random_cases_match_whole_array(block: int) -> None:
    for ref, other, tol, label in random_cases(seed=block, count=400):
        assert_same(ref, other, tol, f"block {block}, {label}")


def test_random_cases_cover_what_they_should() -> None:
    """The random cases reach the paths the equivalence is about (or they prove nothing)."""
    seen: set[str] = set()
    for ref, other, tol, _ in random_cases(seed=3, count=400):
        c = _reference_compare_pair("tf-torch", "y", ref, other, tol)
        note = c.note or ""
        seen.update(key for key in ("NaN in", "Inf in", "dtype mismatch", "beyond") if key in note)
        if not ref.flags.c_contiguous or not other.flags.c_contiguous:
            seen.add("non-contiguous")
        if ref.size == 0 or ref.ndim == 0:
            seen.add(f"{ref.ndim}-d" if ref.ndim == 0 else "empty")
        if isinstance(c.worst_ref, int):
            seen.add("exact")
        seen.add("passed" if c.passed else "failed")
    assert seen >= {
        "NaN in",
        "Inf in",
        "dtype mismatch",
        "beyond",
        "non-contiguous",
        "0-d",
        "empty",
        "exact",
        "passed",
        "failed",
    }, seen


# --- named cases --------------------------------------------------------------------------


def _named_cases() -> dict[str, tuple[np.ndarray, np.ndarray, Tolerance]]:
    f64 = np.float64
    ties = np.zeros(20)
    big = np.full(20, 2**62 + 7, np.int64)
    return {
        "ties across blocks: the first largest wins": (ties, ties + 1.0, Tolerance(0.5, 0.0)),
        "a later, larger difference wins": (ties, np.arange(20.0) % 7, Tolerance(0.5, 0.0)),
        "NaN ranks with one-sided Inf: the first wins": (
            np.array([0.0, 1, 2, 3, 4, 5, 6, np.inf, 8, 9], f64),
            np.array([0.0, 1, 2, np.nan, 4, 5, 6, 7, 8, 9], f64),
            Tolerance(1e-4, 1e-4),
        ),
        "same-sign Inf on both sides matches": (
            np.array([1.0, np.inf, -np.inf, 4.0] * 3),
            np.array([1.0, np.inf, -np.inf, 4.5] * 3),
            Tolerance(1e-4, 1e-4),
        ),
        "opposite Infs and a one-sided Inf": (
            np.array([1.0, np.inf, 3.0, 4.0, 5.0] * 2),
            np.array([1.0, -np.inf, np.inf, 4.0, 5.0] * 2),
            Tolerance(1e-4, 1e-4),
        ),
        "float64 differences overflow": (
            np.array([1.0, 1e308, -1e308, 2.0, 0.0, 1.0]),
            np.array([1.0, -1e308, 1e308, 2.0, 1.0, 1.0]),
            Tolerance(1e-7, 1e-7),
        ),
        "float64 ratio overflows, difference does not": (
            np.array([1e-300, 1.0, 2.0, 3.0, 4.0, 5.0]),
            np.array([1e10, 1.0, 2.0, 3.0, 4.0, 5.0]),
            Tolerance(1e-7, 1e-7),
        ),
        "every reference non-finite: no counted element": (
            np.array([np.nan, np.inf, -np.inf] * 4, np.float32),
            np.array([1.0, 2.0, -np.inf] * 4, np.float32),
            Tolerance(1e-4, 1e-4),
        ),
        "int64 past 2**62 compares as Python ints": (
            big,
            big + np.arange(20, dtype=np.int64),
            Tolerance(0.0, 0.0),
        ),
        "int64 extremes": (
            np.array([np.iinfo(np.int64).min, 0, np.iinfo(np.int64).max] * 3),
            np.array([np.iinfo(np.int64).max, 0, np.iinfo(np.int64).min] * 3),
            Tolerance(0.0, 0.0),
        ),
        "2**53 and 2**53 + 1 differ": (
            np.full(9, 2**53, np.int64),
            np.full(9, 2**53, np.int64) + (np.arange(9) == 5),
            Tolerance(0.0, 0.0),
        ),
        "bool against int": (
            np.arange(10) % 2 == 0,
            np.arange(10, dtype=np.int32),
            Tolerance(0, 0),
        ),
        "all zero on both sides: cosine 1": (np.zeros(10), np.zeros(10), Tolerance(0, 0)),
        "all zero on one side: cosine 0": (np.zeros(10), np.ones(10), Tolerance(0, 0)),
        "tiny against huge scales": (
            np.array([1e-310, 3e-310, -2e-310] * 5),
            np.array([1e300, -1e299, 5e300] * 5),
            Tolerance(1e-7, 1e-7),
        ),
        "0-d": (np.array(1.5, np.float32), np.array(np.nan, np.float32), Tolerance(1e-4, 0)),
        "empty": (np.zeros((3, 0), np.float32), np.zeros((3, 0), np.float32), Tolerance(0, 0)),
        "empty with a dtype mismatch": (np.zeros(0, np.float32), np.zeros(0), Tolerance(0, 0)),
        "shape mismatch": (np.zeros(4), np.zeros((2, 2)), Tolerance(0, 0)),
        "complex": (
            np.array([1 + 2j, np.nan, 3j, np.inf] * 3, np.complex64),
            np.array([1 + 1j, 2, np.nan * 1j, np.inf] * 3, np.complex64),
            Tolerance(1e-4, 1e-4),
        ),
    }


@pytest.mark.parametrize("name", list(_named_cases()))
@pytest.mark.filterwarnings("ignore::numpy.exceptions.ComplexWarning")  # both sides cast alike
def test_named_case_matches_whole_array(name: str, block: int) -> None:
    ref, other, tol = _named_cases()[name]
    assert_same(ref, other, tol, name)


def _exact_cosine(ref: np.ndarray, other: np.ndarray) -> float:
    """The cosine of two float32 outputs over their jointly finite elements, to an ulp or
    two: products of float32 values are exact in float64, and ``math.fsum`` rounds once."""
    b, a = (x.astype(np.float64).ravel() for x in (ref, other))
    finite = np.isfinite(a) & np.isfinite(b)
    a, b = a[finite], b[finite]
    aa, bb, ab = (math.fsum((x * y).tolist()) for x, y in ((a, a), (b, b), (a, b)))
    return ab / (math.sqrt(aa) * math.sqrt(bb))


def test_default_block_size_over_several_blocks() -> None:
    """The real :data:`COMPARE_BLOCK`, with the worst element and specials in later blocks.

    Over 200k elements the whole-array cosine (one BLAS dot) is itself off by ~2e-15, so the
    blocked one is held to the exact cosine instead, more tightly: to 2 ulp."""
    rng = np.random.default_rng(0)
    rows = 3 * compare.COMPARE_BLOCK // 5 + 2  # over three blocks
    ref = rng.standard_normal((rows, 5)).astype(np.float32)
    other = ref + np.float32(1e-5) * rng.standard_normal(ref.shape).astype(np.float32)
    other[-1, 2] += 1.0
    ref[rows // 2, 0] = np.inf
    other[rows // 3, 4] = np.nan
    exact = _exact_cosine(ref, other)
    for label, (b, a) in {"C order": (ref, other), "transposed": (ref.T, other.T)}.items():
        got = assert_same(b, a, Tolerance(1e-4, 1e-4), label, cosine=False)
        assert got.cosine is not None and abs(got.cosine - exact) <= 2 * 2.0**-53, label


def test_blocks_are_views_of_contiguous_and_block_sized_copies_otherwise(block: int) -> None:
    """Never a whole copy of an output: the memory argument of the blocked comparison."""
    array = np.arange(50.0).reshape(5, 10)
    blocks = list(compare._blocks(array, block))
    assert all(np.shares_memory(b, array) for b in blocks)
    strided = array.T
    blocks = list(compare._blocks(strided, block))
    assert all(b.size <= block and not np.shares_memory(b, array) for b in blocks)
    assert np.array_equal(np.concatenate(blocks), strided.ravel())
