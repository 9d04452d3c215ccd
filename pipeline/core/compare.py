"""Output comparison between frameworks: typed, truth-testable, JSON-ready results.

For one output of one pair, ``b`` is the reference (the pair's first framework: ``tf`` for
``tf-ort`` and ``tf-torch``, ``ort`` for ``ort-torch``) and ``a`` the other:

- ``max_abs`` = max |a - b|
- ``max_rel`` = max |a - b| / max(|b|, tiny), with ``tiny`` the smallest positive normal
  number of the reference's floating dtype (float32 and bfloat16: 1.18e-38, float64:
  2.2e-308; 1 for integer and boolean references), so a zero reference gives a huge but
  finite ratio instead of a division by zero.  Where a ratio or a difference of finite
  values exceeds the float64 range (float64 outputs only) it counts as the largest float64,
  1.8e308, and ``note`` says so.
- ``max_abs`` and ``max_rel`` are taken over the elements whose reference is finite and
  whose difference is not NaN; the others are named in ``note`` (see NaN and ±Inf below).
  A finite reference facing ±Inf gives an infinite maximum, written as ``null``.
- an element **mismatches** unless |a - b| ≤ atol + rtol·|b|; ``mismatch_fraction`` is the
  share of mismatching elements
- ``cosine`` = a·b / (‖a‖‖b‖) over the flattened outputs in float64, leaving out elements
  that are not finite on either side; 1.0 when both are all zero, 0.0 when exactly one is
- NaN anywhere (either side) fails the comparison and is named in ``note``: a model that
  produces NaN is not a passing migration.  ±Inf must match exactly (same sign, same place).
- a shape difference fails with null metrics; a dtype difference fails too, with metrics
  computed after casting both to float64 (integers to exact integers when both sides are
  integer or boolean).
- Floating outputs, including the ml_dtypes ones (bfloat16, float8 ...), are compared in
  float64.  Integer and boolean outputs compare exactly, as integers (int64 values above
  2**53 are not rounded); their metrics are reported as floats, ``worst_ref`` and
  ``worst_other`` as integers.

Numbers in the JSON are never NaN or Inf: undefined metrics are ``null`` and ``note`` says
why.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pipeline.core.errors import BadInputError

DEFAULT_PAIRS: tuple[tuple[str, str], ...] = (("tf", "ort"), ("tf", "torch"), ("ort", "torch"))
_SAME_ROUNDING = {"golden": "tf"}
"""Frameworks whose outputs another framework computed (golden outputs are TF's)."""


@dataclass(frozen=True)
class Tolerance:
    """Absolute and relative tolerance: ``|a - b| ≤ atol + rtol·|b|``."""

    atol: float
    rtol: float


# Float32 noise on deep networks reaches ~1e-5 absolute on O(1) outputs; a 1e-3 relative
# weight change moves O(1) outputs by ~1e-3.  1e-4 sits between the two.
DTYPE_DEFAULTS: dict[str, Tolerance] = {
    "float16": Tolerance(1e-2, 1e-2),
    "bfloat16": Tolerance(1e-2, 1e-2),
    "float32": Tolerance(1e-4, 1e-4),
    "float64": Tolerance(1e-7, 1e-7),
}
EXACT = Tolerance(0.0, 0.0)


NOISE_FACTOR = 2.0
"""``k`` of the float32 noise model: a pair may differ by ``k`` times the two frameworks'
noise floors (see :class:`Noise`)."""
NOISE_EPS_FACTOR = 16.0
"""``f`` of the float32 noise model: the floor below which no tolerance goes, in units of
``eps · scale`` (``eps`` the output dtype's machine epsilon, ``scale`` max |output|)."""
UNSTABLE_NOISE = 1e-2
"""A noise floor above this fraction of the output's scale means float32 cannot compute the
model reproducibly (rounding changes the answer itself), and a tolerance wide enough for that
noise would pass anything: such a comparison fails instead of passing on noise.  On the
corpus the largest stable floor is 1.1e-3 of scale (EfficientNetB6); a badly calibrated
EfficientNetB7 had 0.52, with a tolerance of 1.7e5 on logits of 5e4."""


def _round_up(value: float) -> float:
    """``value`` rounded up to two significant digits (a tolerance people can read)."""
    if not value > 0 or not math.isfinite(value):
        return max(value, 0.0)
    exponent = math.floor(math.log10(value)) - 1
    return float(f"{math.ceil(value / 10.0**exponent)}e{exponent}")


@dataclass(frozen=True)
class Noise:
    """The float32 noise floor of one output, measured on this model
    (:func:`pipeline.verify.noise.measure_noise`).

    ``noise`` = max |out_float32 - out_float64| of one framework's float32 run against the
    float64 run of the same graph, ``scale`` = max |out_float64|, ``dtype`` the output's.
    A pair's two sides each round on their own, so it may differ by
    ``k·(noise + noise_other) + f·eps·scale`` (:meth:`tolerance`), where ``noise_other`` is
    the other framework's own floor where it was measured (TF's float32 gradients against a
    float64 twin of the Keras model, see :mod:`pipeline.export.worker.reference`).  Where it
    was not (every output; a gradient without a TF twin), the other side is taken to be as
    noisy as this one: ``noise_other = noise`` (TF, ONNX Runtime and torch round the same
    model's sums in float32; on ResNet50 their output floors are within 1.3x of each other).
    """

    noise: float
    scale: float
    dtype: str = "float32"
    noise_other: float | None = None
    """The other framework's own measured floor, or None (then taken to be :attr:`noise`)."""

    def tolerance(self) -> Tolerance:
        """The pair tolerance: ``atol = k·(noise + noise_other) + f·eps·scale`` (rounded up
        to two digits; ``noise_other`` = ``noise`` when unmeasured), ``rtol = 0``, with ``k``
        = :data:`NOISE_FACTOR` and ``f`` = :data:`NOISE_EPS_FACTOR`."""
        info = _finfo(_dtype(self.dtype))
        eps = float(info.eps) if info is not None else float(np.finfo(np.float32).eps)
        other = self.noise if self.noise_other is None else self.noise_other
        atol = NOISE_FACTOR * (self.noise + other) + NOISE_EPS_FACTOR * eps * self.scale
        return Tolerance(_round_up(atol), 0.0)

    def unstable(self) -> str | None:
        """Why float32 cannot compute this output reproducibly (a floor above
        :data:`UNSTABLE_NOISE` of the scale, on either side), or None."""
        worst = max(self.noise, self.noise_other or 0.0)
        if not self.scale > 0 or worst <= UNSTABLE_NOISE * self.scale:
            return None
        return (
            f"float32 noise {worst:.2g} is {100 * worst / self.scale:.2g}% of the output's scale "
            f"{self.scale:.2g}: float32 cannot compute this model reproducibly, so no tolerance "
            "can judge it (check the model's numerics, or judge it with --atol/--rtol)"
        )

    def to_json(self) -> dict[str, Any]:
        """``noise``, ``scale``, ``dtype`` (and ``noise_other`` when measured) and the
        resulting ``atol``, for the report."""
        return {
            "noise": self.noise,
            "scale": self.scale,
            "dtype": self.dtype,
            **({"noise_other": self.noise_other} if self.noise_other is not None else {}),
            "atol": self.tolerance().atol,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Noise:
        """The inverse of :meth:`to_json` (``atol`` is recomputed, not read)."""
        other = data.get("noise_other")
        return cls(
            float(data["noise"]),
            float(data["scale"]),
            str(data.get("dtype", "float32")),
            float(other) if other is not None else None,
        )


def _dtype(name: str) -> np.dtype[Any]:
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes  # registers bfloat16 & co. with numpy

        return np.dtype(getattr(ml_dtypes, name))


@dataclass(frozen=True)
class Tolerances:
    """Tolerances per output: per-output overrides, else global overrides, else the
    measured float32 noise floor, else dtype defaults.

    Defaults (:data:`DTYPE_DEFAULTS`): float16/bfloat16 atol=rtol=1e-2, float32 1e-4,
    float64 1e-7; integers and booleans exact (0/0).  ``atol``/``rtol`` replace the default
    of every floating output (and the noise floor: a user's tolerance wins); ``per_output``
    replaces both for one output name.  ``noise`` holds the measured floor of floating
    outputs other than float64; such an output's tolerance is :meth:`Noise.tolerance`.
    ``noise_unmeasured`` says why there is no floor when it could not be measured.
    """

    atol: float | None = None
    rtol: float | None = None
    per_output: Mapping[str, Tolerance] = field(default_factory=dict)
    noise: Mapping[str, Noise] = field(default_factory=dict)
    noise_unmeasured: str | None = None
    own_noise: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Framework → output → that framework's own float32 floor, where it was measured
    against its own float64 run of the same graph, trusted, and above :attr:`noise`'s (the
    graph's, from onnx2torch's import): ``tf`` from TF's float64 twin, ``ort`` from ONNX
    Runtime running the graph in float64, ``torch`` from a float64 copy of the compared
    module.  A framework absent here rounds as :attr:`noise` says."""
    own_unmeasured: Mapping[str, str] = field(default_factory=dict)
    """Framework → why its own floor could not be measured (e.g. no float64 kernel)."""

    def __post_init__(self) -> None:
        given = [("atol", self.atol), ("rtol", self.rtol)]
        for name, tol in self.per_output.items():
            given += [
                (f"atol of output {name!r}", tol.atol),
                (f"rtol of output {name!r}", tol.rtol),
            ]
        for what, value in given:
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise BadInputError(
                    f"bad tolerance: {what} is {value:g}; a tolerance is a finite number >= 0"
                )

    def noise_for(self, name: str, dtype: np.dtype[Any] | str) -> Noise | None:
        """The noise floor that sets output ``name``'s tolerance, or None when a user
        tolerance, a dtype default or exact comparison applies."""
        if name in self.per_output or self.atol is not None or self.rtol is not None:
            return None
        kind = np.dtype(dtype)
        if _finfo(kind) is None or kind == np.float64:
            return None
        return self.noise.get(name)

    def pair_noise(
        self, name: str, dtype: np.dtype[Any] | str, ref: str, other: str
    ) -> Noise | None:
        """The noise floor of output ``name`` for the pair ``ref``-``other``: each side's
        own floor (:attr:`own_noise`; torch's where unmeasured), ``other``'s as
        :attr:`Noise.noise` and ``ref``'s as :attr:`Noise.noise_other`; None as for
        :meth:`noise_for`.  ``golden`` outputs are TF's."""
        noise = self.noise_for(name, dtype)
        if noise is None:
            return None
        sides = []
        for framework in (ref, other):
            own = self.own_noise.get(_SAME_ROUNDING.get(framework, framework), {}).get(name)
            sides.append(max(noise.noise, own) if own is not None else noise.noise)
        ref_noise, other_noise = sides
        return replace(
            noise,
            noise=other_noise,
            noise_other=ref_noise if ref_noise != other_noise else None,
        )

    def for_output(self, name: str, dtype: np.dtype[Any] | str) -> Tolerance:
        """The tolerance that applies to output ``name`` of dtype ``dtype``."""
        if name in self.per_output:
            return self.per_output[name]
        noise = self.noise_for(name, dtype)
        if noise is not None:
            return noise.tolerance()
        dtype_name = np.dtype(dtype).name
        default = DTYPE_DEFAULTS.get(dtype_name)
        if default is None:
            return EXACT
        return Tolerance(
            self.atol if self.atol is not None else default.atol,
            self.rtol if self.rtol is not None else default.rtol,
        )

    def to_json(self) -> dict[str, Any]:
        """The defaults, overrides and noise floors in force, for the report."""
        return {
            "defaults": {k: {"atol": v.atol, "rtol": v.rtol} for k, v in DTYPE_DEFAULTS.items()},
            "integer_and_bool": "exact",
            "atol": self.atol,
            "rtol": self.rtol,
            "per_output": {k: {"atol": v.atol, "rtol": v.rtol} for k, v in self.per_output.items()},
            "noise_model": {
                "rule": "|a - b| <= k*(noise + noise_other) + f*eps*scale",
                "noise_other": "the other side's own floor where measured (TF's float64 "
                "twin, ONNX Runtime's float64 run: noise_own), else noise",
                "k": NOISE_FACTOR,
                "f": NOISE_EPS_FACTOR,
            },
            "noise_floor": {k: v.to_json() for k, v in self.noise.items()},
            "noise_unmeasured": self.noise_unmeasured,
            "noise_own": {k: dict(v) for k, v in self.own_noise.items()},
            "noise_own_unmeasured": dict(self.own_unmeasured),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Tolerances:
        """Tolerances as :meth:`to_json` wrote them (a report without noise floors, from
        before they were measured, gives none)."""
        return cls(
            data.get("atol"),
            data.get("rtol"),
            {
                name: Tolerance(float(t["atol"]), float(t["rtol"]))
                for name, t in (data.get("per_output") or {}).items()
            },
            {name: Noise.from_json(n) for name, n in (data.get("noise_floor") or {}).items()},
            data.get("noise_unmeasured"),
            {
                framework: {name: float(v) for name, v in floors.items()}
                for framework, floors in (data.get("noise_own") or {}).items()
            },
            {k: str(v) for k, v in (data.get("noise_own_unmeasured") or {}).items()},
        )


def _finite_or_none(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    if isinstance(value, int):
        return value  # exact integer output values stay exact
    return float(value)


_FLOAT64_MAX = float(np.finfo(np.float64).max)


def _finfo(dtype: np.dtype[Any]) -> Any:
    """``finfo`` of a floating dtype, numpy's or ml_dtypes' (bfloat16, float8 ...), else None."""
    if dtype.kind == "f":
        return np.finfo(dtype)
    if dtype.kind == "V":
        try:
            import ml_dtypes
        except ImportError:
            return None
        try:
            return ml_dtypes.finfo(dtype)
        except ValueError:
            return None
    return None


def _is_exact(dtype: np.dtype[Any]) -> bool:
    """Integer or boolean, numpy's or ml_dtypes' (int4 ...): compared as exact integers."""
    if dtype.kind in "biu":
        return True
    if dtype.kind == "V":
        try:
            import ml_dtypes
        except ImportError:
            return False
        try:
            ml_dtypes.iinfo(dtype)
        except ValueError:
            return False
        return True
    return False


COMPARE_BLOCK = 2**16
"""Elements :func:`compare_pair` works on at a time.  It walks the flattened outputs in
blocks of this many, so its working memory (some 20 float64 temporaries of one block,
about 10 MB) does not grow with the output: compared whole, a 65M-element embedding
gradient held some 20 float64 copies of itself, over 5 GB.  Blocks of 2**14 to 2**16
elements stay in cache and ran a 10M-element pair fastest, 7x faster than compared whole."""


def _blocks(array: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """``array`` flattened in C order, as consecutive 1-D blocks of ``size`` elements: views
    of a C-contiguous array, block-sized copies of any other (never a copy of the whole)."""
    if array.flags.c_contiguous:
        flat = array.reshape(-1)
        for start in range(0, array.size, size):
            yield flat[start : start + size]
    else:
        for start in range(0, array.size, size):
            yield array.flat[start : start + size]


def _block_pairs(
    ref: np.ndarray, other: np.ndarray
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(offset, ref block, other block)`` over two outputs of the same shape, where
    ``offset`` is the flat index of the blocks' first element."""
    size = COMPARE_BLOCK  # read per call, so tests can shrink it
    for number, (b, a) in enumerate(zip(_blocks(ref, size), _blocks(other, size), strict=True)):
        yield number * size, b, a


def _as_float64(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float64)


def _can_be_nonfinite(dtype: np.dtype[Any]) -> bool:
    """Whether an output of ``dtype`` can hold NaN or ±Inf (floating or complex)."""
    return dtype.kind == "c" or _finfo(dtype) is not None


def _nonfinite_counts(block: np.ndarray) -> tuple[int, int]:
    """NaN and ±Inf elements of one block of a floating or complex output."""
    # numpy counts its own float and complex dtypes natively; ml_dtypes' need a cast.
    block = block if block.dtype.kind in "fc" else _as_float64(block)
    return int(np.isnan(block).sum()), int(np.isinf(block).sum())


def _exact_ints(block: np.ndarray, in_int64: bool) -> np.ndarray:
    """One block of an integer/bool output as int64, or as Python ints (object) when
    ``a - b`` could overflow int64 somewhere in the output (:func:`_scan`)."""
    block = block.astype(np.int64) if block.dtype.kind in "bV" else block
    return block.astype(np.int64 if in_int64 else object)


def _fold_max(current: float | None, values: np.ndarray) -> float | None:
    """The larger of ``current`` (None: nothing yet) and the largest of ``values``."""
    if values.size == 0:
        return current
    block_max = float(values.max())
    return block_max if current is None else max(current, block_max)


@dataclass
class _Scan:
    """What :func:`compare_pair` must know about the whole outputs before comparing any
    block: the non-finite counts for the notes, each side's scale for the cosine, and
    whether integer outputs can be subtracted in int64."""

    nans: list[int] = field(default_factory=lambda: [0, 0])
    """NaN elements of (ref, other)."""
    infs: list[int] = field(default_factory=lambda: [0, 0])
    """±Inf elements of (ref, other)."""
    scales: list[float] = field(default_factory=lambda: [0.0, 0.0])
    """max |x| of (ref, other) over the elements finite on both sides."""
    in_int64: bool = True
    """Integer outputs: every value within ±2**62, so ``a - b`` fits in int64."""


def _scan(ref: np.ndarray, other: np.ndarray, exact: bool) -> _Scan:
    """The first pass over both outputs (see :class:`_Scan`)."""
    scan = _Scan()
    counting = [_can_be_nonfinite(ref.dtype), _can_be_nonfinite(other.dtype)]
    lo: float = math.inf
    hi: float = -math.inf
    for _, b_raw, a_raw in _block_pairs(ref, other):
        for side, raw in enumerate((b_raw, a_raw)):
            if counting[side]:
                nans, infs = _nonfinite_counts(raw)
                scan.nans[side] += nans
                scan.infs[side] += infs
        b, a = _as_float64(b_raw), _as_float64(a_raw)
        finite = np.isfinite(a) & np.isfinite(b)
        for side, x in enumerate((b, a)):
            scan.scales[side] = max(scan.scales[side], float(np.abs(x[finite]).max(initial=0.0)))
        if exact:
            for raw in (b_raw, a_raw):
                ints = raw.astype(np.int64) if raw.dtype.kind in "bV" else raw
                lo, hi = min(lo, int(ints.min())), max(hi, int(ints.max()))
    scan.in_int64 = lo > -(2**62) and hi < 2**62
    return scan


@dataclass
class _Totals:
    """The reductions of :func:`compare_pair` over all elements, merged block by block in
    flat order; ``worst`` keeps :func:`numpy.argmax`'s rule (the first largest wins)."""

    mismatched: int = 0
    worst: int = 0
    """Flat index of the first largest difference (NaN ranked as +Inf)."""
    worst_key: Any = None
    """The difference ranked at :attr:`worst`; None before the first block."""
    worst_ref: Any = None
    worst_other: Any = None
    max_abs: float | None = None
    max_rel: float | None = None
    overflow_abs: bool = False
    overflow_rel: bool = False
    cosine_sums: tuple[list[float], list[float], list[float]] = field(
        default_factory=lambda: ([], [], [])
    )
    """Per block, for the cosine: sum of squares of ref, of other, and their dot product
    (:func:`_cosine_block`)."""

    def rank(self, offset: int, key: np.ndarray, b: np.ndarray, a: np.ndarray) -> None:
        """Take the block's first largest ``key`` as the worst if it beats the one so far."""
        i = int(np.argmax(key))
        if self.worst_key is None or key[i] > self.worst_key:
            self.worst, self.worst_key = offset + i, key[i]
            self.worst_ref, self.worst_other = b[i], a[i]


def _exact_block(
    totals: _Totals,
    offset: int,
    b_raw: np.ndarray,
    a_raw: np.ndarray,
    allowed: np.ndarray,
    in_int64: bool,
) -> None:
    """Compare one block of two integer/bool outputs, exactly."""
    # Integers as integers: a float64 cast would make 2**53 and 2**53 + 1 equal.
    bi, ai = _exact_ints(b_raw, in_int64), _exact_ints(a_raw, in_int64)
    diff = np.abs(ai - bi)
    totals.mismatched += int(np.count_nonzero(np.asarray(diff > allowed, dtype=bool)))
    totals.rank(offset, diff, bi, ai)
    rel = np.asarray(diff / np.maximum(np.abs(bi), 1), dtype=np.float64)
    totals.max_rel = _fold_max(totals.max_rel, rel)


def _float_block(
    totals: _Totals,
    offset: int,
    b: np.ndarray,
    a: np.ndarray,
    finite: np.ndarray,
    allowed: np.ndarray,
    tiny: float,
) -> None:
    """Compare one block of two outputs cast to float64."""
    same_inf = np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b))
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(same_inf, 0.0, np.abs(a - b))
    nan = np.isnan(diff)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        rel = diff / np.maximum(np.abs(b), tiny)
        # An Inf on one side only gives an infinite difference: a mismatch, whatever rtol·|b|.
        mismatched = np.where(same_inf, False, nan | ~np.isfinite(diff) | (diff > allowed))
    totals.mismatched += int(np.count_nonzero(mismatched))
    totals.rank(offset, np.where(nan, np.inf, diff), b, a)
    # Finite values whose difference or ratio overflows float64 count as its maximum.
    overflow_abs = finite & np.isinf(diff)
    overflow_rel = finite & np.isinf(rel)
    totals.overflow_abs |= bool(overflow_abs.any())
    totals.overflow_rel |= bool(overflow_rel.any())
    diff = np.where(overflow_abs, _FLOAT64_MAX, diff)
    rel = np.where(overflow_rel, _FLOAT64_MAX, rel)
    # Non-finite references (and NaN differences) are named in the note, and fail unless
    # matched exactly; leaving them out keeps them from hiding every other element.
    counted = np.isfinite(b) & ~nan
    totals.max_abs = _fold_max(totals.max_abs, diff[counted])
    totals.max_rel = _fold_max(totals.max_rel, rel[counted])


def _cosine_block(totals: _Totals, b: np.ndarray, a: np.ndarray, exponents: list[int]) -> None:
    """Add one block's elements that are finite on both sides to the cosine's sums."""
    # Cosine ignores scale: bring each side to max |x| in [0.5, 1) by a power of two (exact),
    # so the sums neither overflow for huge values nor underflow for tiny ones.
    b, a = (np.ldexp(x, -exponent) for x, exponent in zip((b, a), exponents, strict=True))
    # numpy's pairwise summation, not np.dot: BLAS threads that spin between a few hundred
    # block-sized calls slowed a loaded 2-core machine ~8x, and pairwise sums are the more
    # accurate.
    for sums, products in zip(totals.cosine_sums, (b * b, a * a, a * b), strict=True):
        sums.append(float(np.add.reduce(products)))


def _cosine(sums: tuple[list[float], list[float], list[float]]) -> float | None:
    """a·b / (‖a‖‖b‖) from the per-block sums of :func:`_cosine_block`."""
    nb, na, dot = math.sqrt(math.fsum(sums[0])), math.sqrt(math.fsum(sums[1])), math.fsum(sums[2])
    if not (math.isfinite(na) and math.isfinite(nb)):
        return None
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return dot / (na * nb)


@dataclass
class OutputComparison:
    """One output of one framework pair.  ``bool(c)`` is ``c.passed``."""

    pair: str
    output: str
    max_abs: float | None
    max_rel: float | None
    mismatch_fraction: float | None
    cosine: float | None
    atol: float
    rtol: float
    passed: bool
    note: str | None = None
    worst_index: tuple[int, ...] | None = None
    worst_ref: float | None = None
    worst_other: float | None = None
    noise_floor: float | None = None
    """The measured float32 noise floor that set ``atol`` (:class:`Noise`: the pair's second
    framework's); None when a user tolerance or a dtype default applied."""
    noise_floor_other: float | None = None
    """The pair's first framework's own floor, where it differs from :attr:`noise_floor`."""

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        text = f"{verdict} {self.pair} {self.output}"
        if self.max_abs is not None:
            text += (
                f": max_abs={self.max_abs:.3g} max_rel={self.max_rel:.3g} "
                f"mismatch={100 * (self.mismatch_fraction or 0):.3g}% "
                f"(atol={self.atol:g} rtol={self.rtol:g}"
                + (
                    f" from noise floor {self.noise_floor:.2g}"
                    if self.noise_floor is not None
                    else ""
                )
                + f"; atol needed with rtol=0: {self.max_abs:.3g})"
            )
        if self.worst_index is not None:
            text += (
                f"; worst at {list(self.worst_index)}: {self.worst_ref!r} vs {self.worst_other!r}"
            )
        if self.note:
            text += f" [{self.note}]"
        return text

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (no NaN/Inf); ``passed`` is written as ``pass``."""
        return {
            "pair": self.pair,
            "output": self.output,
            "max_abs": _finite_or_none(self.max_abs),
            "max_rel": _finite_or_none(self.max_rel),
            "mismatch_fraction": self.mismatch_fraction,
            "cosine": _finite_or_none(self.cosine),
            "atol": self.atol,
            "rtol": self.rtol,
            "pass": self.passed,
            "note": self.note,
            "worst_index": list(self.worst_index) if self.worst_index is not None else None,
            "worst_ref": _finite_or_none(self.worst_ref),
            "worst_other": _finite_or_none(self.worst_other),
            "noise_floor": self.noise_floor,
            "noise_floor_other": self.noise_floor_other,
        }


def compare_pair(
    pair: str, output: str, ref: np.ndarray, other: np.ndarray, tol: Tolerance
) -> OutputComparison:
    """Compare one output of one pair (``ref`` is the pair's first framework).

    Works block by block (:data:`COMPARE_BLOCK`): its memory beyond the two outputs does
    not grow with them."""
    ref_name, _, other_name = pair.partition("-")
    ref, other = np.asarray(ref), np.asarray(other)
    if ref.shape != other.shape:
        return _unmeasured(
            pair,
            output,
            tol,
            f"shape mismatch: {ref_name} {list(ref.shape)} vs {other_name} {list(other.shape)}",
        )
    failing_notes = []
    if ref.dtype != other.dtype:
        failing_notes.append(
            f"dtype mismatch: {ref_name} {ref.dtype.name} vs {other_name} {other.dtype.name}"
        )
    if ref.size == 0:
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
            note="; ".join(failing_notes) or "empty output",
        )
    exact = _is_exact(ref.dtype) and _is_exact(other.dtype)
    scan = _scan(ref, other, exact)
    sides = (ref_name, other_name)
    failing_notes += [
        f"NaN in {who} output ({n} elements)" for who, n in zip(sides, scan.nans, strict=True) if n
    ]
    notes = failing_notes + [
        f"Inf in {who} output ({n} elements)" for who, n in zip(sides, scan.infs, strict=True) if n
    ]

    info = _finfo(ref.dtype)
    tiny = float(info.tiny) if info is not None else 1.0
    exponents = [int(np.frexp(scale)[1]) for scale in scan.scales]
    totals = _Totals()
    for offset, b_raw, a_raw in _block_pairs(ref, other):
        b, a = _as_float64(b_raw), _as_float64(a_raw)
        finite = np.isfinite(a) & np.isfinite(b)
        with np.errstate(invalid="ignore", over="ignore"):
            allowed = tol.atol + tol.rtol * np.abs(b)
        if exact:
            _exact_block(totals, offset, b_raw, a_raw, allowed, scan.in_int64)
        else:
            _float_block(totals, offset, b, a, finite, allowed, tiny)
        _cosine_block(totals, b[finite], a[finite], exponents)

    worst_ref: float | None
    worst_other: float | None
    if exact:
        max_abs: float | None = float(totals.worst_key)
        max_rel = totals.max_rel
        worst_ref, worst_other = int(totals.worst_ref), int(totals.worst_other)
    else:
        max_abs, max_rel = totals.max_abs, totals.max_rel
        for metric, value, overflow in (
            ("max_abs", max_abs, totals.overflow_abs),
            ("max_rel", max_rel, totals.overflow_rel),
        ):
            if overflow and value == _FLOAT64_MAX:
                notes.append(f"{metric} beyond the float64 range, shown as {_FLOAT64_MAX:.3g}")
        worst_ref, worst_other = float(totals.worst_ref), float(totals.worst_other)
    return OutputComparison(
        pair=pair,
        output=output,
        max_abs=max_abs,
        max_rel=max_rel,
        mismatch_fraction=totals.mismatched / ref.size,
        cosine=_cosine(totals.cosine_sums),
        atol=tol.atol,
        rtol=tol.rtol,
        passed=not failing_notes and not totals.mismatched,
        note="; ".join(notes) or None,
        worst_index=tuple(int(i) for i in np.unravel_index(totals.worst, ref.shape)),
        worst_ref=worst_ref,
        worst_other=worst_other,
    )


def _unmeasured(pair: str, output: str, tol: Tolerance, note: str) -> OutputComparison:
    """A failing comparison whose metrics cannot be computed; ``note`` says why."""
    return OutputComparison(
        pair, output, None, None, None, None, tol.atol, tol.rtol, False, note=note
    )


def missing_output(pair: str, output: str, tol: Tolerance) -> OutputComparison:
    """The failing comparison of an output the pair's second framework did not produce."""
    return _unmeasured(pair, output, tol, f"output missing from {pair.partition('-')[2]}")


def compare_all(
    outputs: Mapping[str, Mapping[str, np.ndarray]],
    tolerances: Tolerances,
    pairs: Sequence[tuple[str, str]] = DEFAULT_PAIRS,
) -> list[OutputComparison]:
    """Compare every output for every pair whose two frameworks are both in ``outputs``.

    ``outputs`` maps framework name → output name → array.  Output names and tolerances
    follow the pair's reference framework; an output missing on the other side fails.  A
    comparison whose tolerance came from a measured noise floor records it (``noise_floor``),
    and fails when that floor says float32 cannot compute the output (:meth:`Noise.unstable`).
    """
    results = []
    for ref_name, other_name in pairs:
        if ref_name not in outputs or other_name not in outputs:
            continue
        pair = f"{ref_name}-{other_name}"
        for output, ref in outputs[ref_name].items():
            dtype = np.asarray(ref).dtype
            noise = tolerances.pair_noise(output, dtype, ref_name, other_name)
            tol = noise.tolerance() if noise is not None else tolerances.for_output(output, dtype)
            if output not in outputs[other_name]:
                result = missing_output(pair, output, tol)
            else:
                result = compare_pair(pair, output, ref, outputs[other_name][output], tol)
            if noise is not None:
                result.noise_floor = noise.noise
                result.noise_floor_other = noise.noise_other
            unstable = noise.unstable() if noise is not None else None
            if unstable and result.passed:
                result.passed = False
                result.note = "; ".join(n for n in (result.note, unstable) if n)
            results.append(result)
    return results
