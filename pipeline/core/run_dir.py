"""Run directories that appear whole or not at all.

A run is built in a hidden staging directory beside the target and renamed into place only
when it is complete, so a crash or an error never leaves a half-written run that a later
stage (or a CI gate) could mistake for a good one, and a previous run stays untouched until
the new one replaces it.

What a failed run leaves is its TF worker's log, at ``<out_dir>.failed/tf_worker.log``
(:func:`failure_log_path`), named in the error; the next run into ``out_dir`` removes it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import overload

import numpy as np

from pipeline.core.errors import BadInputError

REPORT_NAME = "report.json"
WORKER_LOG_NAME = "tf_worker.log"


def failure_log_path(out_dir: Path) -> Path:
    """Where a failed run into ``out_dir`` keeps its TF worker's log:
    ``<out_dir>.failed/tf_worker.log``, beside ``out_dir`` (which a failed run never creates)."""
    out_dir = Path(out_dir).absolute()
    return out_dir.with_name(f"{out_dir.name}.failed") / WORKER_LOG_NAME


def clear_failure_log(out_dir: Path) -> None:
    """Remove the log an earlier failed run into ``out_dir`` kept, and its directory if that
    is then empty (anything else in it is left alone)."""
    log = failure_log_path(out_dir)
    log.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # absent, or holds something that is not ours
        log.parent.rmdir()


@contextmanager
def staged_run_dir(out_dir: Path) -> Iterator[Path]:
    """Yield an empty staging directory; on success it replaces ``out_dir``, on error it goes.

    The staging directory lives in ``out_dir``'s parent (so the final rename stays on one
    file system) under a dot-name that no tool treats as a run.
    """
    out_dir = out_dir.absolute()
    check_replaceable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_dir(staging, out_dir)


def check_replaceable(out_dir: Path) -> None:
    """Refuse an output path that holds something other than an earlier run.

    Replacing ``-o ~/projects`` by mistake must not delete it: an existing target is only
    replaced when it is empty or holds a run's ``report.json``.
    """
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise BadInputError(f"output path {out_dir} exists and is not a directory")
    if any(out_dir.iterdir()) and not (out_dir / REPORT_NAME).is_file():
        raise BadInputError(
            f"output directory {out_dir} is not empty and is not a tf2torch run; "
            "choose another -o or empty it"
        )


def replace_dir(new: Path, target: Path) -> None:
    """Move directory ``new`` to ``target``, replacing any existing ``target`` directory."""
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory")
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_npz(
    path: Path, arrays: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]]
) -> None:
    """Write ``arrays`` (a mapping, or ``(key, array)`` pairs made one at a time) as an
    uncompressed ``.npz`` at ``path``, atomically.

    Each array is streamed into the file as it comes: a model's weights are never held
    twice (once as arrays, once as the file's bytes), and pairs from a generator are never
    held all at once."""
    items = arrays.items() if isinstance(arrays, Mapping) else arrays
    fd, tmp = tempfile.mkstemp(prefix=f".{Path(path).name}.", dir=Path(path).parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for key, array in items:
                # np.savez's own layout: one ``<key>.npy`` member per array.
                with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LazyNpz(Mapping[str, np.ndarray]):
    """An ``.npz`` file's arrays by key, each read from the file when it is asked for (and
    not kept), so a model's weights or gradients stay on disk until a stage reads one.

    The file is opened at once: it may be deleted afterwards (its data stays readable
    through the open handle until :meth:`close` or garbage collection)."""

    def __init__(self, path: Path) -> None:
        self._npz = np.load(path, allow_pickle=False)
        self._keys = list(self._npz.files)

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._npz.files:
            raise KeyError(key)
        return np.asarray(self._npz[key])

    def __contains__(self, key: object) -> bool:
        return key in self._npz.files

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def close(self) -> None:
        """Close the file."""
        self._npz.close()

    def view(self, keys: Mapping[str, str]) -> NpzView:
        """A mapping of ``keys``' keys to the arrays their values name in this file."""
        return NpzView(self, keys)

    def sequence(self, keys: Sequence[str]) -> NpzSequence:
        """A sequence of the arrays ``keys`` name in this file, in order."""
        return NpzSequence(self, keys)


class NpzView(Mapping[str, np.ndarray]):
    """Arrays of a :class:`LazyNpz` under other names, each read when asked for."""

    def __init__(self, npz: LazyNpz, keys: Mapping[str, str]) -> None:
        self._npz, self._keys = npz, dict(keys)

    def __getitem__(self, key: str) -> np.ndarray:
        return self._npz[self._keys[key]]

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


class NpzSequence(Sequence[np.ndarray]):
    """Arrays of a :class:`LazyNpz` in a given order, each read when asked for."""

    def __init__(self, npz: LazyNpz, keys: Sequence[str]) -> None:
        self._npz, self._keys = npz, list(keys)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> list[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [self._npz[k] for k in self._keys[index]]
        return self._npz[self._keys[index]]

    def __len__(self) -> int:
        return len(self._keys)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file by key, loaded without pickle."""
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}
