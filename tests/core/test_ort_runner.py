"""ONNX Runtime runner: provider selection and IR-version handling on this (CPU) machine."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from pipeline.core.ort_runner import (
    CPU,
    CUDA,
    MAX_ORT_IR_VERSION,
    OrtRunner,
    ensure_ir_version,
    select_providers,
)


def _relu_model(ir_version: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=ir_version
    )


def test_cpu_machine_selects_only_the_cpu_provider() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: this test is about CPU-only machines")
    assert select_providers() == (CPU,)


def test_cuda_is_selected_where_it_is_usable() -> None:
    if not torch.cuda.is_available() or CUDA not in ort.get_available_providers():
        pytest.skip("no usable GPU on this machine (CI and development machines are CPU-only)")
    assert select_providers() == (CUDA, CPU)
    assert OrtRunner(_relu_model(10)).provider == CUDA


def test_runner_reports_the_provider_that_ran_and_the_outputs() -> None:
    runner = OrtRunner(_relu_model(10))
    x = np.array([[-1.0, 0.0, 2.5]], dtype=np.float32)
    out = runner.run({"x": x, "unused": x})
    assert (
        runner.provider == CPU if not torch.cuda.is_available() else runner.provider in (CPU, CUDA)
    )
    np.testing.assert_array_equal(out["y"], np.maximum(x, 0))


def test_new_ir_versions_are_clamped_for_onnx_runtime() -> None:
    model = _relu_model(onnx.IR_VERSION)  # onnx's newest, which ONNX Runtime 1.31 refuses
    assert model.ir_version > MAX_ORT_IR_VERSION
    clamped = ensure_ir_version(model)
    assert clamped.ir_version == MAX_ORT_IR_VERSION and model.ir_version == onnx.IR_VERSION
    assert OrtRunner(model).run({"x": np.ones((2, 3), np.float32)})["y"].shape == (2, 3)
    older = _relu_model(8)
    assert ensure_ir_version(older) is older
