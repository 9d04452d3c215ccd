"""What one model's conversion asks a Ray cluster for: CPUs and memory.

Memory is the manifest's ``memory`` when set; otherwise an estimate from the size of the
model's weights on disk::

    BASELINE_MEMORY + MEMORY_MULTIPLE * weight bytes

``MEMORY_MULTIPLE`` is the measured peak of a conversion above its process's baseline, as a
multiple of the float32 weights, rounded up: the largest of docs/results/bench_memory.md
(ConvNeXtTiny, 0.11 GB: the TF worker at 10.4x, its fixed costs dominating at that size) and
docs/results/bench_big.md (keras-hub Llamas, 1.25 and 4.4 GB: at most 3.3x).  ``BASELINE_MEMORY`` is what the conversion process (torch, ONNX
Runtime) and its TensorFlow worker hold before the model is loaded (0.82 GB + 0.56 GB there).
The weights' size is the file's size for ``.keras``/``.h5``, the ``variables/`` folder's for a
SavedModel.  A factory (``file.py:fn``) has no weights on disk: it gets the baseline only, so
set ``memory`` in the manifest for a large one.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.migration.manifest import ModelSpec

MEMORY_MULTIPLE = 11.0
"""Peak conversion memory above the baseline, per byte of weights (bench_memory.md: 10.4)."""
BASELINE_MEMORY = 1_500_000_000
"""Bytes the conversion process and its TensorFlow worker hold before the model loads."""
CPUS_PER_MODEL = 1.0
"""Ray ``num_cpus`` of one model's task (its processes use more threads when CPUs are idle)."""


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def weights_bytes(spec: ModelSpec) -> int | None:
    """The size of the model's weights on disk, or None for a factory (or a missing path)."""
    _, sep, function = spec.source.rpartition(":")
    if sep and function.isidentifier():
        return None
    source = Path(spec.source)
    if source.is_file():
        return source.stat().st_size
    if source.is_dir():
        variables = source / "variables"
        return _tree_bytes(variables if variables.is_dir() else source)
    return None


def memory_request(spec: ModelSpec) -> int:
    """Bytes of memory the model's Ray task asks for (see the module docstring)."""
    if spec.memory is not None:
        return spec.memory
    weights = weights_bytes(spec) or 0
    return int(BASELINE_MEMORY + MEMORY_MULTIPLE * weights)
