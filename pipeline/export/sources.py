"""What a user can name as a model: parsed and checked without importing TensorFlow.

Accepted forms:
- a SavedModel directory (holds ``saved_model.pb``; one written by Keras 2 also holds
  ``keras_metadata.pb`` and loads as the Keras model it is, see
  :mod:`pipeline.export.worker.keras2`),
- a ``.keras`` file (Keras 3 archive) or an ``.h5`` file (legacy Keras, Keras 2 included),
- a Python factory ``path/to/file.py:function`` or ``package.module:function`` that returns a
  Keras model.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pipeline.core.errors import BadInputError

_MODULE_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


class SourceKind(StrEnum):
    """How the TF worker loads a source."""

    SAVED_MODEL = "saved_model"
    KERAS = "keras"
    H5 = "h5"
    FACTORY_FILE = "factory_file"
    FACTORY_MODULE = "factory_module"


@dataclass(frozen=True)
class Source:
    """A parsed model source.  ``location`` is a path, or a dotted module for FACTORY_MODULE."""

    kind: SourceKind
    location: str
    function: str | None = None

    def __str__(self) -> str:
        return f"{self.location}:{self.function}" if self.function else self.location


def parse_source(text: str) -> Source:
    """Parse and sanity-check a model source given on the command line or to :func:`convert`.

    Raises :class:`BadInputError` for a missing path, a directory that is not a SavedModel,
    a ``.keras`` file that is not a zip archive, or an unrecognised file type.  Whether the
    model really loads is the TF worker's job.
    """
    if not text:
        raise BadInputError("no model source given")
    path_part, sep, function = text.rpartition(":")
    # "C:\..." style drive letters are not a concern on the machines we support; a colon
    # separates the factory function only when what follows is an identifier.
    if sep and function.isidentifier():
        if path_part.endswith(".py"):
            path = Path(path_part)
            if not path.is_file():
                raise BadInputError(f"factory file not found: {path_part}")
            return Source(SourceKind.FACTORY_FILE, str(path.resolve()), function)
        if _MODULE_PATH.match(path_part):
            return Source(SourceKind.FACTORY_MODULE, path_part, function)
        raise BadInputError(
            f"cannot read {text!r} as a factory: use path/to/file.py:function or "
            "package.module:function"
        )
    path = Path(text)
    if not path.exists():
        raise BadInputError(f"model not found: {text}")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise BadInputError(
                f"{text} is a directory but not a SavedModel (no saved_model.pb in it)"
            )
        return Source(SourceKind.SAVED_MODEL, str(path.resolve()))
    suffix = path.suffix.lower()
    if suffix == ".keras":
        if not zipfile.is_zipfile(path):
            # Checked here, not in the TF worker: Keras says "File not found" for a
            # truncated archive, after the seconds TensorFlow takes to start.
            raise BadInputError(
                f"cannot load {text}: not a zip archive, which a .keras file is "
                "(truncated or not a Keras 3 file? save it again with model.save)"
            )
        return Source(SourceKind.KERAS, str(path.resolve()))
    if suffix in (".h5", ".hdf5"):
        return Source(SourceKind.H5, str(path.resolve()))
    raise BadInputError(
        f"unrecognised model file {text}: expected a SavedModel directory, a .keras or .h5 "
        "file, or a factory file.py:function"
    )
