"""Exceptions raised by tf2torch.

Every failure the pipeline can report is a :class:`Tf2TorchError`; its ``str`` is the
one-line message the CLI prints (exit code 2).  Subclasses say which kind of failure it is.
"""

from __future__ import annotations


class Tf2TorchError(Exception):
    """Base class: the model could not be converted or checked.  ``str(err)`` is one line."""

    kind = "error"


class BadInputError(Tf2TorchError):
    """The user's input is wrong: a missing path, a corrupt model, a bad option or input file."""

    kind = "bad_input"


class UnsupportedOpsError(Tf2TorchError):
    """Some ONNX ops have no converter; ``ops`` maps op type to the node names that use it."""

    kind = "unsupported_ops"

    def __init__(self, stage: str, ops: dict[str, list[str]]) -> None:
        self.stage = stage
        self.ops = ops
        parts = []
        for op_type, nodes in sorted(ops.items()):
            shown = ", ".join(nodes[:3]) + (", ..." if len(nodes) > 3 else "")
            parts.append(f"{op_type} x{len(nodes)} ({shown})")
        super().__init__(
            f"{stage}: {len(ops)} unsupported op type(s): {'; '.join(parts)}. "
            "Add a patch for them (see docs/patches.md) or choose another opset."
        )


class WorkerError(Tf2TorchError):
    """The TensorFlow worker process failed or died; ``stage`` names what it was doing."""

    kind = "worker_crash"

    def __init__(self, stage: str, message: str) -> None:
        self.stage = stage
        super().__init__(f"{stage}: {message}")


class PassError(Tf2TorchError):
    """A fixup pass broke the graph or changed ONNX Runtime's outputs; names the pass."""

    kind = "pass_failed"


class OnnxExportError(Tf2TorchError):
    """tf2onnx could not export the TensorFlow model to ONNX."""

    kind = "onnx_export"


class ExportError(Tf2TorchError):
    """The PyTorch module could not be saved with ``torch.export``."""

    kind = "torch_export"


class MissingExtraError(Tf2TorchError):
    """A command needs an optional dependency group that is not installed (e.g. TensorFlow,
    which only the ``tf`` extra brings: the base install is the TF-free CI gate)."""

    kind = "missing_extra"


ERROR_KINDS: dict[str, type[Tf2TorchError]] = {
    cls.kind: cls for cls in (Tf2TorchError, BadInputError, PassError, OnnxExportError, ExportError)
}
"""Error classes by ``kind``, for rebuilding an error that crossed a process boundary."""
