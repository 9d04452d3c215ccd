"""``pipeline.testing.assert_equivalent``: passes the converted model, explains a failure.

The run-directory tests use a real conversion (``pipeline.convert`` of a zoo model); the
message-format tests use a small hand-made torch module against reference outputs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import pipeline
from pipeline.core.errors import BadInputError
from pipeline.testing import assert_equivalent

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "scale_layer_net"
    result = pipeline.convert(f"{REPO}/models/zoo.py:scale_layer_net", out)
    assert result.verdict == "pass"
    return out


def _golden(run: Path) -> dict[str, np.ndarray]:
    with np.load(run / "golden.npz") as npz:
        return {k: npz[k] for k in npz.files}


def test_converted_model_matches_its_run(run: Path) -> None:
    module = pipeline.load_torch(run)
    comparisons = assert_equivalent(run, module)  # golden inputs, the run's tolerances
    assert [(c.pair, c.output) for c in comparisons] == [("reference-torch", "logits")]
    assert all(c.passed for c in comparisons)
    assert_equivalent(run / "golden.npz", module)


def test_reference_outputs_and_inputs_in_every_form(run: Path) -> None:
    module = pipeline.load_torch(run)
    golden = _golden(run)
    x, logits = golden["input/x"], golden["output/logits"]
    assert_equivalent({"logits": logits}, module, {"x": x})
    assert_equivalent({"logits": torch.from_numpy(logits)}, module, [torch.from_numpy(x)])
    assert_equivalent(logits, module, x)
    assert_equivalent(run, module, {"x": x})


def test_perturbed_weights_fail_with_the_worst_element(run: Path) -> None:
    module = pipeline.load_torch(run)
    with torch.no_grad():
        dict(module.named_parameters())["dense_in.weight"].mul_(1 + 1e-3)
    with pytest.raises(AssertionError) as info:
        assert_equivalent(run, module, msg="fine-tuned checkpoint drifted")
    message = str(info.value)
    assert message.startswith("fine-tuned checkpoint drifted\n")
    assert "torch output 'logits' is not equivalent to" in message
    counted = re.search(r"Mismatched elements: (\d+) / 8 \(", message)
    assert counted and 1 <= int(counted.group(1)) <= 8, message
    assert re.search(
        r"Greatest absolute difference: \S+ at index \(\d, \d\): reference \S+, torch \S+ "
        r"\(relative \S+; up to \S+ allowed there\)",
        message,
    ), message
    assert "Greatest relative difference:" in message
    # The run's tolerance: its float32 noise floor, as convert recorded it.
    floor = json.loads((run / "report.json").read_text())["tolerances"]["noise_floor"]["logits"]
    assert f"atol={floor['atol']:g}, rtol=0 (from the run's float32 noise floor" in message
    # A looser tolerance lets the same drift through.
    assert_equivalent(run, module, atol=1e-2)


def _linear() -> tuple[torch.nn.Module, np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 2).eval()
    x = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    with torch.no_grad():
        y = module(torch.from_numpy(x)).numpy()
    return module, x, y


def test_message_counts_the_differing_elements_and_names_the_worst() -> None:
    module, x, y = _linear()
    expected = y.copy()
    expected[2, 1] += 0.5
    expected[0, 0] += 0.01
    with pytest.raises(AssertionError) as info:
        assert_equivalent({"y": expected}, module, x)
    message = str(info.value)
    assert "Mismatched elements: 2 / 8 (25.0%)" in message
    assert "Greatest absolute difference: 0.5 at index (2, 1)" in message
    assert f"reference {float(expected[2, 1])!r}, torch {float(y[2, 1])!r}" in message


def test_shape_nan_and_count_differences_fail() -> None:
    module, x, y = _linear()
    with pytest.raises(AssertionError, match="shape mismatch"):
        assert_equivalent({"y": y[:, :1]}, module, x)
    with pytest.raises(AssertionError, match="NaN in reference output"):
        bad = y.copy()
        bad[0, 0] = np.nan
        assert_equivalent({"y": bad}, module, x)
    with pytest.raises(AssertionError, match=r"returned 1 output\(s\), the reference has 2"):
        assert_equivalent({"y": y, "z": y}, module, x)
    with pytest.raises(AssertionError, match="did not return it"):
        assert_equivalent({"z": y}, lambda t: {"y": module(t)}, x)


def test_training_mode_is_pointed_out() -> None:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.5))
    x = np.ones((4, 3), np.float32)
    with torch.no_grad():
        reference = module.eval()(torch.from_numpy(x)).numpy()
    assert_equivalent({"out": reference}, module, x)
    module.train()
    with pytest.raises(AssertionError, match=r"training mode: call \.eval\(\) first"):
        assert_equivalent({"out": reference}, module, x)


def test_bad_references_are_refused(run: Path, tmp_path: Path) -> None:
    module, x, y = _linear()
    with pytest.raises(ValueError, match="holds no inputs"):
        assert_equivalent({"y": y}, module)
    with pytest.raises(BadInputError, match=r"neither a run directory nor an \.npz"):
        assert_equivalent(tmp_path / "missing", module, x)
    with pytest.raises(TypeError, match="reference must be a run directory"):
        assert_equivalent(object(), module, x)  # type: ignore[arg-type]
    plain = tmp_path / "outputs.npz"
    np.savez(plain, y=y)
    assert_equivalent(plain, module, x)
