"""Training batches for ``train-check``: drawn with a seed, or cut from a user's ``.npz``.

NumPy only: the TF worker draws or reads the batches once and writes them into its answer,
so TensorFlow and torch train on the very same arrays.

A data file holds the inputs keyed by input name (or ``x`` for a one-input model) and the
targets keyed ``target/<output name>`` (or ``y`` for a one-output model), all with the same
number of samples.  Step ``k`` takes samples ``[k·N, (k+1)·N)`` (wrapping around), ``N``
the batch size.  A target has the output's shape, except for
``sparse_categorical_crossentropy``, whose integer class labels drop the class axis.

Drawn batches (step ``k`` from seed ``seed + k``): inputs as :func:`pipeline.export.inputs.draw_inputs`
draws them; targets by loss: standard normal for regression losses, 0/1 for binary
cross-entropy, one-hot rows for categorical cross-entropy, class labels for the sparse one,
softmax rows for KL divergence.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import BadInputError
from pipeline.core.run_dir import write_npz
from pipeline.core.signature import TensorSpec
from pipeline.export.inputs import draw_inputs

TARGET_PREFIX = "target/"
TARGET_SEED_OFFSET = 104729


@dataclass(frozen=True)
class Target:
    """What one output's target must look like: ``shape`` without the batch dimension."""

    output: str
    loss: str
    shape: tuple[int, ...]
    integer: bool

    def describe(self) -> str:
        """``[?, 10] float`` style text for error messages."""
        dims = ", ".join(["?", *(str(d) for d in self.shape)])
        return f"[{dims}] {'integer' if self.integer else 'float'}"


def target_for(output: str, loss: str, output_shape: Sequence[int]) -> Target:
    """The target an output with ``output_shape`` (batch dimension excluded) needs under
    the Keras loss ``loss``."""
    if loss == "sparse_categorical_crossentropy":
        return Target(output, loss, tuple(output_shape[:-1]), True)
    return Target(output, loss, tuple(output_shape), False)


@dataclass
class Batch:
    """One step's inputs (by input name) and targets (by output name)."""

    inputs: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]


def _draw_target(target: Target, batch: int, rng: np.random.Generator) -> np.ndarray:
    shape = (batch, *target.shape)
    if target.loss == "binary_crossentropy":
        return rng.integers(0, 2, size=shape).astype(np.float32)
    if target.loss == "categorical_crossentropy":
        labels = rng.integers(0, shape[-1], size=shape[:-1])
        return np.eye(shape[-1], dtype=np.float32)[labels]
    if target.loss == "kl_divergence":
        logits = rng.standard_normal(shape)
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def draw_batches(
    specs: Sequence[TensorSpec],
    targets: Sequence[Target],
    classes: Mapping[str, int],
    *,
    steps: int,
    batch: int,
    seed: int,
    ranges: Mapping[str, tuple[int, int]],
) -> list[Batch]:
    """``steps`` batches of ``batch`` samples; ``classes`` gives the class count of each
    output trained with sparse categorical cross-entropy (its last dimension)."""
    batches = []
    for step in range(steps):
        inputs = draw_inputs(specs, batch=batch, seed=seed + step, ranges=ranges)
        rng = np.random.default_rng(seed + step + TARGET_SEED_OFFSET)
        drawn = {}
        for target in targets:
            if target.integer:
                drawn[target.output] = rng.integers(
                    0, classes[target.output], size=(batch, *target.shape)
                ).astype(np.int32)
            else:
                drawn[target.output] = _draw_target(target, batch, rng)
        batches.append(Batch(inputs, drawn))
    return batches


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise BadInputError(f"data file not found: {path}") from None
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise BadInputError(f"cannot read data file {path}: {err}") from None


def _check_shape(
    path: Path, key: str, array: np.ndarray, want: Sequence[int | None], text: str
) -> None:
    if array.ndim != len(want) or any(
        w is not None and g != w for g, w in zip(array.shape, want, strict=True)
    ):
        raise BadInputError(
            f"array {key!r} in {path} has shape {list(array.shape)}, expected {text}"
        )


def load_dataset(path: Path, specs: Sequence[TensorSpec], targets: Sequence[Target]) -> Batch:
    """Every sample of the data file (module docstring), after checking every array against
    the model's inputs and the losses' targets.  Raises :class:`BadInputError` naming the
    array and the shape it should have."""
    arrays = _read(path)
    input_keys = {s.name: s.name for s in specs}
    if len(specs) == 1 and specs[0].name not in arrays and "x" in arrays:
        input_keys[specs[0].name] = "x"
    target_keys = {t.output: f"{TARGET_PREFIX}{t.output}" for t in targets}
    if len(targets) == 1 and target_keys[targets[0].output] not in arrays and "y" in arrays:
        target_keys[targets[0].output] = "y"
    wanted = [*input_keys.values(), *target_keys.values()]
    missing = [k for k in wanted if k not in arrays]
    if missing:
        raise BadInputError(
            f"data file {path} lacks {', '.join(repr(k) for k in missing)} (it has "
            f"{', '.join(repr(k) for k in sorted(arrays)) or 'nothing'})"
        )
    samples: set[int] = set()
    for spec in specs:
        key = input_keys[spec.name]
        array = arrays[key]
        text = "[" + ", ".join("?" if d is None else str(d) for d in spec.shape) + "]"
        _check_shape(path, key, array, [None, *spec.shape[1:]], text)
        if array.dtype.name != spec.dtype:
            raise BadInputError(
                f"array {key!r} in {path} is {array.dtype.name}, the model input expects {spec.dtype}"
            )
        samples.add(array.shape[0])
    for target in targets:
        key = target_keys[target.output]
        array = arrays[key]
        _check_shape(
            path, key, array, [None, *target.shape], f"{target.describe()} for {target.loss}"
        )
        if target.integer != (array.dtype.kind in "iu"):
            raise BadInputError(
                f"array {key!r} in {path} is {array.dtype.name}, expected "
                f"{target.describe()} for {target.loss}"
            )
        samples.add(array.shape[0])
    if len(samples) > 1:
        raise BadInputError(
            f"arrays in {path} disagree on the number of samples: {sorted(samples)}"
        )
    return Batch(
        {s.name: arrays[input_keys[s.name]] for s in specs},
        {
            t.output: arrays[target_keys[t.output]].astype(np.int32 if t.integer else np.float32)
            for t in targets
        },
    )


def load_batches(
    path: Path,
    specs: Sequence[TensorSpec],
    targets: Sequence[Target],
    *,
    steps: int,
    batch: int,
) -> list[Batch]:
    """Cut ``steps`` batches of ``batch`` samples from the data file (module docstring;
    :func:`load_dataset` checks it)."""
    data = load_dataset(path, specs, targets)
    total = len(next(iter(data.inputs.values())))
    if total < batch:
        raise BadInputError(f"data file {path} has {total} samples, fewer than --batch {batch}")
    batches = []
    for step in range(steps):
        index = (np.arange(batch) + step * batch) % total
        batches.append(
            Batch(
                {k: v[index] for k, v in data.inputs.items()},
                {k: v[index] for k, v in data.targets.items()},
            )
        )
    return batches


def save_batches(path: Path, batches: Sequence[Batch]) -> None:
    """Write batches to ``path`` (keys ``<step>/x/<input>``, ``<step>/y/<output>``)."""
    arrays: dict[str, np.ndarray] = {}
    for step, b in enumerate(batches):
        arrays.update({f"{step}/x/{k}": v for k, v in b.inputs.items()})
        arrays.update({f"{step}/y/{k}": v for k, v in b.targets.items()})
    write_npz(path, arrays)


def read_batches(arrays: Mapping[str, np.ndarray], steps: int) -> list[Batch]:
    """The batches :func:`save_batches` wrote, from the loaded arrays."""
    batches = [Batch({}, {}) for _ in range(steps)]
    for key, value in arrays.items():
        parts = key.split("/", 2)
        if len(parts) != 3 or not parts[0].isdigit() or int(parts[0]) >= steps:
            continue
        step, kind, name = int(parts[0]), parts[1], parts[2]
        (batches[step].inputs if kind == "x" else batches[step].targets)[name] = value
    return batches
