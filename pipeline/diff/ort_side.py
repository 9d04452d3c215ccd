"""ONNX Runtime intermediates: every node output of ``model.onnx`` from one session run."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from pipeline.core.ort_runner import OrtRunner


def with_all_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs are the original ones followed by every other
    top-level node output (untyped: ONNX Runtime infers their types)."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    taken = {o.name for o in exposed.graph.output}
    for node in exposed.graph.node:
        for name in node.output:
            if name and name not in taken:
                exposed.graph.output.append(onnx.ValueInfoProto(name=name))
                taken.add(name)
    return exposed


def ort_intermediates(
    model: onnx.ModelProto, inputs: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], str]:
    """Every top-level node output of ``model`` on ``inputs`` (one run), and the execution
    provider that ran it."""
    runner = OrtRunner(with_all_outputs(model))
    return runner.run(inputs), runner.provider
