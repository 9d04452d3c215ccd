"""Layout transforms between a TF variable and the tensor that holds it, as short labels.

A label is a comma-separated list of steps applied left to right to the TF value:

- ``identity``: nothing;
- ``transpose(1,0)`` / ``permute(3,2,0,1)``: ``np.transpose`` with those axes (Conv's HWIO →
  OIHW is ``permute(3,2,0,1)``);
- ``gates(1,0,2)``: reorder equal blocks along axis 0 (recurrent weights stack 3 or 4 gates);
- ``row(i)``: take index ``i`` of axis 0 (one half of Keras GRU's stacked ``(2, 3H)`` bias);
- ``reshape(2,3)``: reshape to those dims; a bare ``reshape`` (the usual last step) reshapes
  to the target shape.

The same labels describe both halves of the journey: a TF variable to an ONNX initializer
(recorded by the passes that move it, see :mod:`pipeline.core.provenance`) and a TF variable to
its torch tensor (the parameter table).  :func:`describe_index_map` names the label of an exact
element map, which fingerprinting (:mod:`pipeline.core.fingerprint`) measures.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence

import numpy as np

_STEP = re.compile(r"[a-z]+\([0-9,\s]*\)|[a-z]+")


def steps(transform: str) -> list[tuple[str, list[int]]]:
    """The steps of a label: ``(kind, integer arguments)`` in order."""
    found = []
    for step in _STEP.findall(transform):
        kind, _, args = step.partition("(")
        found.append((kind, [int(a) for a in args.rstrip(")").split(",") if a.strip()]))
    return found


def apply_transform(value: np.ndarray, transform: str, shape: Sequence[int]) -> np.ndarray:
    """Apply a transform label to a TF value (or its gradient); ``shape`` is the target's
    (what ``reshape`` reshapes to).  Unknown steps (``zeros``, ``unmapped``) leave the value."""
    out = np.asarray(value)
    for kind, numbers in steps(transform):
        if kind == "reshape":
            out = out.reshape(tuple(numbers) if numbers else tuple(shape))
        elif kind == "row":
            out = out[numbers[0]]
        elif kind in ("transpose", "permute"):
            out = np.transpose(out, numbers)
        elif kind == "gates":
            parts = np.split(out, len(numbers), axis=0)
            out = np.concatenate([parts[i] for i in numbers])
    return out


def permutation_label(perm: Sequence[int]) -> str:
    """``identity``, ``transpose(1,0)`` or ``permute(...)`` for an axis permutation."""
    perm = [int(p) for p in perm]
    if perm == list(range(len(perm))):
        return "identity"
    if perm == [1, 0]:
        return "transpose(1,0)"
    return "permute(" + ",".join(str(p) for p in perm) + ")"


def compose(first: str, then: str, middle_shape: Sequence[int] = ()) -> str:
    """The label of ``then`` applied after ``first``; ``middle_shape`` is the shape between
    the two (what a bare ``reshape`` ending ``first`` reshaped to)."""
    head = [s for s in _STEP.findall(first or "") if s != "identity"]
    tail = [s for s in _STEP.findall(then or "") if s != "identity"]
    if head and head[-1] == "reshape" and tail:
        if all(s.startswith("reshape") for s in tail):
            head.pop()  # two reshapes in a row are one
        else:
            head[-1] = "reshape(" + ",".join(str(int(d)) for d in middle_shape) + ")"
    return ",".join(head + tail) or "identity"


def _gate_orders(blocks: int) -> Iterator[tuple[int, ...]]:
    for order in itertools.permutations(range(blocks)):
        if order != tuple(range(blocks)):
            yield order


def _candidates(source_shape: tuple[int, ...], target_shape: tuple[int, ...]) -> Iterator[str]:
    """Labels worth trying: those that reach the target shape without a reshape first, the
    usual ones (plain and Conv-kernel transposes) ahead of the rest."""
    rank = len(source_shape)
    same_size = int(np.prod(source_shape)) == int(np.prod(target_shape))
    perms = list(itertools.permutations(range(rank)))
    # Conv kernels (HWIO → OIHW, depthwise HWCM → CMHW) and plain transposes first.
    preferred = [tuple(range(rank)), tuple(reversed(range(rank)))]
    if rank >= 3:
        preferred += [
            (rank - 1, rank - 2, *range(rank - 2)),
            (rank - 2, rank - 1, *range(rank - 2)),
        ]
    ordered = list(dict.fromkeys([p for p in preferred if p in perms] + perms))
    heads: list[tuple[str, tuple[int, ...]]] = []
    for perm in ordered:
        moved = tuple(source_shape[i] for i in perm)
        label = permutation_label(perm)
        heads.append((label, moved))
        if rank <= 2 and moved:
            for blocks in (4, 3):
                if moved[0] % blocks:
                    continue
                for order in _gate_orders(blocks):
                    gates = "gates(" + ",".join(str(o) for o in order) + ")"
                    heads.append((gates if label == "identity" else f"{label},{gates}", moved))
    for label, moved in heads:
        if moved == target_shape:
            yield label
    if same_size:
        for label, moved in heads:
            if moved != target_shape:
                yield "reshape" if label == "identity" else f"{label},reshape"


def describe_index_map(index_map: np.ndarray, source_shape: Sequence[int]) -> str | None:
    """The label that moves a TF value of ``source_shape`` to ``index_map``'s layout, where
    ``index_map[j]`` is the flat TF index of target element ``j``; None when no label does.

    A map that holds one row of axis 0 only (a stacked variable split across tensors) is
    ``row(i)`` followed by the row's own label.
    """
    source_shape = tuple(int(d) for d in source_shape)
    index_map = np.asarray(index_map, dtype=np.int64)
    size = int(np.prod(source_shape)) if source_shape else 1
    if index_map.size != size:
        if len(source_shape) < 2 or index_map.size != size // source_shape[0]:
            return None
        row_size = index_map.size
        row = int(index_map.reshape(-1)[0]) // row_size
        local = index_map - row * row_size
        if local.min() < 0 or local.max() >= row_size:
            return None
        inner = describe_index_map(local, source_shape[1:])
        if inner is None:
            return None
        return f"row({row})" if inner == "identity" else f"row({row}),{inner}"
    source = np.arange(size, dtype=np.int64).reshape(source_shape)
    target_shape = tuple(index_map.shape)
    flat = index_map.reshape(-1)
    for label in _candidates(source_shape, target_shape):
        moved = apply_transform(source, label, target_shape)
        if moved.shape == target_shape and np.array_equal(moved.reshape(-1), flat):
            return label
    return None
