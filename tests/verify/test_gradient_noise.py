"""The gradient pair's noise floor combines both frameworks' own: torch's (a float64 copy of
the module) and TF's (a float64 twin of the Keras model, measured in the worker).  Fast: no
TensorFlow here; the worker's side is in ``test_noise.py``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.core import compare
from pipeline.to_torch.parameters import ParameterEntry
from pipeline.verify.gradients import compare_gradients, torch_gradients
from pipeline.verify.noise import NoiseFloors, own_floors
from pipeline.verify.stage import check_gradients

ENTRY = ParameterEntry(
    tf_name="dense/kernel", torch_name="weight", shape=[4], trainable=True, transform="identity"
)
TF_GRAD = np.array([10.0, -3.0, 0.5, 0.0], np.float32)  # scale 10: fixed atol 1e-4·10 = 1e-3
TORCH_FLOOR = compare.Noise(1e-3, 10.0)
TF_FLOOR = compare.Noise(4e-3, 10.0)


def _judge(error: float, tf_floor: compare.Noise | None) -> tuple[bool, float | None]:
    got = TF_GRAD.astype(np.float64).copy()
    got[1] += error
    [row] = compare_gradients(
        [ENTRY],
        {"dense/kernel": TF_GRAD},
        {"weight": got},
        compare.DTYPE_DEFAULTS["float32"],
        {"weight": TORCH_FLOOR},
        {"dense/kernel": tf_floor} if tf_floor is not None else None,
    )
    assert row.checked and row.noise_floor == TORCH_FLOOR.noise
    return row.passed, row.noise_floor_tf


def test_a_larger_tf_floor_widens_the_check_exactly_as_the_formula_says() -> None:
    eps = float(np.finfo(np.float32).eps)
    combined = compare.Noise(1e-3, 10.0, noise_other=4e-3).tolerance().atol
    # k·(n_torch + n_tf) + f·eps·scale, rounded up to two digits
    assert combined == pytest.approx(0.011)
    assert combined >= compare.NOISE_FACTOR * (1e-3 + 4e-3) + compare.NOISE_EPS_FACTOR * eps * 10
    torch_only = TORCH_FLOOR.tolerance().atol  # k·2·n_torch + …: 4.1e-3
    assert torch_only == pytest.approx(4.1e-3)
    # Within the combined floor: passes with TF's floor, fails on torch's alone.
    assert _judge(0.009, TF_FLOOR) == (True, 4e-3)
    assert _judge(0.009, None) == (False, None)
    # Beyond it: fails however the floor is made up.
    assert _judge(0.0115, TF_FLOOR) == (False, 4e-3)
    assert _judge(0.05, TF_FLOOR)[0] is False


def test_a_smaller_tf_floor_narrows_the_check() -> None:
    quiet = compare.Noise(1e-4, 10.0)  # TF rounds less than torch: (1e-3 + 1e-4)·2 → 2.3e-3
    assert compare.Noise(1e-3, 10.0, noise_other=1e-4).tolerance().atol == pytest.approx(2.3e-3)
    assert _judge(0.003, None)[0] is True  # torch's floor alone: 4.1e-3
    assert _judge(0.003, quiet) == (False, 1e-4)


def test_noise_other_round_trips_through_the_report() -> None:
    floor = compare.Noise(1e-3, 10.0, noise_other=4e-3)
    data = floor.to_json()
    assert data["noise_other"] == 4e-3 and data["atol"] == pytest.approx(0.011)
    assert compare.Noise.from_json(data) == floor
    assert "noise_other" not in TORCH_FLOOR.to_json()


def _linear() -> tuple[torch.nn.Module, dict[str, np.ndarray], dict[str, np.ndarray]]:
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 2, bias=False)
    inputs = {"x": np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)}
    weights = {"y": np.random.default_rng(1).normal(size=(4, 2)).astype(np.float32)}
    return module, inputs, weights


def _check(
    module: torch.nn.Module,
    inputs: dict[str, np.ndarray],
    weights: dict[str, np.ndarray],
    tf_grad: np.ndarray,
    outputs64: dict[str, np.ndarray],
) -> tuple[bool, float | None, str | None]:
    entry = ParameterEntry(
        tf_name="d/kernel", torch_name="weight", shape=[2, 3], trainable=True, transform="identity"
    )
    rows, unmeasured = check_gradients(
        module,
        [entry],
        inputs,
        ["x"],
        ["y"],
        {"d/kernel": tf_grad},
        weights,
        {"d/kernel": compare.Noise(1.0, 1.0)},  # a huge TF floor: only a twin may vouch for it
        outputs64,
        None,
        {},
    )
    [row] = rows
    return row.passed, row.noise_floor_tf, unmeasured


def test_the_tf_floor_is_used_only_where_its_twin_matches_torchs_float64_copy() -> None:
    module, inputs, weights = _linear()
    exact = torch_gradients(module, inputs, ["x"], ["y"], weights)["weight"]
    wrong = exact.astype(np.float32) + 0.5  # a fault far beyond torch's own floor
    with torch.no_grad():
        y64 = module.double()(torch.from_numpy(inputs["x"]).double()).numpy()
    module.float()
    # The twin computes the same function: the (huge) TF floor is used, the fault passes.
    assert _check(module, inputs, weights, wrong, {"y": y64}) == (True, 1.0, None)
    # A twin that is another function (its outputs off): its floor is dropped, saying why.
    passed, floor_tf, why = _check(module, inputs, weights, wrong, {"y": y64 + 0.1})
    assert (passed, floor_tf) == (False, None)
    assert why is not None and "not the same function" in why
    passed, floor_tf, why = _check(module, inputs, weights, wrong, {})
    assert (passed, floor_tf) == (False, None) and why is not None


def _floors(noise: float, exact: np.ndarray) -> NoiseFloors:
    return NoiseFloors(
        {"y": compare.Noise(noise, float(np.max(np.abs(exact))))}, None, {"y": exact}
    )


def test_a_framework_s_own_output_floor_widens_only_its_side_of_each_pair() -> None:
    exact = np.linspace(-3.0, 3.0, 12)
    tf64 = exact + 1e-7  # TF's float64 twin: the same function as torch's float64 run
    noisy_tf32 = exact + 4e-4
    floors = _floors(1e-5, exact)
    own = own_floors({"y": noisy_tf32}, {"y": tf64}, floors)
    assert own == {"y": pytest.approx(4e-4 - 1e-7)}
    tolerances = compare.Tolerances(noise=floors.floors, own_noise={"tf": own})
    tf_ort = tolerances.pair_noise("y", "float32", "tf", "ort")
    ort_torch = tolerances.pair_noise("y", "float32", "ort", "torch")
    golden_tf = tolerances.pair_noise("y", "float32", "golden", "tf")
    assert tf_ort is not None and ort_torch is not None and golden_tf is not None
    assert (tf_ort.noise, tf_ort.noise_other) == (1e-5, own["y"])
    assert tf_ort.tolerance() == compare.Noise(1e-5, 3.0, noise_other=own["y"]).tolerance()
    assert ort_torch.tolerance() == compare.Noise(1e-5, 3.0).tolerance()
    assert tf_ort.tolerance().atol > ort_torch.tolerance().atol
    assert golden_tf.tolerance() == compare.Noise(own["y"], 3.0).tolerance()  # TF both sides
    # A user tolerance wins over every floor.
    assert (
        compare.Tolerances(atol=1e-3, noise=floors.floors).pair_noise("y", "float32", "tf", "ort")
        is None
    )
    # TF quieter than torch: torch's floor stands (no narrowing)
    assert own_floors({"y": exact + 1e-6}, {"y": tf64}, floors) == {}
    # a twin that is not the same function is not trusted, however noisy TF looks
    assert own_floors({"y": noisy_tf32}, {"y": exact + 0.1}, floors) == {}
