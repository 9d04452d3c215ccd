"""pipeline.training without TensorFlow: configs, schedules, clipping, BatchNorm, losses, and
why torch's built-ins are not used where Keras's rule differs.

The K-step equivalence against real Keras is in ``test_training_equivalence.py``; these are
the fast checks of the pieces, each written so it fails if the Keras rule is replaced by
torch's (the negative half of every test states the number torch would give).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.training.clipping import GradientClipping, clipping_of
from pipeline.training.config import (
    LossTerm,
    OptimizerConfig,
    Regularizer,
    Schedule,
    TrainingConfig,
    TrainingConfigError,
    check_supported,
    read_description,
)
from pipeline.training.losses import KerasLoss, reduce_loss
from pipeline.training.optimizers import (
    KerasAdagrad,
    KerasAdam,
    KerasRMSprop,
    KerasSGD,
    build_optimizer,
)
from pipeline.training.schedules import KerasSchedule, learning_rate_function
from pipeline.training.train_mode import keras_batch_norm, set_training


def _config(**changes: object) -> TrainingConfig:
    base = TrainingConfig(
        optimizer=OptimizerConfig("Adam", 0.001, {"beta_1": 0.9}),
        losses=(LossTerm("y", 0, "mean_squared_error", {"reduction": "sum_over_batch_size"}),),
    )
    return TrainingConfig(**{**base.__dict__, **changes})


# ------------------------------------------------------------------------ config


def test_config_round_trips_through_json() -> None:
    config = _config(
        optimizer=OptimizerConfig(
            "SGD",
            Schedule("ExponentialDecay", {"initial_learning_rate": 0.1, "decay_steps": 3}),
            {"momentum": 0.9, "clipnorm": 1.0},
            ("dense/bias",),
        ),
        regularizers=(Regularizer("dense/kernel", "L2", {"l2": 0.01}),),
        metrics=["mae"],
    )
    assert TrainingConfig.from_json(json.loads(json.dumps(config.to_json()))) == config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"optimizer": OptimizerConfig("Ftrl", 0.001, {})},
            "optimizer Ftrl (config key 'optimizer') has no torch equivalent",
        ),
        (
            {"optimizer": OptimizerConfig("Adam", Schedule("MySchedule (custom class)", {}), {})},
            "learning-rate schedule MySchedule (custom class) (config key 'optimizer.learning_rate')",
        ),
        (
            {"losses": (LossTerm("y", 0, "log_cosh", {}),)},
            "loss log_cosh (config key 'loss[y]')",
        ),
        (
            {"losses": (LossTerm("y", 0, "huber", {"custom": True}),)},
            "loss huber (custom) (config key 'loss[y]')",
        ),
        (
            {"regularizers": (Regularizer("d/kernel", "OrthogonalRegularizer", {}),)},
            "regularizer OrthogonalRegularizer (config key 'regularizers[d/kernel]')",
        ),
        (
            {"optimizer": OptimizerConfig("Adam", 0.001, {"use_ema": True})},
            "optimizer option use_ema=True (config key 'optimizer.use_ema')",
        ),
        (
            {"losses": (LossTerm("y", 0, "mean_squared_error", {"reduction": "none"}),)},
            "(config key 'loss[y].reduction')",
        ),
        (
            {"activity_regularizers": ({"layer": "d", "class_name": "L2", "config": {}},)},
            "activity regularizer L2 of layer d (config key 'activity_regularizers[d]')",
        ),
    ],
)
def test_unsupported_config_is_named_with_its_key(change: dict[str, object], message: str) -> None:
    with pytest.raises(TrainingConfigError) as err:
        check_supported(_config(**change), {"optimizer": [], "loss": []})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_registered_names_are_accepted() -> None:
    config = _config(losses=(LossTerm("y", 0, "my_loss", {"custom": True}),))
    with pytest.raises(TrainingConfigError):
        check_supported(config, {"optimizer": [], "loss": []})
    check_supported(config, {"optimizer": [], "loss": ["my_loss"]})


def test_description_files(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('optimizer = "adam"\nloss = "mse"\nmetrics = ["mae"]\n')
    assert read_description(toml)["metrics"] == ["mae"]
    cases = {
        "u.json": ('{"optimizer": "sgd", "loss": "mse", "epochs": 3}', "unknown key(s) epochs"),
        "m.json": ('{"optimizer": "sgd"}', "has no 'loss'"),
        "f.json": (
            '{"optimizer": "ftrl", "loss": "mse"}',
            "optimizer ftrl (config key 'optimizer')",
        ),
        "s.json": (
            '{"optimizer": {"class_name": "SGD", "config": {"learning_rate": '
            '{"class_name": "Warmup", "config": {}}}}, "loss": "mse"}',
            "learning-rate schedule Warmup (config key 'optimizer.learning_rate')",
        ),
        "r.json": (
            '{"optimizer": "sgd", "loss": "mse", "regularizers": '
            '{"d/kernel": "orthogonal_regularizer"}}',
            "regularizer orthogonal_regularizer (config key 'regularizers[d/kernel]')",
        ),
        "bad.toml": ("optimizer = ", "is not valid"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(TrainingConfigError) as err:
            read_description(tmp_path / name)
        assert message in str(err.value), name


# --------------------------------------------------------------------- schedules


def test_schedules_follow_keras_formulas() -> None:
    piecewise = learning_rate_function(
        Schedule("PiecewiseConstantDecay", {"boundaries": [2, 4], "values": [1.0, 0.5, 0.1]})
    )
    # Keras: step <= boundary takes the lower interval's value
    assert [piecewise(s) for s in range(6)] == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.5, 0.1])
    warm = learning_rate_function(
        Schedule(
            "CosineDecay",
            {
                "initial_learning_rate": 0.0,
                "decay_steps": 4,
                "warmup_target": 1.0,
                "warmup_steps": 2,
                "alpha": 0.0,
            },
        )
    )
    expected = [0.0, 0.5, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, None, 0.0, 0.0]
    for step, value in enumerate(expected):
        if value is not None:
            assert warm(step) == pytest.approx(value, abs=1e-7), step
    inverse = learning_rate_function(
        Schedule(
            "InverseTimeDecay",
            {"initial_learning_rate": 0.1, "decay_steps": 2, "decay_rate": 0.5, "staircase": True},
        )
    )
    assert [inverse(s) for s in range(4)] == pytest.approx([0.1, 0.1, 0.1 / 1.5, 0.1 / 1.5])
    # float32, as Keras stores the rate: 0.1 is 0.10000000149...
    assert learning_rate_function(0.1)(0) == float(np.float32(0.1)) != 0.1


def test_keras_schedule_sets_the_rate_of_the_next_step() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = KerasSchedule(optimizer, lambda step: 10.0 + step)
    seen = []
    for _ in range(3):
        seen.append(optimizer.param_groups[0]["lr"])
        param.grad = torch.zeros(1)
        optimizer.step()
        scheduler.step()
    assert seen == [10.0, 11.0, 12.0]  # step k uses schedule(k), Keras's iterations


# ---------------------------------------------------------------------- clipping


def _with_grads(*grads: list[float]) -> list[list[torch.Tensor]]:
    groups = []
    for g in grads:
        t = torch.zeros(len(g), requires_grad=True)
        t.grad = torch.tensor(g)
        groups.append([t])
    return groups


def _grad(groups: list[list[torch.Tensor]], i: int) -> list[float]:
    grad = groups[i][0].grad
    assert grad is not None
    return list(grad.tolist())


def test_clipnorm_clips_each_variable_not_all_together() -> None:
    groups = _with_grads([3.0, 4.0], [0.3, 0.4])  # norms 5 and 0.5
    GradientClipping(clipnorm=1.0)(groups)
    assert _grad(groups, 0) == pytest.approx([0.6, 0.8])
    assert _grad(groups, 1) == pytest.approx([0.3, 0.4])  # already below 1
    # torch's clip_grad_norm_ is Keras's global_clipnorm: it would scale the second too
    together = _with_grads([3.0, 4.0], [0.3, 0.4])
    torch.nn.utils.clip_grad_norm_([g[0] for g in together], 1.0)
    assert _grad(together, 1) != pytest.approx([0.3, 0.4])
    glob = _with_grads([3.0, 4.0], [0.3, 0.4])
    GradientClipping(global_clipnorm=1.0)(glob)
    assert _grad(glob, 1) == pytest.approx(_grad(together, 1), rel=1e-6)


def test_split_variable_is_clipped_as_one() -> None:
    a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    a.grad, b.grad = torch.tensor([3.0]), torch.tensor([4.0])
    GradientClipping(clipnorm=1.0)([[a, b]])  # one TF variable held in two tensors
    assert a.grad is not None and b.grad is not None
    assert (a.grad.item(), b.grad.item()) == pytest.approx((0.6, 0.8))


def test_clipping_precedence_is_keras_s() -> None:
    config = OptimizerConfig(
        "SGD", 0.1, {"clipnorm": 0.0, "global_clipnorm": 2.0, "clipvalue": 1.0}
    )
    assert clipping_of(config) == GradientClipping(global_clipnorm=2.0)


# ------------------------------------------------------------------- batch norm


def test_keras_batch_norm_updates_variance_with_the_biased_estimate() -> None:
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    mean, var = torch.zeros(3), torch.ones(3)
    out = keras_batch_norm(x, None, None, mean, var, True, 0.1, 1e-3, False)
    batch_var = x.var(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(var, 0.9 + 0.1 * batch_var)
    assert torch.allclose(mean, 0.1 * x.mean(dim=(0, 2, 3)))
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-6)
    # torch's training-mode batch_norm uses the unbiased variance for the running value
    t_mean, t_var = torch.zeros(3), torch.ones(3)
    torch.nn.functional.batch_norm(x, t_mean, t_var, training=True, momentum=0.1, eps=1e-3)
    assert not torch.allclose(t_var, var, rtol=1e-4)


# ------------------------------------------------------------------------ losses


def test_reduction_divides_by_every_per_sample_value() -> None:
    values = torch.ones(2, 5)  # e.g. MSE on a (2, 5, d) sequence output
    assert reduce_loss(values, "sum_over_batch_size").item() == 1.0
    assert reduce_loss(values, "sum").item() == 10.0


def test_losses_against_their_formulas() -> None:
    y_pred = torch.tensor([[0.7, 0.2, 0.1], [1e-9, 0.5, 0.5]])
    y_true = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    eps = 1e-7
    cce = KerasLoss([LossTerm("p", 0, "categorical_crossentropy", {})], eps)
    expected = (-math.log(0.7) - math.log(eps)) / 2  # Keras clips 1e-9 up to epsilon
    assert cce([y_pred], [y_true]).item() == pytest.approx(expected, rel=1e-6)
    sparse = KerasLoss([LossTerm("p", 0, "sparse_categorical_crossentropy", {})], eps)
    labels = torch.tensor([0, 0], dtype=torch.int32)
    assert sparse([y_pred], [labels]).item() == pytest.approx(expected, rel=1e-6)
    smooth = KerasLoss(
        [LossTerm("p", 0, "binary_crossentropy", {"from_logits": True, "label_smoothing": 0.2})],
        eps,
    )
    logits, target = torch.tensor([[2.0]]), torch.tensor([[1.0]])
    t = 0.9  # Keras: y·(1 - s) + s/2
    value = -(t * math.log(1 / (1 + math.exp(-2))) + (1 - t) * math.log(1 - 1 / (1 + math.exp(-2))))
    assert smooth([logits], [target]).item() == pytest.approx(value, rel=1e-6)
    huber = KerasLoss([LossTerm("r", 0, "huber", {"delta": 0.5})], eps)
    # |e| = 2 > δ: δ·|e| - δ²/2 = 0.875; |e| = 0.25: e²/2 = 0.03125; mean over the last axis
    got = huber([torch.tensor([[2.0, 0.25]])], [torch.tensor([[0.0, 0.0]])]).item()
    assert got == pytest.approx((0.875 + 0.03125) / 2)
    weighted = KerasLoss(
        [
            LossTerm("a", 0, "mean_absolute_error", {}, weight=2.0),
            LossTerm("b", 1, "mean_squared_error", {}, weight=0.5),
        ],
        eps,
    )
    a, b = torch.tensor([[1.0, 3.0]]), torch.tensor([[2.0]])
    assert weighted([a, b], [torch.zeros(1, 2), torch.zeros(1, 1)]).item() == 2.0 * 2 + 0.5 * 4


# -------------------------------------------------------------------- optimizers


def _run(optimizer_cls: type, steps: int = 3, **kw: object) -> torch.Tensor:
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = optimizer_cls([p], **kw)
    for k in range(steps):
        p.grad = torch.tensor([0.1, -0.2, 0.3]) * (k + 1) * 1e-3
        opt.step()
    return p.detach().clone()


def test_keras_optimizers_differ_from_torch_builtins_where_keras_s_rule_differs() -> None:
    # Adam: Keras's epsilon sits on the uncorrected second moment
    keras = _run(KerasAdam, lr=0.1, epsilon=1e-3)
    builtin = _run(torch.optim.Adam, lr=0.1, eps=1e-3)
    assert not torch.allclose(keras, builtin, rtol=1e-3)
    # RMSprop: epsilon inside the square root
    keras = _run(KerasRMSprop, lr=0.01, rho=0.9, epsilon=1e-3)
    builtin = _run(torch.optim.RMSprop, lr=0.01, alpha=0.9, eps=1e-3)
    assert not torch.allclose(keras, builtin, rtol=1e-3)
    # Adagrad: accumulator starts at 0.1 in Keras
    keras = _run(KerasAdagrad, lr=0.1)
    builtin = _run(torch.optim.Adagrad, lr=0.1, eps=1e-7)
    assert not torch.allclose(keras, builtin, rtol=1e-3)
    # SGD with momentum at a constant rate is the same rule in both
    keras = _run(KerasSGD, lr=0.1, momentum=0.9, nesterov=True)
    builtin = _run(torch.optim.SGD, lr=0.1, momentum=0.9, nesterov=True)
    assert torch.allclose(keras, builtin, rtol=1e-6)


def test_build_optimizer_uses_builtins_only_where_they_apply_keras_s_rule() -> None:
    params = [("w", torch.nn.Parameter(torch.zeros(2)))]
    constant = OptimizerConfig("SGD", 0.1, {"momentum": 0.9})
    scheduled = OptimizerConfig("SGD", Schedule("ExponentialDecay", {}), {"momentum": 0.9})
    decayed = OptimizerConfig("Adadelta", 1.0, {"weight_decay": 0.1})
    assert type(build_optimizer(params, constant, 0.1)) is torch.optim.SGD
    assert type(build_optimizer(params, scheduled, 0.1)) is KerasSGD
    assert type(build_optimizer(params, OptimizerConfig("Adadelta", 1.0, {}), 1.0)) is (
        torch.optim.Adadelta
    )
    assert type(build_optimizer(params, decayed, 1.0)).__name__ == "KerasAdadelta"
    excluded = OptimizerConfig("AdamW", 0.1, {"weight_decay": 0.1}, ("b",))
    two = [("w", torch.nn.Parameter(torch.zeros(2))), ("b", torch.nn.Parameter(torch.zeros(2)))]
    groups = build_optimizer(two, excluded, 0.1).param_groups
    assert [g["weight_decay"] for g in groups] == [0.1, None]


def test_exported_batchnorm_switches_to_training_unless_frozen() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4, momentum=0.1)).eval()
    module = torch.export.export(net, (torch.randn(5, 3),)).module()
    assert isinstance(module, torch.fx.GraphModule)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    running = dict(module.named_buffers())["1.running_mean"]
    assert set_training(module, True, frozen={"1.weight"}) == 0  # trainable=False: inference
    module(x)
    assert torch.equal(running, torch.zeros(4))
    assert set_training(module, True) == 1
    out = module(x)
    assert not torch.equal(running, torch.zeros(4))  # moving statistics updated
    assert torch.allclose(out.mean(dim=0), dict(module.named_parameters())["1.bias"], atol=1e-6)
    assert set_training(module, False) == 0
