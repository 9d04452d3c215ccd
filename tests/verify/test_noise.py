"""The float32 noise model: quiet where float32 itself is noisy, sharp on real faults.

Real stack, nothing mocked.  ``deep_tanh_mlp`` (tests/verify/noisy_models.py) is a small
model whose float32 noise is several times 1e-4 on O(1) outputs, as ResNet50's is: the fixed
1e-4 tolerance fails its correct conversion, the noise model passes it, and a 1e-3 weight
change, a zeroed bias or swapped input channels still fail.  The slow tests do the same on
``keras.applications.ResNet50`` (96x96, calibrated BatchNorm).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from mutations import MUTATIONS, Mutation, plant
from onnx import TensorProto, helper, numpy_helper

import pipeline
import pipeline.api
from pipeline.cli import main
from pipeline.core import compare
from pipeline.verify.check import check_run
from pipeline.verify.noise import measure_gradient_noise, measure_noise

REPO = Path(__file__).resolve().parents[2]
NOISY = f"{REPO}/tests/verify/noisy_models.py"
ALL_PAIRS = {"tf-ort", "tf-torch", "ort-torch"}
_PT2, _ONNX = "model.pt2", "model.onnx"
# Pairs that involve the mutated artifact must fail, the one that does not must still pass.
FAILING = {_PT2: {"tf-torch", "ort-torch"}, _ONNX: {"tf-ort", "ort-torch"}}


def _convert(factory: str, out: Path) -> Path:
    result = pipeline.convert(f"{NOISY}:{factory}", out)
    assert result.verdict == "pass", (result.report["comparisons"], result.report["gradients"])
    return out


def _report(run: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run / "report.json").read_text())
    return data


def _copy(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / run.name
    shutil.copytree(run, target)
    return target


def _failed_pairs(run: Path) -> set[str]:
    return {c["pair"] for c in _report(run)["comparisons"] if not c["pass"]}


# --- finding a layer's tensors by structure, not by name -------------------------------------


def _initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    (init,) = [i for i in model.graph.initializer if i.name == name]
    return init


def _edit(model: onnx.ModelProto, name: str, edit: Callable[[np.ndarray], np.ndarray]) -> None:
    init = _initializer(model, name)
    init.CopyFrom(numpy_helper.from_array(edit(numpy_helper.to_array(init).copy()), name))


def _weight_of(model: onnx.ModelProto, op_types: tuple[str, ...], index: int) -> str:
    """The initializer weight (input 1) of the ``index``-th node of ``op_types``."""
    initializers = {i.name for i in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in op_types and n.input[1] in initializers]
    return nodes[index].input[1]


def _bias_after(model: onnx.ModelProto, op_types: tuple[str, ...], index: int) -> str:
    """The initializer added to the output of the ``index``-th ``op_types`` node."""
    initializers = {i.name for i in model.graph.initializer}
    weight = _weight_of(model, op_types, index)
    (node,) = [n for n in model.graph.node if n.op_type in op_types and n.input[1] == weight]
    if node.op_type == "Gemm" and len(node.input) > 2:
        return node.input[2]
    (add,) = [n for n in model.graph.node if n.op_type == "Add" and node.output[0] in n.input]
    (bias,) = [i for i in add.input if i in initializers]
    return bias


def _mutate_onnx(run: Path, edit: Callable[[onnx.ModelProto], None]) -> None:
    model = onnx.load(str(run / _ONNX))
    edit(model)
    onnx.save(model, str(run / _ONNX))


def _mutate_pt2(run: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    program = torch.export.load(str(run / _PT2))
    with torch.no_grad():
        edit(program.state_dict)
    torch.export.save(program, str(run / _PT2))


def _swap_first_two(array: np.ndarray, axis: int) -> np.ndarray:
    return np.take(array, [1, 0, *range(2, array.shape[axis])], axis=axis)


def _assert_caught(run: Path, artifact: str) -> None:
    assert main(["check", str(run), "--golden-only"]) == 1
    assert _failed_pairs(run) == FAILING[artifact]
    report = _report(run)
    assert report["verdict"] == "fail"
    failed = [c for c in report["comparisons"] if not c["pass"]]
    # Caught by the noise model itself, not by a fixed tolerance.
    assert all(c["noise_floor"] is not None and c["rtol"] == 0 for c in failed)


# --- a small model with ResNet50-sized float32 noise (default suite) -------------------------


@pytest.fixture(scope="module")
def deep_tanh_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _convert("deep_tanh_mlp", tmp_path_factory.mktemp("runs") / "deep_tanh_mlp")


def test_noise_far_above_1e4_passes_where_a_fixed_tolerance_cries_wolf(
    deep_tanh_run: Path, tmp_path: Path
) -> None:
    run = _copy(deep_tanh_run, tmp_path)
    report = _report(run)
    assert report["schema"] == "tf2torch.report/1.1"
    floor = report["tolerances"]["noise_floor"]["logits"]
    assert floor["noise"] > 1e-4  # float32 vs float64 on this model: ResNet50-sized
    pairs = {c["pair"]: c for c in report["comparisons"]}
    assert set(pairs) == ALL_PAIRS
    # Each side of a pair rounds as its own framework does: the module the user gets
    # (nn.Linear's fused addmm) rounds more than onnx2torch's plain import whose floor is
    # the graph's, so torch's own floor was measured above it and sets torch's side.
    own = report["tolerances"]["noise_own"]
    assert own["torch"]["logits"] > floor["noise"]

    def side(framework: str) -> float:
        return float(max(floor["noise"], own.get(framework, {}).get("logits", 0.0)))

    for name, c in pairs.items():
        ref, other = name.split("-")
        expected = compare.Noise(side(other), floor["scale"], noise_other=side(ref))
        assert c["pass"] and c["rtol"] == 0, c
        assert c["noise_floor"] == side(other) and c["atol"] == expected.tolerance().atol
    assert max(c["max_abs"] for c in pairs.values()) > 1e-4
    # Every gradient is judged against its own float32 noise floor, and agrees.
    checked = [g for g in report["gradients"] if g["checked"]]
    assert checked and all(g["pass"] and g["noise_floor"] is not None for g in checked)
    # The same outputs under the old fixed tolerance (atol = rtol = 1e-4): a false alarm.
    args = ["check", str(run), "--golden-only", "--read-only"]
    assert main([*args, "--atol", "1e-4", "--rtol", "1e-4"]) == 1
    for _ in range(3):
        result = check_run(run, golden_only=True)
        assert result, [str(c) for c in result.failures]
    assert [c["verdict"] for c in _report(run)["checks"]] == ["pass"] * 3


def test_tf_measures_its_own_gradient_floor_and_the_report_records_it(
    deep_tanh_run: Path,
) -> None:
    report = _report(deep_tanh_run)
    assert report["gradient_check"]["tf_noise_unmeasured"] is None
    checked = [g for g in report["gradients"] if g["checked"]]
    assert checked and all(g["noise_floor_tf"] is not None for g in checked)
    # 24 chaotic tanh layers: TF's float32 gradients are far from its float64 twin's too.
    assert max(g["noise_floor_tf"] for g in checked) > 1e-3


def test_tf_float64_twin_is_built_through_bare_operations(tmp_path: Path) -> None:
    """MobileNetV3's hard-swish is ``x + 3.0`` and ``* (1 / 6)`` on Keras tensors: bare
    operations, not layers, that take no dtype.  The twin must still be built (without it
    TF's own floor is missing, and the corpus' MobileNetV3Small at seed 1 failed 16
    gradients by exactly TF's float32-vs-float64 distance, a ReLU kink TF's float32 flips)."""
    report = _report(_convert("hard_swish_mlp", tmp_path / "run"))
    assert report["gradient_check"]["tf_noise_unmeasured"] is None
    checked = [g for g in report["gradients"] if g["checked"]]
    assert len(checked) == 4 and all(g["noise_floor_tf"] is not None for g in checked)


def test_gradient_faults_fail_even_against_both_frameworks_floors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two faults planted after the outputs were compared, in one conversion:

    - two hidden kernels' torch names swapped in the parameter table: the module is intact,
      so TF's float64 twin matches its float64 copy and TF's floor is used, yet the
      gradients land on the wrong parameters and fail;
    - the torch module's logits kernel times 1.5: every hidden layer's backward signal is off
      by half.  The module is then another function than TF's twin, so TF's floor is
      dropped (the report says why) and the gradients fail against torch's floor.
    """
    real = pipeline.api.check_gradients
    swapped_checks = []

    def faulty(module: torch.nn.Module, parameters: list[Any], *args: Any) -> Any:
        by_tf = {e.tf_name: e for e in parameters}
        a, b = by_tf["dense_20/kernel"], by_tf["dense_21/kernel"]
        swapped = [
            dataclasses.replace(e, torch_name=b.torch_name)
            if e is a
            else dataclasses.replace(e, torch_name=a.torch_name)
            if e is b
            else e
            for e in parameters
        ]
        swapped_checks.append(real(module, swapped, *args))
        [weight] = [p for n, p in module.named_parameters() if "logits" in n and p.ndim == 2]
        with torch.no_grad():
            weight.mul_(1.5)
        return real(module, parameters, *args)

    monkeypatch.setattr(pipeline.api, "check_gradients", faulty)
    result = pipeline.convert(f"{NOISY}:deep_tanh_mlp", tmp_path / "run")

    [(swap_rows, swap_unmeasured)] = swapped_checks
    assert swap_unmeasured is None  # TF's floor measured and trusted
    rows = {g.tf_name: g for g in swap_rows}
    for name in ("dense_20/kernel", "dense_21/kernel"):
        assert rows[name].noise_floor_tf is not None and not rows[name].passed
    assert rows["dense_22/kernel"].passed and rows["dense_19/kernel"].passed

    assert result.verdict == "fail"
    assert all(c["pass"] for c in result.report["comparisons"])
    why = result.report["gradient_check"]["tf_noise_unmeasured"]
    assert why is not None and "not the same function" in why
    rows_json = {g["tf_name"]: g for g in result.report["gradients"]}
    assert rows_json["dense_23/bias"]["noise_floor_tf"] is None
    assert not rows_json["dense_23/bias"]["pass"] and not rows_json["dense_23/kernel"]["pass"]
    assert rows_json["logits/bias"]["pass"]  # d(loss)/d(bias) = sum(w): the kernel is not in it


def _first_dense_onnx(
    edit: Callable[[np.ndarray], np.ndarray], bias: bool = False
) -> Callable[[onnx.ModelProto], None]:
    def apply(model: onnx.ModelProto) -> None:
        find = _bias_after if bias else _weight_of
        _edit(model, find(model, ("MatMul", "Gemm"), 0), edit)

    return apply


# deep_tanh_mlp: x[16] -> dense_0 (16 -> 64) -> ... ; model.pt2 holds torch layouts
# (Linear weight [out, in]), model.onnx Keras's ([in, out]).
MLP_MUTATIONS: dict[str, tuple[str, Callable[[Any], None]]] = {
    "weight_1e-3_pt2": (_PT2, lambda sd: sd["dense_0.weight"].mul_(1 + 1e-3)),
    "weight_1e-3_onnx": (_ONNX, _first_dense_onnx(lambda w: w * (1 + 1e-3))),
    "bias_zeroed_pt2": (_PT2, lambda sd: sd["dense_0.bias"].zero_()),
    "bias_zeroed_onnx": (_ONNX, _first_dense_onnx(np.zeros_like, bias=True)),
    "input_channels_swapped_pt2": (
        _PT2,
        lambda sd: sd["dense_0.weight"].copy_(sd["dense_0.weight"][:, [1, 0, *range(2, 16)]]),
    ),
    "input_channels_swapped_onnx": (
        _ONNX,
        _first_dense_onnx(lambda w: _swap_first_two(w, axis=0)),
    ),
}


@pytest.mark.parametrize("mutation", list(MLP_MUTATIONS))
def test_noise_model_still_catches_mutations(
    mutation: str, deep_tanh_run: Path, tmp_path: Path
) -> None:
    artifact, edit = MLP_MUTATIONS[mutation]
    run = _copy(deep_tanh_run, tmp_path)
    (_mutate_pt2 if artifact == _PT2 else _mutate_onnx)(run, edit)
    _assert_caught(run, artifact)


def test_check_measures_the_floor_for_a_run_converted_before_it_was_recorded(
    deep_tanh_run: Path, tmp_path: Path
) -> None:
    run = _copy(deep_tanh_run, tmp_path)
    report = _report(run)
    recorded = report["tolerances"]["noise_floor"]
    recorded_own = report["tolerances"]["noise_own"]
    for key in ("noise_floor", "noise_model", "noise_unmeasured", "noise_own"):
        del report["tolerances"][key]
    for comparison in report["comparisons"]:
        del comparison["noise_floor"], comparison["noise_floor_other"]
    (run / "report.json").write_text(json.dumps(report))
    result = check_run(run, golden_only=True)
    assert result, [str(c) for c in result.failures]
    refreshed = _report(run)["tolerances"]
    # Measured again from model.onnx, model.pt2 and ONNX Runtime on the golden inputs: the
    # same floors convert recorded.
    noise = refreshed["noise_floor"]["logits"]["noise"]
    assert noise == pytest.approx(recorded["logits"]["noise"], rel=1e-6)
    assert refreshed["noise_own"].keys() == recorded_own.keys()
    for framework, floors in recorded_own.items():
        assert refreshed["noise_own"][framework]["logits"] == pytest.approx(floors["logits"])


# --- the measurement itself, without TensorFlow ------------------------------------------------


def test_float64_reference_does_not_round_where_the_graph_casts_down() -> None:
    """y = Cast(Cast(x @ W, float16), float32): the float32 run rounds to float16 in the
    middle; the float64 reference must not (its casts become float64), so the floor is the
    float16 rounding error, ~2**-11 relative, and not 0."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(8, 4)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("Cast", ["h"], ["h16"], to=TensorProto.FLOAT16),
            helper.make_node("Cast", ["h16"], ["y"], to=TensorProto.FLOAT),
        ],
        "cast_down",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = rng.normal(size=(3, 8)).astype(np.float32)
    floors = measure_noise(model, {"x": x}, ["x"], ["y"])
    assert floors.unmeasured is None
    exact = x.astype(np.float64) @ weight.astype(np.float64)
    expected = np.abs(exact.astype(np.float16).astype(np.float64) - exact).max()
    floor = floors.floors["y"]
    assert floor.noise == pytest.approx(expected, rel=1e-3)
    assert floor.noise > 1e-4 * floor.scale
    assert floor.scale == pytest.approx(np.abs(exact).max(), rel=1e-12)


class _Float32State(torch.nn.Module):
    """Makes a float32 state tensor in forward, as an exported LSTM's initial state."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 12).reshape(3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = torch.ones(x.shape[0], 3, dtype=torch.float32)
        return torch.mm(state, self.weight) * x.sum(dim=1, keepdim=True)


def test_gradient_floor_is_measured_through_float32_constants_in_an_exported_graph() -> None:
    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    program = torch.export.export(_Float32State(), (torch.from_numpy(x),))
    module = program.module()
    weights = {"y": np.ones((2, 4))}
    # A float32 "gradient" of zeros: the floor is then the float64 gradient's size.
    low = {name: np.zeros(tuple(p.shape), np.float32) for name, p in module.named_parameters()}
    floors = measure_gradient_noise(module, {"x": x}, ["x"], ["y"], weights, low)
    assert set(floors) == {"weight"}
    # y = (1 W) * rowsum(x): d(sum(y))/dW is sum(x) in every element (mm of a float32
    # state with a float64 weight would raise, had the ``ones`` stayed float32).
    expected = abs(float(x.astype(np.float64).sum()))
    assert floors["weight"].noise == pytest.approx(expected, rel=1e-12)
    assert next(module.parameters()).dtype == torch.float32  # the original is untouched


# --- ResNet50 (slow) ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet50_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _convert("resnet50", tmp_path_factory.mktemp("runs") / "resnet50")


@pytest.mark.slow
def test_resnet50_passes_convert_and_three_checks(resnet50_run: Path, tmp_path: Path) -> None:
    run = _copy(resnet50_run, tmp_path)
    report = _report(run)
    floor = report["tolerances"]["noise_floor"]["predictions"]
    assert floor["noise"] > 1e-4  # measured 1.8e-4 on logits with max |logit| 5.8
    assert all(c["pass"] and c["noise_floor"] is not None for c in report["comparisons"])
    assert main(["check", str(run), "--golden-only", "--read-only", "--atol", "1e-4"]) == 1
    for _ in range(3):
        result = check_run(run, golden_only=True)
        assert result, [str(c) for c in result.failures]


@pytest.mark.slow
@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.name)
def test_resnet50_mutations_are_caught(
    mutation: Mutation, resnet50_run: Path, tmp_path: Path
) -> None:
    """The corpus's planted faults (tests/mutations.py).  Measured effect of a 1e-3 change
    on the logits against the pair tolerance 7.4e-4: first conv 0.49, dense 5.9e-3."""
    outcome = plant(_copy(resnet50_run, tmp_path), mutation)
    assert outcome.caught and outcome.untouched_passes, outcome


@pytest.mark.slow
def test_resnet50_softmax_over_the_wrong_axis_is_caught(tmp_path: Path) -> None:
    """ResNet50 ending in softmax over 1000 classes; over the batch axis (2 rows) it differs."""
    run = _convert("resnet50_softmax", tmp_path / "resnet50_softmax")

    def batch_axis(model: onnx.ModelProto) -> None:
        (softmax,) = [n for n in model.graph.node if n.op_type == "Softmax"]
        del softmax.attribute[:]
        softmax.attribute.append(helper.make_attribute("axis", 0))

    _mutate_onnx(run, batch_axis)
    _assert_caught(run, _ONNX)
