"""The LLM-scale memory path on small models: npz files streamed and read lazily, ONNX with
external data, ONNX Runtime reading large weights from a file, float64 measured in place
and gradients in groups (issue 27).  Each test runs the path the threshold would pick for a
large model, on a model small enough to check exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from pipeline.core import onnx_io, ort_runner
from pipeline.core.run_dir import LazyNpz, read_npz, write_npz
from pipeline.core.weight_store import STORE_ENV
from pipeline.verify import noise

REPO = Path(__file__).resolve().parents[2]


def _mlp(seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    weights = {
        "w1": rng.standard_normal((16, 64)).astype(np.float32),
        "b1": rng.standard_normal(64).astype(np.float32),
        "w2": rng.standard_normal((64, 8)).astype(np.float32),
        "shape": np.array([2, 8], np.int64),  # small: stays inside the graph
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y0"]),
        helper.make_node("Reshape", ["y0", "shape"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model, weights


def _reference(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    h = np.maximum(x.astype(np.float64) @ weights["w1"] + weights["b1"], 0)
    return h @ weights["w2"]


def test_write_npz_streams_pairs_one_at_a_time(tmp_path: Path) -> None:
    made: list[str] = []

    def pairs():  # type: ignore[no-untyped-def]
        for i in range(3):
            assert len(made) == i  # the previous array is already written
            made.append(f"a/{i}")
            yield f"a/{i}", np.full((i + 1, 2), i, np.float32)

    path = tmp_path / "x.npz"
    write_npz(path, pairs())
    assert made == ["a/0", "a/1", "a/2"]
    with np.load(path) as npz:  # numpy's own reader
        assert sorted(npz.files) == made
        assert np.array_equal(npz["a/2"], np.full((3, 2), 2, np.float32))


def test_write_npz_leaves_no_file_when_the_pairs_fail(tmp_path: Path) -> None:
    def pairs():  # type: ignore[no-untyped-def]
        yield "ok", np.zeros(3)
        raise RuntimeError("worker died")

    with pytest.raises(RuntimeError):
        write_npz(tmp_path / "x.npz", pairs())
    assert list(tmp_path.iterdir()) == []


def test_lazy_npz_reads_after_the_file_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    write_npz(path, {"value/0": np.arange(4.0), "grad/0": np.ones(2)})
    lazy = LazyNpz(path)
    path.unlink()
    assert "grad/0" in lazy and "grad/1" not in lazy
    assert np.array_equal(lazy.sequence(["value/0"])[0], np.arange(4.0))
    assert np.array_equal(lazy.view({"kernel": "grad/0"})["kernel"], np.ones(2))
    lazy.close()


def test_save_streams_one_file_that_loads_as_the_same_model(tmp_path: Path) -> None:
    model, _ = _mlp()
    model.metadata_props.add(key="tf2torch", value="provenance")
    onnx_io.save(model, tmp_path / "m.onnx")
    back = onnx.load(str(tmp_path / "m.onnx"))
    assert back.SerializeToString(deterministic=True) == model.SerializeToString(
        deterministic=True
    )


def test_save_writes_external_data_past_the_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, weights = _mlp()
    onnx_io.save(model, tmp_path / "small.onnx")
    assert not (tmp_path / "small.onnx.data").exists()

    monkeypatch.setenv(onnx_io.THRESHOLD_ENV, "1000")
    onnx_io.save(model, tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").stat().st_size >= weights["w1"].nbytes
    # the in-memory model is left whole, and the file reads back equal
    assert np.array_equal(numpy_helper.to_array(model.graph.initializer[0]), weights["w1"])
    loaded = onnx.load(str(tmp_path / "big.onnx"))
    for tensor in loaded.graph.initializer:
        assert np.array_equal(numpy_helper.to_array(tensor), weights[tensor.name])
    # a second save over it starts a new data file rather than appending to the old one
    size = (tmp_path / "big.onnx.data").stat().st_size
    onnx_io.save(model, tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").stat().st_size == size


def test_ort_reads_large_weights_from_an_external_file(monkeypatch: pytest.MonkeyPatch) -> None:
    model, weights = _mlp()
    x = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)
    monkeypatch.setattr(ort_runner, "SEPARATE_WEIGHTS_BYTES", 0)
    got = ort_runner.OrtRunner(model).run({"x": x})["y"]
    assert np.allclose(got, _reference(weights, x), rtol=1e-5, atol=1e-5)
    model.ir_version = 13  # newer than ONNX Runtime reads: clamped in the written graph
    assert np.allclose(ort_runner.OrtRunner(model).run({"x": x})["y"], got, rtol=0, atol=0)


def test_with_external_weights_keeps_small_tensors_inline(tmp_path: Path) -> None:
    model, _ = _mlp()
    path = onnx_io.with_external_weights(model, tmp_path)
    written = onnx.load(str(path), load_external_data=False)
    external = {
        t.name for t in written.graph.initializer if t.data_location == TensorProto.EXTERNAL
    }
    assert external == {"w1", "w2"}  # b1 (256 bytes) and shape stay in the graph
    onnx.checker.check_model(str(path), full_check=True)


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(6, 32)
        self.b = torch.nn.Linear(32, 3)
        self.register_buffer("scale", torch.tensor([0.5, 2.0, 1.5], dtype=torch.float16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x))) * self.scale.float()


def test_widened_in_place_restores_every_tensor_exactly() -> None:
    net = _Net()
    net.b.bias.requires_grad_(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    weight = net.a.weight
    with noise.widened_in_place(net) as wide:
        assert wide is net and net.a.weight.dtype == torch.float64
        assert net.scale.dtype == torch.float64
    assert net.a.weight is weight  # the same Parameter: optimizers and tables still hold it
    assert not net.b.bias.requires_grad and net.a.weight.requires_grad
    after = net.state_dict()
    for name, value in before.items():
        assert after[name].dtype == value.dtype and torch.equal(after[name], value), name


def test_gradient_floors_in_groups_equal_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    net = _Net()
    inputs = {"x": np.random.default_rng(2).standard_normal((4, 6)).astype(np.float32)}
    weights = {"y": np.random.default_rng(3).standard_normal((4, 3)).astype(np.float32)}
    from pipeline.verify.gradients import torch_gradients

    low = torch_gradients(net, inputs, ["x"], ["y"], weights)
    monkeypatch.setattr(noise, "GRADIENT_GROUP_FRACTION", 1.0)
    whole = noise.measure_gradient_noise(net, inputs, ["x"], ["y"], weights, low)
    monkeypatch.setattr(noise, "GRADIENT_GROUP_FRACTION", 1e-9)  # one parameter per group
    grouped = noise.measure_gradient_noise(net, inputs, ["x"], ["y"], weights, low)
    assert set(whole) == {"a.weight", "a.bias", "b.weight", "b.bias"}
    assert whole == grouped
    assert all(floor.noise > 0 for floor in whole.values())  # float32 does round here
    assert net.a.weight.dtype == torch.float32


def test_convert_with_external_data_then_check(tmp_path: Path) -> None:
    """The whole pipeline on the path of a model past 2 GB: raw and fixed graphs written with
    external data (the threshold lowered to 1 kB) and the graphs' weights kept in a weight
    store (threshold 1 byte); the run passes, and `check` re-reads it."""
    env = {**os.environ, onnx_io.THRESHOLD_ENV: "1024", STORE_ENV: "1"}
    run = tmp_path / "run"
    convert = subprocess.run(
        [sys.executable, "-m", "pipeline", "convert", f"{REPO}/models/zoo.py:cnn", "-o", str(run), "-q"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert convert.returncode == 0, convert.stdout + convert.stderr
    assert (run / "model.raw.onnx.data").is_file() and (run / "model.onnx.data").is_file()
    fixed = onnx.load(str(run / "model.onnx"), load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in fixed.graph.initializer)
    check = subprocess.run(
        [sys.executable, "-m", "pipeline", "check", str(run), "--golden-only", "--read-only"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no store left
    golden = read_npz(run / "golden.npz")
    assert any(k.startswith("output/") for k in golden)


def test_floor_in_chunks_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    high = rng.standard_normal((7, 11))
    low = (high + rng.standard_normal(high.shape) * 1e-6).astype(np.float32)
    low[2, 3], high[5, 1], low[6, 10] = np.nan, np.inf, -np.inf  # skipped on either side
    whole = noise._floor(low, high)
    monkeypatch.setattr(noise, "FLOOR_CHUNK", 3)
    assert noise._floor(low, high) == whole and whole is not None
    assert noise._floor(np.full(4, np.nan, np.float32), np.zeros(4)) is None
