"""ConstantOfShape whose shape is run-time tensor data: :class:`DynamicConstantOfShape`,
code form ``torch.full(shape.tolist(), ...)`` (eager only: data-dependent), against
onnxruntime; a shape known at import keeps the exportable static form."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from onnx import TensorProto, helper

from pipeline.to_torch.ops.constant_of_shape import DynamicConstantOfShape


@pytest.mark.parametrize(
    ("shape", "value"),
    [
        ([2, 3], helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
        ([4], helper.make_tensor("v", TensorProto.INT32, [1], [0])),
        ([0], None),
        ([], helper.make_tensor("v", TensorProto.BOOL, [1], [True])),
    ],
)
def test_constant_of_shape_run_time_shape(
    roundtrip: Callable[..., str],
    imported: Callable[..., object],
    shape: list[int],
    value: object,
) -> None:
    kwargs = {"value": value} if value is not None else {}
    node = helper.make_node("ConstantOfShape", ["shape"], ["y"], **kwargs)
    inputs = [np.array(shape, np.int64)]
    module = imported(node, inputs)
    assert any(isinstance(m, DynamicConstantOfShape) for m in module.modules())  # type: ignore[attr-defined]
    source = roundtrip(node, inputs)
    assert "torch.full(shape.tolist(), " in source and "does not export" in source
