"""Fingerprints: values that say which element of which variable they are.

Every element of every fingerprinted variable gets its own float, different from every
other element's: consecutive bit patterns (as unsigned integers) from a fixed base, which for
float32 is around 2**20 -- far from the values weights and constants usually hold -- up to the
largest finite float, and then the same magnitudes negative: 1.8 billion float32 elements
(a 1.1-billion-parameter LLM needs both halves).  A tensor that went through any layout change
(transpose, reshape, gate reorder, a split or a copy) still decodes exactly, element by
element, to ``(variable, flat index)``; a value that was computed from variables (folded) no
longer decodes.  Two equal-valued variables never share a fingerprint, so nothing can be
confused -- this is how tf2torch locates variables, never by their real values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# dtype name → (unsigned view, first bit pattern, last usable bit pattern + 1)
_BITS: dict[str, tuple[type, int, int]] = {
    # float32 2**20 + a little, up to the largest finite float (0x7F7FFFFF)
    "float32": (np.uint32, 0x4980_1234, 0x7F80_0000),
    "float64": (np.uint64, 0x4130_0000_0001_2345, 0x7FF0_0000_0000_0000),
    # float16: 2**4 + a little, up to 65504: about 24,000 elements
    "float16": (np.uint16, 0x4C12, 0x7C00),
}

NOT_A_FINGERPRINT = -1


@dataclass
class Fingerprints:
    """Fingerprint values for a list of variables (``shapes``/``dtypes`` in order).

    Variables of one dtype share one numbering: variable ``i`` owns the consecutive
    fingerprint numbers ``starts[i] .. starts[i] + size_i``.
    """

    shapes: list[tuple[int, ...]]
    dtypes: list[str]
    starts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        counters: dict[str, int] = {}
        self.starts = []
        for shape, dtype in zip(self.shapes, self.dtypes, strict=True):
            start = counters.get(dtype, 0)
            self.starts.append(start)
            counters[dtype] = start + int(np.prod(shape, dtype=np.int64))
        self._capacity_problems = [
            dtype
            for dtype, used in counters.items()
            if dtype not in _BITS or used > 2 * (_BITS[dtype][2] - _BITS[dtype][1])
        ]

    def supported(self, index: int) -> bool:
        """Whether variable ``index`` can be fingerprinted (a float dtype with enough distinct
        values for every element of that dtype)."""
        return self.dtypes[index] not in self._capacity_problems

    def value(self, index: int) -> np.ndarray:
        """The fingerprint array of variable ``index`` (its shape and dtype)."""
        dtype = self.dtypes[index]
        view, base, end = _BITS[dtype]
        size = int(np.prod(self.shapes[index], dtype=np.int64))
        numbers = np.arange(size, dtype=np.int64) + self.starts[index]
        half = end - base
        # the first half positive, the second the same magnitudes with the sign bit set
        sign = np.int64(1) << (8 * np.dtype(view).itemsize - 1)
        bits = np.where(numbers < half, base + numbers, (base + numbers - half) | sign)
        return bits.astype(np.uint64).astype(view).view(dtype).reshape(self.shapes[index])

    def decode(self, array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(variable, flat_index)`` arrays of ``array``'s shape: which element of which
        variable each element is, ``NOT_A_FINGERPRINT`` (-1) in both where it is none.
        Decoded a chunk at a time into int32 where every index fits (an LLM's embedding
        decoded whole would take several times its own bytes)."""
        array = np.asarray(array)
        largest = max((int(np.prod(s, dtype=np.int64)) for s in self.shapes), default=0)
        fits = max(largest, len(self.shapes)) < np.iinfo(np.int32).max
        index_type = np.int32 if fits else np.int64
        variable = np.full(array.shape, NOT_A_FINGERPRINT, dtype=index_type)
        flat = np.full(array.shape, NOT_A_FINGERPRINT, dtype=index_type)
        dtype = array.dtype.name
        if dtype not in _BITS or dtype in self._capacity_problems:
            return variable, flat
        view, base, end = _BITS[dtype]
        half = end - base
        sign_bit = 8 * np.dtype(view).itemsize - 1
        mine = [i for i, d in enumerate(self.dtypes) if d == dtype]
        if not mine:
            return variable, flat
        starts = np.array([self.starts[i] for i in mine], dtype=np.int64)
        ends = starts + np.array([int(np.prod(self.shapes[i])) for i in mine], dtype=np.int64)
        owners_of = np.array(mine, dtype=np.int64)
        source = array.reshape(-1)
        variable_out, flat_out = variable.reshape(-1), flat.reshape(-1)
        for begin in range(0, source.size, DECODE_CHUNK):
            stop = begin + DECODE_CHUNK
            bits = source[begin:stop].view(view).astype(np.uint64)
            negative = (bits >> np.uint64(sign_bit)).astype(bool)
            magnitude = (bits & np.uint64((1 << sign_bit) - 1)).astype(np.int64)
            del bits
            numbers = np.where(magnitude < end, magnitude - base, -1)  # -1: not one
            numbers[negative & (numbers >= 0)] += half
            slot = np.searchsorted(starts, numbers, side="right") - 1
            valid = (numbers >= 0) & (slot >= 0)
            slot = np.clip(slot, 0, len(mine) - 1)
            valid &= numbers < ends[slot]
            variable_out[begin:stop][valid] = owners_of[slot][valid]
            flat_out[begin:stop][valid] = (numbers - starts[slot])[valid]
        return _compact(variable), _compact(flat)


DECODE_CHUNK = 2**22
"""Elements decoded at a time by :meth:`Fingerprints.decode`."""


def _compact(indices: np.ndarray) -> np.ndarray:
    """``indices`` in less memory, same values: one read-only broadcast element where they
    are all equal, else int32 where they fit (an LLM's decoded weights would otherwise take
    four times the weights' own bytes)."""
    if indices.size and indices.min() == indices.max():
        return np.broadcast_to(np.int64(indices.flat[0]), indices.shape)
    if indices.dtype != np.int32 and indices.size and indices.max() < np.iinfo(np.int32).max:
        return indices.astype(np.int32)
    return indices


def fingerprints_for(values: Sequence[np.ndarray]) -> Fingerprints:
    """Fingerprints for variables with these values (only shapes and dtypes are used)."""
    arrays = [np.asarray(v) for v in values]
    return Fingerprints([tuple(a.shape) for a in arrays], [a.dtype.name for a in arrays])
