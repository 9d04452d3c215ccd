"""Conv and MaxPool with ``auto_pad`` SAME_UPPER/SAME_LOWER (pads computed at import from the
static spatial sizes), MaxPool pads beyond torch's half-kernel limit, and MaxPool's
``Indices`` output, against onnxruntime; the generated code exports with a dynamic batch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from pipeline.to_torch.codegen import load_generated
from pipeline.to_torch.importer import import_onnx


def _exports(tmp_path: Path, x: np.ndarray) -> None:
    generated = load_generated(tmp_path / "torch_model")
    program = torch.export.export(
        generated, (torch.from_numpy(x),), dynamic_shapes=({0: torch.export.Dim.AUTO},)
    )
    other = torch.from_numpy(np.random.default_rng(1).standard_normal((3, *x.shape[1:]))).float()
    torch.testing.assert_close(program.module()(other), generated(other))


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("strides", [[1, 1], [2, 2]])
def test_conv_auto_pad_same(
    roundtrip: Callable[..., str], tmp_path: Path, auto_pad: str, strides: list[int]
) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, 7, 6)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 4)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad=auto_pad, strides=strides)
    source = roundtrip(node, [x], {"w": w})
    assert "auto_pad" not in source and "self." in source
    _exports(tmp_path, x)


def test_conv_auto_pad_same_needs_static_sizes_for_strides() -> None:
    w = np.ones((1, 1, 3, 3), np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 1, "h", "w"])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        initializer=[onnx.numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(Exception, match="spatial sizes known at import"):
        import_onnx(model)


@pytest.mark.parametrize(
    "attributes",
    [
        {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
        {"auto_pad": "SAME_LOWER", "strides": [2, 2]},
        {"auto_pad": "SAME_UPPER"},
        {"pads": [2, 2, 2, 2]},  # beyond half the kernel: F.pad(-inf) + the pool
        {"pads": [0, 1, 2, 0]},
    ],
)
def test_max_pool_pads(
    roundtrip: Callable[..., str], tmp_path: Path, attributes: dict[str, object]
) -> None:
    x = np.random.default_rng(0).standard_normal((2, 2, 7, 6)).astype(np.float32)
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], **attributes)
    source = roundtrip(node, [x])
    assert "F.max_pool2d(" in source
    _exports(tmp_path, x)


@pytest.mark.parametrize("storage_order", [0, 1])
def test_max_pool_indices(roundtrip: Callable[..., str], storage_order: int) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 4)).astype(np.float32)
    node = helper.make_node(
        "MaxPool",
        ["x"],
        ["y", "i"],
        kernel_shape=[3, 3],
        pads=[1, 1, 1, 1],
        strides=[2, 1],
        storage_order=storage_order,
    )
    source = roundtrip(node, [x])
    assert "max_pool_with_indices(" in source
