"""torch optimizers that apply Keras's update rules, where torch's built-ins apply others.

Every class below follows ``update_step`` of its Keras 3.15 namesake
(``keras/src/optimizers/<name>.py``) operation by operation in the parameter's dtype, with
Keras's ``BaseOptimizer.apply`` around it: decoupled weight decay ``w -= w·wd·lr`` first
(``weight_decay``, with ``exclude_from_weight_decay`` as param groups whose
``weight_decay`` is None), then the update with the learning rate of the current iteration;
one iteration counter for all parameters (``group["step"]``, Keras's ``iterations``).
Gradient clipping is not done here but by :class:`pipeline.training.clipping.GradientClipping`
before ``step()``, because torch's built-in optimizers need it outside too.

Where a torch built-in gives Keras's rule, :func:`build_optimizer` uses it:
``torch.optim.SGD`` for plain SGD (its coupled ``weight_decay`` equals Keras's decoupled
one when there is no momentum) and for momentum SGD at a constant learning rate without
weight decay, and ``torch.optim.Adadelta`` without weight decay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.training.config import OptimizerConfig, Schedule, TrainingConfigError

Params = Iterable[torch.Tensor] | Iterable[dict[str, Any]]


def _scalar(value: float, like: torch.Tensor) -> torch.Tensor:
    """A Python number as Keras casts it (``ops.cast(x, variable.dtype)``)."""
    return torch.tensor(value, dtype=like.dtype, device=like.device)


class KerasOptimizer(torch.optim.Optimizer):
    """Base class: Keras's ``apply()`` (weight decay, then :meth:`update` per parameter with
    a gradient, then ``iterations += 1``).  Subclasses implement :meth:`update`."""

    def __init__(self, params: Params, lr: float, weight_decay: float | None, **hyper: Any) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "step": 0, **hyper})

    def prepare(self, group: Mapping[str, Any], iteration: int) -> None:
        """Work done once per step before the per-variable updates (Nadam's product)."""

    def update(
        self,
        param: torch.Tensor,
        grad: torch.Tensor,
        lr: torch.Tensor,
        state: dict[str, Any],
        group: Mapping[str, Any],
        iteration: int,
    ) -> None:
        """Apply the update rule to ``param`` in place; ``iteration`` is Keras's
        ``iterations`` before this step (0 for the first)."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One Keras ``optimizer.apply`` over every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            wd = group["weight_decay"]
            if wd is None:
                continue
            for p in group["params"]:
                if p.grad is not None:
                    p.sub_(p * _scalar(wd, p) * _scalar(group["lr"], p))
        for group in self.param_groups:
            iteration = int(group["step"])
            self.prepare(group, iteration)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                self.update(p, p.grad.to(p.dtype), _scalar(group["lr"], p), state, group, iteration)
            group["step"] = iteration + 1
        return loss


def _zeros(state: dict[str, Any], key: str, like: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    if key not in state:
        state[key] = torch.full_like(like, fill, memory_format=torch.preserve_format)
    tensor: torch.Tensor = state[key]
    return tensor


class KerasSGD(KerasOptimizer):
    """Keras ``SGD``.  Keras keeps ``m = momentum·m - lr·g`` and adds ``m`` (Nesterov:
    ``momentum·m - lr·g``); torch's ``SGD`` keeps ``b = momentum·b + g`` and subtracts
    ``lr·b``.  They agree while ``lr`` is constant, not under a schedule (Keras's velocity
    carries the old rates), and torch's ``weight_decay`` is an L2 term folded into ``g``."""

    def __init__(
        self,
        params: Params,
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float | None = None,
    ) -> None:
        super().__init__(params, lr, weight_decay, momentum=momentum, nesterov=nesterov)

    def update(
        self,
        param: torch.Tensor,
        grad: torch.Tensor,
        lr: torch.Tensor,
        state: dict[str, Any],
        group: Mapping[str, Any],
        iteration: int,
    ) -> None:
        """See the class docstring."""
        momentum = float(group["momentum"])
        if momentum == 0:
            param.sub_(grad * lr)
            return
        m = _zeros(state, "momentum", param)
        mom = _scalar(momentum, param)
        m.copy_(m * mom - grad * lr)
        if group["nesterov"]:
            param.add_(m * mom - grad * lr)
        else:
            param.add_(m)


class KerasAdam(KerasOptimizer):
    """Keras ``Adam`` (``AdamW`` is this with ``weight_decay``).  Keras moves epsilon onto
    the *uncorrected* second moment: ``w -= m·alpha / (√v + ε)`` with
    ``alpha = lr·√(1 - β₂ᵗ)/(1 - β₁ᵗ)``, while torch's ``Adam`` divides by ``√v̂ + ε`` with the
    corrected ``v̂`` (so Keras's ε acts like a time-varying ``ε·√(1 - β₂ᵗ)`` in torch), and
    Keras's default ε is 1e-7, torch's 1e-8.  ``amsgrad`` keeps ``max(v̂, v)`` of the
    uncorrected ``v``."""

    def __init__(
        self,
        params: Params,
        lr: float = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        weight_decay: float | None = None,
    ) -> None:
        super().__init__(
            params, lr, weight_decay, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, amsgrad=amsgrad
        )

    def update(
        self,
        param: torch.Tensor,
        grad: torch.Tensor,
        lr: torch.Tensor,
        state: dict[str, Any],
        group: Mapping[str, Any],
        iteration: int,
    ) -> None:
        """See the class docstring."""
        b1, b2 = float(group["beta_1"]), float(group["beta_2"])
        local_step = _scalar(iteration + 1, param)
        beta_1_power = torch.pow(_scalar(b1, param), local_step)
        beta_2_power = torch.pow(_scalar(b2, param), local_step)
        m = _zeros(state, "momentum", param)
        v = _zeros(state, "velocity", param)
        alpha = lr * torch.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        m.add_((grad - m) * (1 - b1))
        v.add_((torch.square(grad) - v) * (1 - b2))
        if group["amsgrad"]:
            v_hat = _zeros(state, "velocity_hat", param)
            v_hat.copy_(torch.maximum(v_hat, v))
            v = v_hat
        param.sub_((m * alpha) / (torch.sqrt(v) + float(group["epsilon"])))


class KerasRMSprop(KerasOptimizer):
    """Keras ``RMSprop``: ``v = rho·v + (1 - rho)·g²`` and ``w -= lr·g / √(v + ε)`` (ε *inside*
    the root; centered: ``√(v - ḡ² + ε)``); with momentum ``b = μ·b + lr·g/√(…)``,
    ``w -= b``.  torch's ``RMSprop`` puts ε outside the root (``√v + ε``), applies ``lr``
    after the momentum buffer, and defaults to ``alpha`` 0.99 where Keras's ``rho`` is 0.9."""

    def __init__(
        self,
        params: Params,
        lr: float = 0.001,
        rho: float = 0.9,
        momentum: float = 0.0,
        epsilon: float = 1e-7,
        centered: bool = False,
        weight_decay: float | None = None,
    ) -> None:
        super().__init__(
            params, lr, weight_decay, rho=rho, momentum=momentum, epsilon=epsilon, centered=centered
        )

    def update(
        self,
        param: torch.Tensor,
        grad: torch.Tensor,
        lr: torch.Tensor,
        state: dict[str, Any],
        group: Mapping[str, Any],
        iteration: int,
    ) -> None:
        """See the class docstring."""
        rho, eps, momentum = float(group["rho"]), float(group["epsilon"]), float(group["momentum"])
        velocity = _zeros(state, "velocity", param)
        velocity.copy_(rho * velocity + (1 - rho) * torch.square(grad))
        if group["centered"]:
            average = _zeros(state, "average_gradient", param)
            average.copy_(rho * average + (1 - rho) * grad)
            denominator = velocity - torch.square(average) + eps
        else:
            denominator = velocity + eps
        increment = (lr * grad) / torch.sqrt(denominator)
        if momentum > 0:
            buffer = _zeros(state, "momentum", param)
            buffer.copy_(momentum * buffer + increment)
            param.sub_(buffer)
        else:
            param.sub_(increment)


class KerasAdagrad(KerasOptimizer):
    """Keras ``Adagrad``: the accumulator starts at ``initial_accumulator_value`` (0.1;
    torch: 0) and ``w -= lr·g / √(acc + ε)`` (torch: ``/(√acc + ε)``, ε 1e-10 not 1e-7)."""

    def __init__(
        self,
        params: Params,
        lr: float = 0.001,
        initial_accumulator_value: float = 0.1,
        epsilon: float = 1e-7,
        weight_decay: float | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            epsilon=epsilon,
        )

    def update(
        self,
        param: torch.Tensor,
        grad: torch.Tensor,
        lr: torch.Tensor,
        state: dict[str, Any],
        group: Mapping[str, Any],
        iteration: int,
    ) -> None:
        """See the class docstring."""
        accumulator = _zeros(state, "accumulator", param, float(group["initial_accumulator_value"]))
        accumulator.add_(torch.square(grad))
        param.sub_((lr * grad) / torch.sqrt(accumulator + float(group["epsilon"])))


class KerasAdadelta(KerasOptimizer):
    """Keras ``Adadelta``.  Its rule is torch's ``Adadelta`` rule (same ε placement), so
    :func:`build_optimizer` uses torch's unless Keras's decoupled ``weight_decay`` is set,
    which torch's coupled ``weight_decay`` does not reproduce."""

    def __init__(
        self,
        params: Params,
        lr: float = 0.001,
        rho: float = 0.95,
        epsilon: float = 1e-7,
        weight_decay: float | None = None,
    ) -> None:
        super().__init__(params, lr, weight_decay, rho=rho, epsilon=epsilon)

    def update(
        self,
        param: torch.Tensor,
        grad: torch.Tensor,
        lr: torch.Tensor,
        state: dict[str, Any],
        group: Mapping[str, Any],
        iteration: int,
    ) -> None:
        """See the class docstring."""
        rho, eps = float(group["rho"]), float(group["epsilon"])
        accumulated_grad = _zeros(state, "accumulated_grad", param)
        accumulated_delta = _zeros(state, "accumulated_delta_var", param)
        accumulated_grad.copy_(rho * accumulated_grad + (1 - rho) * torch.square(grad))
        delta = -(torch.sqrt(accumulated_delta + eps) * grad) / torch.sqrt(accumulated_grad + eps)
        accumulated_delta.copy_(rho * accumulated_delta + (1 - rho) * torch.square(delta))
        param.add_(lr * delta)


class KerasAdamax(KerasOptimizer):
    """Keras ``Adamax``: ``u = max(β₂·u, |g|)`` and ``w -= lr·m / ((1 - β₁ᵗ)·(u + ε))``.
    torch's ``Adamax`` adds ε inside the max (``max(β₂·u, |g| + ε)``) and divides by ``u``."""

    def __init__(
        self,
        params: Params,
        lr: float = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        weight_decay: float | None = None,
    ) -> None:
        super().__init__(params, lr, weight_decay, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)

    def update(
        self,
        param: torch.Tensor,
        grad: torch.Tensor,
        lr: torch.Tensor,
        state: dict[str, Any],
        group: Mapping[str, Any],
        iteration: int,
    ) -> None:
        """See the class docstring."""
        b1, b2 = float(group["beta_1"]), float(group["beta_2"])
        beta_1_power = torch.pow(_scalar(b1, param), _scalar(iteration + 1, param))
        m = _zeros(state, "momentum", param)
        u = _zeros(state, "norm", param)
        m.add_((grad - m) * (1 - b1))
        u.copy_(torch.maximum(b2 * u, torch.abs(grad)))
        param.sub_((lr * m) / ((1 - beta_1_power) * (u + float(group["epsilon"]))))


class KerasNadam(KerasOptimizer):
    """Keras ``Nadam``: momentum schedule ``μₜ = β₁·(1 - 0.5·0.96ᵗ)`` and one running
    product of the ``μₜ`` for all variables.  torch's ``NAdam`` uses ``0.96^(t·ψ)`` with
    ``momentum_decay`` ψ = 0.004, which Keras does not have, and ε 1e-8."""

    def __init__(
        self,
        params: Params,
        lr: float = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        weight_decay: float | None = None,
    ) -> None:
        super().__init__(params, lr, weight_decay, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
        self._u_product = torch.ones((), dtype=torch.float32)
        self._prepared_for = -1

    def prepare(self, group: Mapping[str, Any], iteration: int) -> None:
        """``u_product *= β₁·(1 - 0.5·0.96^(t))``, once per step for all groups (Keras's
        ``_backend_update_step``)."""
        if self._prepared_for == iteration:
            return
        self._prepared_for = iteration
        t = torch.tensor(float(iteration + 1), dtype=self._u_product.dtype)
        decay = 1.0 - 0.5 * torch.pow(torch.tensor(0.96, dtype=t.dtype), t)
        self._u_product = self._u_product * float(group["beta_1"]) * decay

    def update(
        self,
        param: torch.Tensor,
        grad: torch.Tensor,
        lr: torch.Tensor,
        state: dict[str, Any],
        group: Mapping[str, Any],
        iteration: int,
    ) -> None:
        """See the class docstring."""
        b1, b2 = _scalar(float(group["beta_1"]), param), _scalar(float(group["beta_2"]), param)
        local_step, next_step = _scalar(iteration + 1, param), _scalar(iteration + 2, param)
        decay = _scalar(0.96, param)
        u_t = b1 * (1.0 - 0.5 * torch.pow(decay, local_step))
        u_t_1 = b1 * (1.0 - 0.5 * torch.pow(decay, next_step))
        u_product_t = self._u_product.to(param.dtype)
        u_product_t_1 = u_product_t * u_t_1
        beta_2_power = torch.pow(b2, local_step)
        m = _zeros(state, "momentum", param)
        v = _zeros(state, "velocity", param)
        m.add_((grad - m) * (1 - b1))
        v.add_((torch.square(grad) - v) * (1 - b2))
        m_hat = (u_t_1 * m) / (1 - u_product_t_1) + ((1 - u_t) * grad) / (1 - u_product_t)
        v_hat = v / (1 - beta_2_power)
        param.sub_((m_hat * lr) / (torch.sqrt(v_hat) + float(group["epsilon"])))

    def state_dict(self) -> dict[str, Any]:
        """torch's state dict plus the running momentum product."""
        data = super().state_dict()
        data["u_product"] = float(self._u_product)
        return data

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        state_dict = dict(state_dict)
        self._u_product = torch.tensor(state_dict.pop("u_product", 1.0), dtype=torch.float32)
        super().load_state_dict(state_dict)


KERAS_OPTIMIZERS: dict[str, tuple[type[KerasOptimizer], tuple[str, ...]]] = {
    "SGD": (KerasSGD, ("momentum", "nesterov")),
    "Adam": (KerasAdam, ("beta_1", "beta_2", "epsilon", "amsgrad")),
    "AdamW": (KerasAdam, ("beta_1", "beta_2", "epsilon", "amsgrad")),
    "RMSprop": (KerasRMSprop, ("rho", "momentum", "epsilon", "centered")),
    "Adagrad": (KerasAdagrad, ("initial_accumulator_value", "epsilon")),
    "Adadelta": (KerasAdadelta, ("rho", "epsilon")),
    "Adamax": (KerasAdamax, ("beta_1", "beta_2", "epsilon")),
    "Nadam": (KerasNadam, ("beta_1", "beta_2", "epsilon")),
}
"""Keras class name → (torch class, the hyperparameters it takes from the Keras config)."""

OptimizerFactory = Callable[[list[dict[str, Any]], OptimizerConfig], torch.optim.Optimizer]
_REGISTERED: dict[str, OptimizerFactory] = {}


def register_optimizer(name: str, factory: OptimizerFactory) -> None:
    """Build the Keras optimizer class ``name`` (e.g. a custom subclass's class name) with
    ``factory(param_groups, config)``: ``param_groups`` are torch param-group dicts
    (``params``, ``weight_decay``), ``config`` the :class:`OptimizerConfig` the TF worker
    read (hyperparameters in ``config.config``); the learning rate is set by the scheduler
    through each group's ``lr``."""
    from pipeline.training.config import register_name

    _REGISTERED[name] = factory
    register_name("optimizer", name)


def weight_decay_groups(
    params: Sequence[tuple[str, torch.Tensor]], config: OptimizerConfig
) -> list[dict[str, Any]]:
    """Keras's weight decay as param groups: the decayed variables, then those
    ``exclude_from_weight_decay`` took out (``weight_decay`` None); empty groups dropped."""
    decay = config.option("weight_decay")
    excluded = set(config.no_weight_decay)
    decayed = [p for name, p in params if name not in excluded]
    kept = [p for name, p in params if name in excluded]
    groups = [{"params": decayed, "weight_decay": None if decay is None else float(decay)}]
    if kept:
        groups.append({"params": kept, "weight_decay": None})
    return [g for g in groups if g["params"]]


@dataclass(frozen=True)
class OptimizerPlan:
    """Which torch class applies a Keras optimizer's rule, and with which arguments
    (besides the param groups and ``lr``); ``builtin`` for ``torch.optim``'s own, whose
    groups take ``weight_decay`` 0.0 where Keras has none; ``note`` says why that class."""

    cls: type[torch.optim.Optimizer]
    kwargs: dict[str, Any]
    builtin: bool
    note: str


def optimizer_plan(config: OptimizerConfig) -> OptimizerPlan:
    """The :class:`OptimizerPlan` of a built-in Keras optimizer (module docstring: torch's
    own class where it computes Keras's rule, a Keras class otherwise)."""
    name = config.class_name
    if name not in KERAS_OPTIMIZERS:
        raise TrainingConfigError(
            f"optimizer {name} (config key 'optimizer') has no torch equivalent in tf2torch"
        )
    decay = config.option("weight_decay")
    scheduled = isinstance(config.learning_rate, Schedule)
    if name == "SGD":
        momentum = float(config.option("momentum", 0.0))
        if momentum == 0 or (not scheduled and decay is None):
            return OptimizerPlan(
                torch.optim.SGD,
                {"momentum": momentum, "nesterov": bool(config.option("nesterov", False))},
                True,
                "torch.optim.SGD computes Keras's SGD here (no momentum, or momentum at a "
                "constant learning rate without weight decay)",
            )
    if name == "Adadelta" and decay is None:
        return OptimizerPlan(
            torch.optim.Adadelta,
            {
                "rho": float(config.option("rho", 0.95)),
                "eps": float(config.option("epsilon", 1e-7)),
                "weight_decay": 0.0,
            },
            True,
            "torch.optim.Adadelta computes Keras's Adadelta (same epsilon placement)",
        )
    cls, keys = KERAS_OPTIMIZERS[name]
    hyper = {k: config.config[k] for k in keys if config.config.get(k) is not None}
    return OptimizerPlan(
        cls,
        hyper,
        False,
        f"no torch.optim class computes its rule; {cls.__name__} is written out above "
        "(its docstring says how torch's differs)",
    )


def build_optimizer(
    params: Sequence[tuple[str, torch.Tensor]], config: OptimizerConfig, initial_lr: float
) -> torch.optim.Optimizer:
    """The torch optimizer that applies ``config``'s Keras update rule to ``params``
    ((TF variable path, torch tensor) pairs; a path may repeat for a split variable).

    ``initial_lr`` is the learning rate of the first step; a schedule then sets each
    group's ``lr`` (:class:`pipeline.training.schedules.KerasSchedule`).  A torch built-in
    is used where it applies Keras's rule (module docstring), a Keras class otherwise.
    """
    groups = weight_decay_groups(params, config)
    if config.class_name in _REGISTERED:
        for group in groups:
            group["lr"] = initial_lr
        return _REGISTERED[config.class_name](groups, config)
    plan = optimizer_plan(config)
    if plan.builtin:
        groups = [{**g, "weight_decay": g["weight_decay"] or 0.0} for g in groups]
    optimizer: torch.optim.Optimizer = plan.cls(groups, lr=initial_lr, **plan.kwargs)  # type: ignore[call-arg]
    return optimizer


def registered_optimizer(name: str) -> OptimizerFactory | None:
    """The factory :func:`register_optimizer` registered for ``name``, if any."""
    return _REGISTERED.get(name)
