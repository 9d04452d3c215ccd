"""Model inputs for the comparison: drawn from the signature with a seed, or read from ``.npz``.

NumPy only: the TF worker and the orchestrator both import this module.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pipeline.core.errors import BadInputError
from pipeline.core.signature import TensorSpec

_SPEC = re.compile(r"^(?P<name>[^=]+)=(?P<dtype>\w+)\[(?P<dims>[^\]]*)\]$")


def parse_input_ranges(items: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Parse ``--input-range name=lo:hi`` values (half-open, like ``numpy`` ``integers``)."""
    ranges: dict[str, tuple[int, int]] = {}
    for item in items:
        name, eq, bounds = item.partition("=")
        lo_text, colon, hi_text = bounds.partition(":")
        try:
            if not (eq and colon and name):
                raise ValueError
            lo, hi = int(lo_text), int(hi_text)
        except ValueError:
            raise BadInputError(
                f"bad --input-range {item!r}: expected NAME=LO:HI with integers, e.g. tokens=0:50"
            ) from None
        if hi <= lo:
            raise BadInputError(f"bad --input-range {item!r}: HI must be greater than LO")
        ranges[name] = (lo, hi)
    return ranges


def parse_input_specs(items: Sequence[str]) -> list[TensorSpec]:
    """Parse ``--input-spec name=dtype[d0,d1,...]`` values; ``None`` or ``?`` is a dynamic dim."""
    specs = []
    for item in items:
        match = _SPEC.match(item.strip())
        if not match:
            raise BadInputError(
                f"bad --input-spec {item!r}: expected NAME=DTYPE[D0,D1,...], e.g. x=float32[None,28,28,1]"
            )
        try:
            dtype = np.dtype(match["dtype"]).name
        except TypeError:
            raise BadInputError(
                f"bad --input-spec {item!r}: unknown dtype {match['dtype']!r}"
            ) from None
        dims: list[int | None] = []
        for dim in filter(None, (d.strip() for d in match["dims"].split(","))):
            if dim in ("None", "?", "-1"):
                dims.append(None)
            elif dim.isdigit():
                dims.append(int(dim))
            else:
                raise BadInputError(
                    f"bad --input-spec {item!r}: dimension {dim!r} is not an integer"
                )
        specs.append(TensorSpec(match["name"], dtype, tuple(dims)))
    return specs


def check_range_names(ranges: Mapping[str, object], specs: Sequence[TensorSpec]) -> None:
    """Raise :class:`BadInputError` if a range names an input the model does not have."""
    names = [s.name for s in specs]
    unknown = sorted(set(ranges) - set(names))
    if unknown:
        raise BadInputError(
            f"unknown --input-range name(s) {', '.join(unknown)}; the model's inputs are: "
            f"{', '.join(names)}"
        )


def draw_inputs(
    specs: Sequence[TensorSpec],
    *,
    batch: int,
    seed: int,
    ranges: Mapping[str, tuple[int, int]],
) -> dict[str, np.ndarray]:
    """Draw one batch of inputs from the signature with a fixed seed.

    Floating inputs are standard normal; integer inputs are uniform over their half-open
    ``ranges`` entry, which is required (an embedding index has no natural default range);
    boolean inputs are fair coin flips.
    """
    check_range_names(ranges, specs)
    rng = np.random.default_rng(seed)
    drawn: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = spec.concrete_shape(batch)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            drawn[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            if spec.name not in ranges:
                raise BadInputError(
                    f"integer input {spec.name!r} needs a range: --input-range {spec.name}=LO:HI"
                )
            lo, hi = ranges[spec.name]
            drawn[spec.name] = rng.integers(lo, hi, size=shape).astype(dtype)
        elif dtype.kind == "b":
            drawn[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise BadInputError(f"cannot draw input {spec.name!r} of dtype {spec.dtype}")
    return drawn


def load_inputs(path: Path, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Read inputs from an ``.npz`` keyed by input name and check them against ``specs``.

    Every input must be present with the signature's dtype and a shape that matches every
    static dimension; all inputs must share the batch size.  Raises :class:`BadInputError`.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise BadInputError(f"inputs file not found: {path}") from None
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise BadInputError(f"cannot read inputs file {path}: {err}") from None
    names = [s.name for s in specs]
    missing = [n for n in names if n not in arrays]
    extra = sorted(set(arrays) - set(names))
    if missing or extra:
        raise BadInputError(
            f"inputs file {path} has keys {sorted(arrays)} but the model's inputs are {names}"
            + (f" (missing: {', '.join(missing)})" if missing else "")
            + (f" (unexpected: {', '.join(extra)})" if extra else "")
        )
    batches = set()
    for spec in specs:
        array = arrays[spec.name]
        if array.dtype.name != spec.dtype:
            raise BadInputError(
                f"input {spec.name!r} in {path} is {array.dtype.name}, the model expects {spec.dtype}"
            )
        if len(array.shape) != len(spec.shape) or any(
            want is not None and got != want
            for got, want in zip(array.shape, spec.shape, strict=True)
        ):
            want_text = "[" + ", ".join("?" if d is None else str(d) for d in spec.shape) + "]"
            raise BadInputError(
                f"input {spec.name!r} in {path} has shape {list(array.shape)}, "
                f"the model expects {want_text}"
            )
        if array.ndim:
            batches.add(array.shape[0])
    if len(batches) > 1:
        raise BadInputError(f"inputs in {path} disagree on the batch size: {sorted(batches)}")
    return {spec.name: arrays[spec.name] for spec in specs}
