"""The fixup stage as one call: the built-in passes, then the built-in and user patches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from pipeline.core import onnx_io
from pipeline.core.weight_store import WeightStore
from pipeline.passes import (
    builtin_passes,
    builtin_patches,
    inference_passes,
    load_patch_dir,
    run_passes,
)


@dataclass
class Fixed:
    """The fixup stage's output: the graph every later stage runs, and what each pass did."""

    model: onnx.ModelProto
    passes: list[dict[str, Any]]
    """One record per pass (report.json's ``passes``)."""


def user_patches(directories: Sequence[Path]) -> list[Any]:
    """The ``PATCH`` of every module in each ``--patches`` directory, in order."""
    return [p for directory in directories for p in load_patch_dir(Path(directory))]


def fix_graph(
    raw_onnx: Path,
    inputs: Mapping[str, np.ndarray],
    extra_patches: Sequence[Any],
    out: Path,
    *,
    fold_for_inference: bool = False,
    reference: Mapping[str, np.ndarray] | None = None,
    store: WeightStore | None = None,
) -> Fixed:
    """Run every pass and patch on ``raw_onnx`` (each checked by ONNX Runtime on ``inputs``)
    and save the result to ``out``; with ``fold_for_inference``, BatchNorms are then folded
    into their convolutions (recorded in the provenance record).  ``reference`` is
    TensorFlow's outputs on ``inputs``: each pass may move ONNX Runtime's outputs by as much
    as float32 already separates the two (see :func:`pipeline.passes.pass_tolerances`).
    With a ``store``, the graph's weights are moved into it as it is read, and every graph
    the passes make keeps them there (see :mod:`pipeline.core.weight_store`): the returned
    graph is then a skeleton whose weights the store holds until it is closed.
    Raises :class:`~pipeline.core.errors.PassError`."""
    if store is None:
        raw = onnx.load(str(raw_onnx))
    else:
        raw = onnx_io.load(raw_onnx)  # external data stays in its file
        store.offload(raw.graph.initializer)
    passes = builtin_passes() + (inference_passes() if fold_for_inference else [])
    fixed, records = run_passes(
        raw,
        passes,
        dict(inputs),
        patches=[*builtin_patches(), *extra_patches],
        reference=reference,
        store=store,
    )
    onnx_io.save(fixed, out)
    return Fixed(fixed, [r.to_json() for r in records])
