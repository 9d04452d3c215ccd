"""tf2torch: migrate TensorFlow/Keras models to PyTorch through ONNX, proven numerically.

The public API is :func:`convert`, :func:`load_torch` and :func:`check_run` (with
:mod:`pipeline.testing` for test suites); errors derive from
:class:`Tf2TorchError`.  Importing this package never imports TensorFlow.
"""

from __future__ import annotations

from typing import Any

from pipeline.core.errors import (
    BadInputError,
    ExportError,
    MissingExtraError,
    OnnxExportError,
    PassError,
    Tf2TorchError,
    UnsupportedOpsError,
    WorkerError,
)


def __getattr__(name: str) -> Any:
    # convert/load_torch pull in torch and onnx2torch; import them only when asked for, so
    # `import pipeline.core.errors` (e.g. in the TF worker) stays light and torch-free.
    if name in ("convert", "load_torch", "ConvertOptions", "ConversionResult"):
        from pipeline import api

        return getattr(api, name)
    if name in ("migrate", "ManifestError", "MigrationResult", "ModelResult"):
        from pipeline import migration

        return getattr(migration, name)
    if name in ("scale_weights", "parse_scale"):
        from pipeline import scaling

        return getattr(scaling, name)
    if name == "reset_parameters":
        from pipeline import init

        return init.reset_parameters
    if name in ("check_run", "CheckResult"):
        from pipeline.verify import check

        return getattr(check, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


__all__ = [
    "BadInputError",
    "CheckResult",
    "ConversionResult",
    "ConvertOptions",
    "ExportError",
    "ManifestError",
    "MigrationResult",
    "MissingExtraError",
    "ModelResult",
    "OnnxExportError",
    "PassError",
    "Tf2TorchError",
    "UnsupportedOpsError",
    "WorkerError",
    "check_run",
    "convert",
    "load_torch",
    "migrate",
    "parse_scale",
    "reset_parameters",
    "scale_weights",
]
