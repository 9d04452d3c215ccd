"""Graphs whose weights wait on disk in a WeightStore (issue 27): every reader of a stored
graph gets the same values as from the graph in memory -- ONNX Runtime, the checker, the
fixup passes (onnx_ir), onnx2torch, the artifact written by ``save`` -- and a conversion
that keeps its weights in a store passes as the in-memory one does and leaves no store
behind."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from pipeline.api import ConvertOptions, convert
from pipeline.core import onnx_io, provenance
from pipeline.core.ort_runner import OrtRunner
from pipeline.core.weight_store import STORE_ENV, WeightStore, weight_store
from pipeline.passes import default_passes, run_passes
from pipeline.to_torch.importer import import_onnx

REPO = Path(__file__).resolve().parents[2]


def _conv_model(seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """NHWC input -> Transpose -> Conv(+bias) -> Relu -> MatMul, the Conv's kernel arriving as
    Keras's HWIO variable through a Transpose (which the variable-layout pass folds into a
    new weight), with tensors large enough to be stored."""
    rng = np.random.default_rng(seed)
    weights = {
        "kernel": rng.standard_normal((3, 3, 3, 16)).astype(np.float32),
        "bias": rng.standard_normal(16).astype(np.float32),
        "dense": rng.standard_normal((16 * 6 * 6, 5)).astype(np.float32),
        "flat": np.array([-1, 16 * 6 * 6], np.int64),
    }
    nodes = [
        helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Transpose", ["kernel"], ["oihw"], perm=[3, 2, 0, 1]),
        helper.make_node("Conv", ["nchw", "oihw", "bias"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Reshape", ["r", "flat"], ["f"]),
        helper.make_node("MatMul", ["f", "dense"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6, 6, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    # as the TF worker records it: each weight is one whole variable
    record = provenance.Provenance({k: [provenance.Part(k)] for k in ("kernel", "bias", "dense")})
    provenance.write(model, record)
    return model, weights


def _stored(model: onnx.ModelProto, store: WeightStore) -> onnx.ModelProto:
    copy = onnx_io.copy(model)
    assert store.offload(copy.graph.initializer) > 0
    return copy


def _inputs() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(1).standard_normal((2, 6, 6, 3)).astype(np.float32)}


def test_offload_leaves_a_skeleton_whose_values_read_back_exactly(tmp_path: Path) -> None:
    model, weights = _conv_model()
    stored = _stored(model, WeightStore(tmp_path / "store"))
    assert stored.ByteSize() < model.ByteSize() // 4
    for tensor in stored.graph.initializer:
        assert np.array_equal(onnx_io.array(tensor), weights[tensor.name])
    # the kernel and the dense matrix go; the bias and the shape are small and stay inside
    # the graph, where shape inference reads them
    assert [t.name for t in stored.graph.initializer if onnx_io.stored_file(t)] == [
        "kernel",
        "dense",
    ]


@pytest.mark.parametrize("external", [False, True])
def test_save_writes_the_stored_bytes_into_the_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, external: bool
) -> None:
    """The artifact holds the weights itself (one file, or its own external data): it loads
    to the same values after the store is gone."""
    if external:
        monkeypatch.setenv(onnx_io.THRESHOLD_ENV, "1000")
    model, weights = _conv_model()
    store = WeightStore(tmp_path / "store")
    stored = _stored(model, store)
    onnx_io.save(stored, tmp_path / "model.onnx")
    store.close()
    assert not (tmp_path / "store").exists()
    assert (tmp_path / "model.onnx.data").is_file() == external
    loaded = onnx.load(str(tmp_path / "model.onnx"))
    onnx.checker.check_model(loaded)
    for tensor in loaded.graph.initializer:
        assert np.array_equal(numpy_helper.to_array(tensor), weights[tensor.name])
    if not external:  # one protobuf file, equal field for field to the in-memory model
        assert loaded.graph == model.graph


def _reference(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The model in float64 torch (ONNX Runtime reading from a file runs without
    pre-packing, another float32 summation order: both runs are held to the exact result)."""
    w = {k: torch.from_numpy(v).double() for k, v in weights.items() if k != "flat"}
    w["kernel"] = w["kernel"].permute(3, 2, 0, 1)
    nchw = torch.from_numpy(x).double().permute(0, 3, 1, 2)
    conv = torch.nn.functional.conv2d(nchw, w["kernel"], w["bias"], padding=1).relu()
    return (conv.reshape(conv.shape[0], -1) @ w["dense"]).numpy()


def test_ort_and_the_checker_read_a_stored_graph(tmp_path: Path) -> None:
    model, weights = _conv_model()
    stored = _stored(model, WeightStore(tmp_path / "store"))
    exact = _reference(weights, _inputs()["x"])
    for graph in (model, stored):
        got = OrtRunner(graph).run(_inputs())["y"]
        # float32 accumulation over 576 products of values ~1: a few float32 ulps of ~100
        np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-4)
    with onnx_io.readable_file(stored) as path:
        onnx.checker.check_model(str(path), full_check=True)
        assert path.parent == (tmp_path / "store").resolve()
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["weights.data"]


def test_passes_on_a_stored_graph_keep_its_weights_stored(tmp_path: Path) -> None:
    """Every pass and patch runs on the stored graph (onnx_ir reads the stored tensors);
    the weights the passes make go to the store; the result computes what the in-memory
    passes' result computes."""
    model, _ = _conv_model()
    store = WeightStore(tmp_path / "store")
    in_memory, memory_records = run_passes(model, default_passes(), _inputs())
    fixed, records = run_passes(_stored(model, store), default_passes(), _inputs(), store=store)
    assert [r.status for r in records] == [r.status for r in memory_records]
    assert "variable_layout" in [r.name for r in records if r.status == "applied"]
    assert not [
        t.name
        for t in fixed.graph.initializer
        if onnx_io.stored_file(t) is None and onnx_io.tensor_bytes(t) >= 1024
    ]
    # the same graph, weight for weight
    assert fixed.graph.node == in_memory.graph.node
    assert [t.name for t in fixed.graph.initializer] == [t.name for t in in_memory.graph.initializer]
    for got, want in zip(fixed.graph.initializer, in_memory.graph.initializer, strict=True):
        assert np.array_equal(onnx_io.array(got), onnx_io.array(want)), got.name


def test_onnx2torch_imports_a_stored_graph_as_the_in_memory_one(tmp_path: Path) -> None:
    model, _ = _conv_model()
    stored = _stored(model, WeightStore(tmp_path / "store"))
    x = torch.from_numpy(_inputs()["x"])
    with torch.no_grad():
        want = import_onnx(model)(x)
        got = import_onnx(stored)(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_weight_store_only_for_large_weights_and_always_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with weight_store(tmp_path, 10) as none:
        assert none is None
    monkeypatch.setenv(STORE_ENV, "10")
    with pytest.raises(RuntimeError), weight_store(tmp_path, 10) as store:
        assert store is not None and store.directory.is_dir()
        raise RuntimeError("a stage failed")
    assert list(tmp_path.iterdir()) == []


def test_convert_with_a_store_passes_like_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Keras CNN converted with its graphs' weights in a store (threshold 1 byte): the
    same verdict, torch numbers and gradients as in memory; no store left beside the run."""
    source = f"{REPO}/models/zoo.py:cnn"
    memory = convert(source, tmp_path / "memory", ConvertOptions())
    monkeypatch.setenv(STORE_ENV, "1")
    stored = convert(source, tmp_path / "stored", ConvertOptions())
    assert stored.verdict == memory.verdict == "pass"
    assert stored.report["parameter_count"]["status"] == "full"
    for a, b in zip(stored.report["comparisons"], memory.report["comparisons"], strict=True):
        assert (a["pair"], a["output"]) == (b["pair"], b["output"])
        if a["pair"] == "tf-torch":  # the same torch weights: the same numbers
            assert a["max_abs"] == b["max_abs"]
        # ONNX Runtime reads a stored graph from a file, without pre-packing: its float32
        # sums round differently, each side within the gate
    assert [(g["tf_name"], g["max_abs"], g["pass"]) for g in stored.report["gradients"]] == [
        (g["tf_name"], g["max_abs"], g["pass"]) for g in memory.report["gradients"]
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memory", "stored"]
    assert not any(name.startswith(".") for name in os.listdir(tmp_path))


def test_parked_module_frees_its_weights_and_gets_them_back_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 8, dtype=torch.bfloat16)
    )
    module[1].running_mean.uniform_()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    weight = module[0].weight
    store = WeightStore(tmp_path / "store")
    with store.parked(module):
        assert all(t.numel() == 0 for t in module.state_dict().values())
    assert module[0].weight is weight and weight.requires_grad
    after = module.state_dict()
    for name, value in before.items():
        assert after[name].dtype == value.dtype and torch.equal(after[name], value), name
    assert [p.name for p in store.directory.iterdir()] == ["weights.data"]


def test_offload_moves_a_raw_graphs_external_data_into_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A graph past 2 GB comes with external data beside the raw file: offloading moves it
    into the store too, so the checker and ONNX Runtime find one data file beside the graph
    written for them (the checker refuses hard links)."""
    monkeypatch.setenv(onnx_io.THRESHOLD_ENV, "1000")
    model, weights = _conv_model()
    onnx_io.save(model, tmp_path / "raw.onnx")
    raw = onnx_io.load(tmp_path / "raw.onnx")
    assert {onnx_io.stored_file(t) for t in raw.graph.initializer} >= {
        (tmp_path / "raw.onnx.data").resolve()
    }
    store = WeightStore(tmp_path / "store")
    store.offload(raw.graph.initializer)
    assert {onnx_io.stored_file(t) for t in raw.graph.initializer} == {None, store.data}
    with onnx_io.readable_file(raw) as path:
        onnx.checker.check_model(str(path), full_check=True)
    for tensor in raw.graph.initializer:
        assert np.array_equal(onnx_io.array(tensor), weights[tensor.name])
