"""Keras losses in torch, computed as Keras 3.15 computes them.

torch's built-in losses differ from Keras's in ways that change the number:

- ``nn.MSELoss``/``nn.L1Loss``/``nn.HuberLoss`` average over every element; Keras averages
  over the last axis per sample and then divides the sum by the number of per-sample values
  (``sum_over_batch_size``), which is the same only for 2-D outputs, and Keras's Huber is
  ``0.5·e²`` / ``δ·|e| - 0.5·δ²`` (torch's ``HuberLoss`` too, but ``SmoothL1Loss`` is not).
- Keras's probability cross-entropies renormalise (categorical) and clip predictions to
  ``[ε, 1 - ε]`` (``ε = keras.config.epsilon()``, 1e-7) before the log; ``nn.BCELoss``
  clamps the log at -100 instead; ``nn.CrossEntropyLoss`` takes logits only.
- label smoothing: Keras's binary one is ``y·(1 - s) + s/2``; the categorical one divides by
  the number of classes; ``nn.CrossEntropyLoss(label_smoothing=)`` matches the latter only
  for logits.
- ``nn.KLDivLoss`` takes log-probabilities and does not clip; Keras clips both sides to
  ``[ε, 1]``.

So every loss here is written out from ``keras/src/losses/losses.py`` and the TensorFlow
backend's ``nn.py``.  One known difference remains: in a compiled (graph-mode) train step,
Keras's probability cross-entropies look through a final ``Softmax``/``Sigmoid`` op and use
its logits; torch computes from the probabilities with the clipping above.  The two agree
unless a predicted probability falls below ε.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from pipeline.training.config import LossTerm, TrainingConfigError

LossFunction = Callable[..., torch.Tensor]


def _same_rank(y_true: torch.Tensor, y_pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keras's ``squeeze_or_expand_to_same_rank``: drop or add a trailing axis of size 1."""
    if y_true.dim() == y_pred.dim() + 1 and y_true.shape[-1] == 1:
        if y_pred.dim() == 1:
            y_pred = y_pred.unsqueeze(-1)
        else:
            y_true = y_true.squeeze(-1)
    if y_pred.dim() == y_true.dim() + 1 and y_pred.shape[-1] == 1:
        if y_true.dim() == 1:
            y_true = y_true.unsqueeze(-1)
        else:
            y_pred = y_pred.squeeze(-1)
    return y_true, y_pred


def mean_squared_error(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    """``mean((y_true - y_pred)², axis=-1)``."""
    y_true, y_pred = _same_rank(y_true, y_pred)
    return torch.square(y_true - y_pred).mean(dim=-1)


def mean_absolute_error(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    """``mean(|y_true - y_pred|, axis=-1)``."""
    y_true, y_pred = _same_rank(y_true, y_pred)
    return torch.abs(y_true - y_pred).mean(dim=-1)


def huber(y_true: torch.Tensor, y_pred: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """``mean(0.5·e² if |e| ≤ δ else δ·|e| - 0.5·δ², axis=-1)``, ``e = y_pred - y_true``."""
    y_true, y_pred = _same_rank(y_true, y_pred)
    d = torch.tensor(delta, dtype=y_pred.dtype)
    error = y_pred - y_true
    abs_error = torch.abs(error)
    half = torch.tensor(0.5, dtype=y_pred.dtype)
    return torch.where(
        abs_error <= d, half * torch.square(error), d * abs_error - half * torch.square(d)
    ).mean(dim=-1)


def kl_divergence(y_true: torch.Tensor, y_pred: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``sum(t·log(t/p), axis=-1)`` with ``t`` and ``p`` clipped to ``[ε, 1]``."""
    y_true = torch.clamp(y_true, epsilon, 1.0)
    y_pred = torch.clamp(y_pred, epsilon, 1.0)
    return torch.sum(y_true * torch.log(y_true / y_pred), dim=-1)


def binary_crossentropy(
    y_true: torch.Tensor,
    y_pred: torch.Tensor,
    epsilon: float,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Keras's binary cross-entropy, averaged over the last axis.  From logits it is
    TensorFlow's ``sigmoid_cross_entropy_with_logits``: ``max(x, 0) - x·z + log1p(e^-|x|)``."""
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        x = y_pred
        values = torch.clamp(x, min=0) - x * y_true + torch.log1p(torch.exp(-torch.abs(x)))
    else:
        p = torch.clamp(y_pred, epsilon, 1.0 - epsilon)
        values = -(y_true * torch.log(p) + (1 - y_true) * torch.log(1 - p))
    return values.mean(dim=-1)


def categorical_crossentropy(
    y_true: torch.Tensor,
    y_pred: torch.Tensor,
    epsilon: float,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Keras's categorical cross-entropy over the last axis (probabilities renormalised to
    sum 1 and clipped to ``[ε, 1 - ε]``; logits through ``log_softmax``)."""
    if label_smoothing:
        classes = y_true.shape[-1]
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / classes
    if from_logits:
        return -torch.sum(y_true * torch.log_softmax(y_pred, dim=-1), dim=-1)
    p = y_pred / torch.sum(y_pred, dim=-1, keepdim=True)
    p = torch.clamp(p, epsilon, 1.0 - epsilon)
    return -torch.sum(y_true * torch.log(p), dim=-1)


def sparse_categorical_crossentropy(
    y_true: torch.Tensor, y_pred: torch.Tensor, epsilon: float, from_logits: bool = False
) -> torch.Tensor:
    """Keras's sparse categorical cross-entropy: integer labels, one fewer axis than the
    predictions (a trailing axis of size 1 is dropped); probabilities are clipped to
    ``[ε, 1 - ε]`` and their log goes through ``log_softmax`` as TensorFlow does."""
    if y_true.dim() == y_pred.dim() and y_true.shape[-1] == 1:
        y_true = y_true.squeeze(-1)
    logits = y_pred if from_logits else torch.log(torch.clamp(y_pred, epsilon, 1.0 - epsilon))
    log_probs = torch.log_softmax(logits, dim=-1)
    return -torch.gather(log_probs, -1, y_true.long().unsqueeze(-1)).squeeze(-1)


_NEEDS_EPSILON = (
    "kl_divergence",
    "binary_crossentropy",
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
)
LOSS_FUNCTIONS: dict[str, LossFunction] = {
    "mean_squared_error": mean_squared_error,
    "mean_absolute_error": mean_absolute_error,
    "huber": huber,
    "binary_crossentropy": binary_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "kl_divergence": kl_divergence,
}
"""Keras loss function name → its torch version (``register_loss`` adds to it)."""

_ARGUMENTS = {"from_logits", "label_smoothing", "delta"}
_REGISTERED: set[str] = set()


def reduce_loss(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """Keras's ``reduce_values``: ``sum``, or the sum divided by the number of values for
    ``sum_over_batch_size``/``mean``; a scalar stays as it is."""
    if values.dim() == 0:
        return values
    total = torch.sum(values)
    if reduction == "sum":
        return total
    return total / values.numel()


class KerasLoss:
    """The compiled loss of a Keras model: one Keras loss per output, each reduced, weighted
    by its ``loss_weights`` entry and summed in output order (Keras's ``CompileLoss``).

    Call it with the module's outputs and the targets, both in output order.
    """

    def __init__(self, terms: Sequence[LossTerm], epsilon: float) -> None:
        self.terms = list(terms)
        self.epsilon = epsilon
        self._functions = [self._bind(t) for t in self.terms]

    def _bind(self, term: LossTerm) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        function = LOSS_FUNCTIONS.get(term.name)
        if function is None:
            raise TrainingConfigError(
                f"loss {term.name} (config key 'loss[{term.output}]') has no torch equivalent"
            )
        if term.name in _REGISTERED:
            kwargs = {k: v for k, v in term.config.items() if k not in ("reduction", "custom")}
        else:
            kwargs = {k: v for k, v in term.config.items() if k in _ARGUMENTS}
            if term.name in _NEEDS_EPSILON:
                kwargs["epsilon"] = self.epsilon
        sparse = term.name == "sparse_categorical_crossentropy"

        def call(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
            if not sparse:  # Keras casts targets to the prediction's dtype
                y_true = y_true.to(y_pred.dtype)
            y_true, y_pred = _same_rank(y_true, y_pred)  # as LossFunctionWrapper.call does
            values = function(y_true, y_pred, **kwargs)
            return reduce_loss(values, str(term.config.get("reduction", "sum_over_batch_size")))

        return call

    def __call__(
        self, outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """The total loss (a scalar tensor) of ``outputs`` against ``targets``."""
        total: torch.Tensor | int = 0
        for term, function in zip(self.terms, self._functions, strict=True):
            value = function(targets[term.index], outputs[term.index])
            if term.weight is not None:
                value = value * term.weight
            total = total + value
        assert isinstance(total, torch.Tensor)
        return total


def register_loss(name: str, function: LossFunction) -> None:
    """Use ``function(y_true, y_pred, **config)`` (per-sample values; the reduction and
    weighting are applied around it) for the Keras loss ``name`` (a custom loss function's
    ``__name__`` or a ``Loss`` subclass's class name); ``config`` is the loss's arguments
    as the TF worker read them (``reduction`` left out: it is applied around the call)."""
    from pipeline.training.config import register_name

    LOSS_FUNCTIONS[name] = function
    _REGISTERED.add(name)
    register_name("loss", name)


def loss_from_config(terms: Sequence[LossTerm], epsilon: float) -> KerasLoss:
    """A :class:`KerasLoss` for the config's loss terms."""
    return KerasLoss(terms, epsilon)
