"""Giving freed memory back to the operating system between stages.

A stage frees its copies of a model's weights when it ends, but glibc's allocator keeps
freed small-block memory in its arenas, where the next stage's peak counts on top of it (a
0.35 GB model left about 1 GB behind after import, measured).  :func:`release` collects
Python's garbage and asks glibc to return what it holds free (``malloc_trim``), so each
stage starts from what is really live."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

Key = TypeVar("Key", bound=Hashable)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


RELEASE_MIN_BYTES = 64 * 2**20
"""Weights below which :func:`release` does nothing: a full garbage collection costs a few
tenths of a second in a process holding TensorFlow or torch, which a small model's
conversion would pay at every stage for no measurable gain."""


MMAP_THRESHOLD = 2**20
"""Blocks from which glibc allocates with ``mmap`` once :func:`release` has run for a large
model.  glibc raises its threshold as large blocks are freed, up to 32 MB; an LLM's tensors
(16 MB attention kernels, 2 MB key/value ones) then come from the heap, and the float64
copies of the floors stay resident after they are freed, stacking on the next one."""
_M_MMAP_THRESHOLD = -3


@functools.cache
def _fixed_mmap_threshold() -> None:
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc: nothing to set
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def release(weight_bytes: int) -> None:
    """For a model with ``weight_bytes`` of weights (at least :data:`RELEASE_MIN_BYTES`),
    collect garbage and return the allocator's free memory to the system (where the C
    library can: glibc; elsewhere only the collection); the first call also makes glibc map
    every block of :data:`MMAP_THRESHOLD` or more on its own, so a freed tensor goes back to
    the system at once."""
    if weight_bytes < RELEASE_MIN_BYTES:
        return
    _fixed_mmap_threshold()
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def groups_within(sizes: Sequence[tuple[Key, int]], fraction: float) -> list[list[Key]]:
    """Keys grouped in order so each group's sizes add up to at most ``fraction`` of all of
    them (a larger one is a group of its own): gradients taken a group at a time hold that
    fraction of the model, not all of it."""
    budget = max(1, int(fraction * sum(size for _, size in sizes)))
    groups: list[list[Key]] = []
    used = 0
    for key, size in sizes:
        if not groups or used + size > budget:
            groups.append([])
            used = 0
        groups[-1].append(key)
        used += size
    return groups
