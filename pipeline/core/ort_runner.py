"""ONNX Runtime sessions: the CUDA execution provider where it really works, CPU otherwise."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping

import numpy as np
import onnx
import onnxruntime as ort

from pipeline.core import onnx_io

log = logging.getLogger(__name__)

# ONNX Runtime 1.31 reads IR versions up to 13; onnx 1.23's helpers write 14 by default.
MAX_ORT_IR_VERSION = 10
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
_FATAL = 4
ort.set_default_logger_severity(_FATAL)


@functools.cache
def select_providers() -> tuple[str, ...]:
    """``(CUDA, CPU)`` where a GPU and the CUDA provider are usable, else ``(CPU,)``.

    Asking for CUDA on a machine without it makes ONNX Runtime log an error at every session,
    so CUDA is requested only when the provider is built in, torch sees a GPU, and the
    CUDA 13 / cuDNN 9 libraries (installed by the torch wheel) load.
    """
    if CUDA not in ort.get_available_providers():
        return (CPU,)
    import torch

    if not torch.cuda.is_available():
        return (CPU,)
    try:
        ort.preload_dlls()
    except Exception as err:  # a broken CUDA install: run on the CPU and say why
        log.warning("ONNX Runtime cannot load the CUDA libraries (%s); using the CPU", err)
        return (CPU,)
    return (CUDA, CPU)


def ensure_ir_version(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return ``model`` with an IR version ONNX Runtime accepts (at most 10; copied if changed)."""
    if model.ir_version <= MAX_ORT_IR_VERSION:
        return model
    clamped = onnx_io.copy(model)
    clamped.ir_version = MAX_ORT_IR_VERSION
    return clamped


SEPARATE_WEIGHTS_BYTES = onnx_io.LARGE_WEIGHTS_BYTES
"""Weights from which a session reads them from an external data file written for it (see
:func:`pipeline.core.onnx_io.with_external_weights`) rather than from serialized bytes,
with ONNX Runtime's pre-packing off: the graph's copy and the session's, not also the bytes'
and a packed one; and no 2 GB limit."""


class OrtRunner:
    """One ONNX Runtime session over a model; :attr:`provider` is the EP that actually runs.

    A model whose weights pass :data:`SEPARATE_WEIGHTS_BYTES` is given to ONNX Runtime as a
    file with external data (protobuf cannot serialize past 2 GB)."""

    def __init__(self, model: onnx.ModelProto, providers: tuple[str, ...] | None = None) -> None:
        options = ort.SessionOptions()
        # Fatal only: ONNX Runtime's own error lines (e.g. "LSTM operator does not support
        # double yet" while a float64 noise floor is tried) reach the caller as the
        # exception it raises, which is logged and reported there; on the terminal they
        # would read as a failure of a run that passes.
        options.log_severity_level = _FATAL
        providers_list = list(providers or select_providers())
        if not onnx_io.reads_from_file(model, SEPARATE_WEIGHTS_BYTES):
            self.session = ort.InferenceSession(
                ensure_ir_version(model).SerializeToString(),
                sess_options=options,
                providers=providers_list,
            )
        else:
            with onnx_io.readable_file(model, max_ir_version=MAX_ORT_IR_VERSION) as path:
                options.add_session_config_entry("session.disable_prepacking", "1")
                self.session = ort.InferenceSession(
                    str(path), sess_options=options, providers=providers_list
                )
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def provider(self) -> str:
        """The execution provider the session really uses (never claims CUDA it lacks)."""
        return str(self.session.get_providers()[0])

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model; outputs keyed by name, in graph output order."""
        feed = {i.name: inputs[i.name] for i in self.session.get_inputs()}
        run_options = ort.RunOptions()
        run_options.log_severity_level = _FATAL
        values = self.session.run(self.output_names, feed, run_options)
        return dict(zip(self.output_names, (np.asarray(v) for v in values), strict=True))
