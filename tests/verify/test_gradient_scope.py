"""The gradient stage never crashes: what it differentiates, what it skips and why, and on
which device (fast: no TensorFlow, no conversion)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.core import compare
from pipeline.core.torch_runner import module_device, place_module, positional_args
from pipeline.to_torch.parameters import ParameterEntry
from pipeline.verify.gradients import (
    compare_gradients,
    fixed_loss,
    gradient_scope,
    torch_gradients,
)

FLOAT = np.zeros((2, 3), np.float32)
INT = np.zeros((2,), np.int64)
BOOL = np.zeros((2, 3), bool)
DENSE = [{"path": "dense/kernel", "trainable": True}, {"path": "dense/bias", "trainable": True}]
GRADS = {"dense/kernel": np.ones((4, 3)), "dense/bias": np.ones(3)}


def test_a_model_without_trainable_variables_is_skipped_with_the_reason() -> None:
    frozen = [{"path": "bn/moving_mean", "trainable": False}]
    for variables in ([], frozen):
        scope = gradient_scope(variables, {"y": FLOAT}, {})
        assert scope.skipped == "the model has no trainable variables"
        assert scope.to_json()["status"] == "skipped"


def test_integer_and_boolean_outputs_only_are_skipped_naming_them() -> None:
    scope = gradient_scope(DENSE, {"label": INT, "mask": BOOL}, {})
    assert scope.skipped is not None
    assert "no floating-point output" in scope.skipped
    assert "label (int64)" in scope.skipped and "mask (bool)" in scope.skipped
    assert scope.outputs == [] and scope.excluded == {"label": "int64", "mask": "bool"}


def test_mixed_outputs_are_checked_and_the_integer_ones_listed() -> None:
    scope = gradient_scope(DENSE, {"logits": FLOAT, "label": INT}, GRADS)
    assert scope.skipped is None
    assert scope.outputs == ["logits"] and scope.excluded == {"label": "int64"}
    assert scope.to_json() == {
        "status": "checked",
        "reason": None,
        "outputs": ["logits"],
        "excluded_outputs": {"label": "int64"},
    }


def test_outputs_that_depend_on_no_variable_are_skipped() -> None:
    scope = gradient_scope(DENSE, {"passthrough": FLOAT}, {})
    assert scope.skipped == "no floating-point output depends on a trainable variable"


def test_tensorflow_failing_to_differentiate_is_the_reason() -> None:
    scope = gradient_scope(DENSE, {"y": FLOAT}, {}, "LookupError: no gradient for Foo")
    assert (
        scope.skipped
        == "TensorFlow cannot differentiate the model: LookupError: no gradient for Foo"
    )


class _Detached(torch.nn.Module):
    """A module whose output does not depend on its parameter (a converter that turned a
    weight into a constant would look like this)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0


def test_a_loss_that_reaches_no_parameter_fails_loudly_instead_of_crashing() -> None:
    inputs = {"x": np.ones((2, 3), np.float32)}
    weights = {"y": np.ones((2, 3), np.float32)}
    grads = torch_gradients(_Detached(), inputs, ["x"], ["y"], weights)
    assert grads == {}
    entry = ParameterEntry(
        tf_name="scale", torch_name="weight", shape=[3], trainable=True, transform="identity"
    )
    [result] = compare_gradients(
        [entry], {"scale": np.full(3, 2.0)}, grads, compare.DTYPE_DEFAULTS["float32"]
    )
    assert result.checked and not result.passed and result.max_abs == pytest.approx(2.0)


def test_the_loss_is_built_on_the_module_device() -> None:
    """With the module on ``meta`` (a stand-in for CUDA on a CPU machine) every tensor of the
    loss must follow it: an input or weight left on the CPU raises a device mismatch."""
    module = torch.nn.Linear(3, 2)
    assert place_module(module, torch.device("meta")) == torch.device("meta")
    assert module_device(module) == torch.device("meta")
    inputs = {"x": np.ones((4, 3), np.float32)}
    [arg] = positional_args(inputs, ["x"], module_device(module))
    assert arg.device == torch.device("meta") and arg.shape == (4, 3)
    loss = fixed_loss(module, inputs, ["x"], ["y"], {"y": np.ones((4, 2), np.float32)})
    assert loss.device == torch.device("meta") and loss.requires_grad
    loss.backward()
    assert module.weight.grad is not None and module.weight.grad.device == torch.device("meta")


def test_a_module_without_tensors_runs_on_the_cpu() -> None:
    assert module_device(torch.nn.ReLU()) == torch.device("cpu")
    assert place_module(torch.nn.ReLU(), torch.device("cpu")) == torch.device("cpu")
