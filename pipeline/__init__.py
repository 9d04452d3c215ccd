"""tf2torch: migrate TensorFlow/Keras models to PyTorch through ONNX, proven numerically.

The public API is :func:`convert` and :func:`load_torch`; errors derive from
:class:`Tf2TorchError`.  Importing this package never imports TensorFlow.
"""

from __future__ import annotations

from pipeline.errors import (
    BadInputError,
    ExportError,
    OnnxExportError,
    PassError,
    Tf2TorchError,
    UnsupportedOpsError,
    WorkerError,
)

__all__ = [
    "BadInputError",
    "ExportError",
    "OnnxExportError",
    "PassError",
    "Tf2TorchError",
    "UnsupportedOpsError",
    "WorkerError",
]
