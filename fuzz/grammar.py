"""Random Keras functional models from a small grammar, written out as factory files.

No TensorFlow here: :func:`generate` draws a model from a seed and returns its factory module
as Python source (``def make() -> keras.Model``), which ``tf2torch convert FILE.py:make`` runs
in its TF worker.  The same seed always gives the same file, so every fuzz finding is a
readable, replayable model.

The grammar tracks each tensor's shape (batch excluded) and draws only layers valid for it:

- inputs: float vectors ``(F,)``, sequences ``(T, F)``, images ``(H, W, C)``, and integer
  token sequences ``(T,)`` (``Embedding``, ``mask_zero`` drawn; the input range is recorded);
- vectors: ``Dense``, ``BatchNormalization``, ``LayerNormalization``, ``Dropout``,
  ``Activation``, the custom ``add_weight`` layer, ``Reshape`` to a sequence;
- sequences: the above plus ``Conv1D``, ``SeparableConv1D``, ``DepthwiseConv1D``, ``LSTM``,
  ``GRU``, ``Bidirectional(LSTM)``, ``MultiHeadAttention``, 1-D pooling (local and global),
  ``Flatten``, ``Permute``, ``Reshape`` to an image;
- images: ``Conv2D``, ``DepthwiseConv2D``, ``SeparableConv2D``, 2-D pooling (local and
  global), ``Flatten``, ``Permute``, ``Reshape`` to a sequence, plus the shape-keeping layers;
- merges: ``Add``, ``Multiply`` (residual branches, or two tensors brought to one width) and
  ``Concatenate``;
- activations: relu, gelu, swish, hard_swish, softmax, tanh, sigmoid, elu, selu, softplus,
  leaky_relu, relu6, mish, linear;
- one to three outputs (every input reaches one), sometimes an integer output (``cast(y > 0)``);
- weights fresh (Keras's initialisers: zero biases, BatchNorm statistics 0 and 1) or
  randomised everywhere (biases and BatchNorm statistics included).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ACTIVATIONS = (
    "relu",
    "gelu",
    "swish",
    "hard_swish",
    "softmax",
    "tanh",
    "sigmoid",
    "elu",
    "selu",
    "softplus",
    "leaky_relu",
    "relu6",
    "mish",
    "linear",
)
"""Every activation the grammar draws from."""

MAX_OUTPUTS = 3


@dataclass(frozen=True)
class Tensor:
    """A Keras tensor of the model being written: its variable name and shape (no batch)."""

    var: str
    shape: tuple[int, ...]

    @property
    def rank(self) -> int:
        """Rank without the batch axis: 1 vector, 2 sequence, 3 image."""
        return len(self.shape)


@dataclass
class ModelSpec:
    """One generated model: its factory source and what ``convert`` needs to run it."""

    seed: int
    source: str
    """A Python module defining ``make()``, which returns the Keras model."""
    input_ranges: dict[str, tuple[int, int]]
    """Half-open value range of every integer input (``--input-range NAME=LO:HI``)."""
    features: list[str] = field(default_factory=list)
    """The grammar elements the model uses (layer classes, activations, input kinds, ...)."""

    def write(self, directory: Path) -> Path:
        """Write the factory to ``directory/fuzz_<seed>.py`` and return its path."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"fuzz_{self.seed}.py"
        path.write_text(self.source)
        return path

    def convert_args(self) -> list[str]:
        """The ``--input-range`` arguments ``convert`` needs for this model."""
        args: list[str] = []
        for name, (lo, hi) in self.input_ranges.items():
            args += ["--input-range", f"{name}={lo}:{hi}"]
        return args


_PRELUDE = '''\
"""Fuzz model, seed {seed} (written by fuzz/grammar.py).  Features: {features}."""

import keras
import numpy as np
from keras import layers, ops


class FuzzWeight(layers.Layer):
    """A custom layer with its own add_weight variables: x * w (+ b)."""

    def __init__(self, per_channel=True, affine=False, **kwargs):
        super().__init__(**kwargs)
        self.per_channel = per_channel
        self.affine = affine

    def build(self, input_shape):
        size = input_shape[-1] if self.per_channel else 1
        self.w = self.add_weight(name="w", shape=(size,), initializer="ones")
        if self.affine:
            self.b = self.add_weight(name="b", shape=(size,), initializer="zeros")

    def call(self, inputs):
        out = inputs * self.w
        return out + self.b if self.affine else out


def randomize(model, seed):
    """Seeded random values for every variable (biases and BatchNorm statistics too)."""
    rng = np.random.default_rng(seed)
    for variable in model.variables:
        shape = tuple(variable.shape)
        name = variable.path
        if len(shape) >= 2:
            fan_in = int(np.prod(shape[:-1])) or 1
            value = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
        elif any(key in name for key in ("gamma", "moving_variance", "/w")):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, 0.1, shape)
        variable.assign(value.astype(variable.dtype))


def make():
    keras.utils.set_random_seed({seed})
'''


class _Writer:
    """Accumulates the body of ``make()`` while tracking shapes and the features used."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.lines: list[str] = []
        self.features: set[str] = set()
        self.count = 0

    # -- drawing helpers -------------------------------------------------------------------
    def pick(self, options: tuple[str, ...] | list[str]) -> str:
        return str(options[int(self.rng.integers(len(options)))])

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def between(self, lo: int, hi: int) -> int:
        """An integer in ``[lo, hi]``."""
        return int(self.rng.integers(lo, hi + 1))

    def activation(self) -> str:
        act = self.pick(ACTIVATIONS)
        self.features.add(f"activation:{act}")
        return act

    # -- emitting --------------------------------------------------------------------------
    def layer(self, feature: str, call: str, *args: Tensor, shape: tuple[int, ...]) -> Tensor:
        """Emit ``t<n> = layers.<call>(name=...)(args)``; ``call`` ends before its ``)``."""
        self.count += 1
        var = f"t{self.count}"
        name = f"{feature.lower()}_{self.count}"
        sep = "" if call.endswith("(") else ", "
        inputs = args[0].var if len(args) == 1 else "[" + ", ".join(a.var for a in args) + "]"
        self.lines.append(f'{var} = layers.{call}{sep}name="{name}")({inputs})')
        self.features.add(feature)
        return Tensor(var, shape)

    def raw(self, feature: str, code: str, shape: tuple[int, ...]) -> Tensor:
        """Emit ``t<n> = <code>`` where ``code`` may use ``{name}``."""
        self.count += 1
        var = f"t{self.count}"
        self.lines.append(f"{var} = " + code.format(name=f"{feature.lower()}_{self.count}"))
        self.features.add(feature)
        return Tensor(var, shape)


# ------------------------------------------------------------------------------ the layers


def _conv_len(size: int, kernel: int, padding: str, stride: int) -> int:
    return -(-size // stride) if padding == "same" else (size - kernel) // stride + 1


def _shape_keeping(w: _Writer, t: Tensor) -> Tensor:
    """A layer that keeps ``t``'s shape."""
    choice = w.pick(
        ("BatchNormalization", "LayerNormalization", "Dropout", "Activation", "FuzzWeight")
    )
    if choice == "BatchNormalization":
        return w.layer(choice, "BatchNormalization(", t, shape=t.shape)
    if choice == "LayerNormalization":
        return w.layer(choice, "LayerNormalization(", t, shape=t.shape)
    if choice == "Dropout":
        return w.layer(choice, "Dropout(0.25", t, shape=t.shape)
    if choice == "Activation":
        return w.layer(choice, f'Activation("{w.activation()}"', t, shape=t.shape)
    per_channel, affine = w.chance(0.6), w.chance(0.5)
    return w.raw(
        "FuzzWeight",
        f'FuzzWeight(per_channel={per_channel}, affine={affine}, name="{{name}}")({t.var})',
        t.shape,
    )


def _dense(w: _Writer, t: Tensor, units: int | None = None) -> Tensor:
    units = units or w.between(2, 8)
    act = w.activation() if w.chance(0.6) else "linear"
    return w.layer("Dense", f'Dense({units}, activation="{act}"', t, shape=(*t.shape[:-1], units))


def _vector_op(w: _Writer, t: Tensor) -> Tensor:
    (size,) = t.shape
    roll = w.rng.random()
    if roll < 0.45:
        return _dense(w, t)
    if roll < 0.85:
        return _shape_keeping(w, t)
    if size % 2 == 0 and size >= 4 and w.chance(0.5):
        return w.layer("Reshape", f"Reshape(({size // 2}, 2)", t, shape=(size // 2, 2))
    return w.layer("Reshape", f"Reshape(({size}, 1)", t, shape=(size, 1))


def _sequence_op(w: _Writer, t: Tensor) -> Tensor:
    steps, feats = t.shape
    choice = w.pick(
        (
            "Dense", "Conv1D", "SeparableConv1D", "DepthwiseConv1D", "LSTM", "GRU",
            "Bidirectional", "MultiHeadAttention", "Pooling1D", "GlobalPooling1D", "Flatten",
            "Permute", "Reshape", "keep", "keep",
        )
    )  # fmt: skip
    if choice == "Dense":
        return _dense(w, t)
    if choice in ("Conv1D", "SeparableConv1D", "DepthwiseConv1D"):
        kernel = w.between(1, min(3, steps))
        padding = w.pick(("same", "valid"))
        length = _conv_len(steps, kernel, padding, 1)
        act = w.activation() if w.chance(0.5) else "linear"
        common = f'kernel_size={kernel}, padding="{padding}", activation="{act}"'
        if choice == "DepthwiseConv1D":
            multiplier = w.between(1, 2)
            return w.layer(
                choice,
                f"DepthwiseConv1D({common}, depth_multiplier={multiplier}",
                t,
                shape=(length, feats * multiplier),
            )
        filters = w.between(2, 6)
        return w.layer(choice, f"{choice}({filters}, {common}", t, shape=(length, filters))
    if choice in ("LSTM", "GRU", "Bidirectional"):
        units = w.between(2, 5)
        sequences = w.chance(0.5)
        inner = "GRU" if choice == "GRU" else "LSTM"
        backwards = inner == "LSTM" and choice == "LSTM" and w.chance(0.2)
        args = f"{units}, return_sequences={sequences}" + (
            ", go_backwards=True" if backwards else ""
        )
        width = 2 * units if choice == "Bidirectional" else units
        shape = (steps, width) if sequences else (width,)
        if choice == "Bidirectional":
            w.features.add("LSTM")
            return w.layer(choice, f"Bidirectional(layers.LSTM({args})", t, shape=shape)
        return w.layer(choice, f"{inner}({args}", t, shape=shape)
    if choice == "MultiHeadAttention":
        heads, key_dim = w.between(1, 2), w.between(2, 4)
        return w.raw(
            choice,
            f'layers.MultiHeadAttention({heads}, {key_dim}, name="{{name}}")({t.var}, {t.var})',
            t.shape,
        )
    if choice == "Pooling1D" and steps >= 2:
        kind = w.pick(("MaxPooling1D", "AveragePooling1D"))
        return w.layer(kind, f"{kind}(2", t, shape=(steps // 2, feats))
    if choice == "GlobalPooling1D":
        kind = w.pick(("GlobalAveragePooling1D", "GlobalMaxPooling1D"))
        return w.layer(kind, f"{kind}(", t, shape=(feats,))
    if choice == "Flatten":
        return w.layer("Flatten", "Flatten(", t, shape=(steps * feats,))
    if choice == "Permute":
        return w.layer("Permute", "Permute((2, 1)", t, shape=(feats, steps))
    if choice == "Reshape" and steps >= 2:
        return w.layer("Reshape", f"Reshape(({steps}, {feats}, 1)", t, shape=(steps, feats, 1))
    return _shape_keeping(w, t)


def _image_op(w: _Writer, t: Tensor) -> Tensor:
    height, width, channels = t.shape
    choice = w.pick(
        (
            "Conv2D", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense", "Pooling2D",
            "GlobalPooling2D", "Flatten", "Permute", "Reshape", "keep", "keep",
        )
    )  # fmt: skip
    if choice in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D"):
        kernel = w.between(1, min(3, height, width))
        padding = w.pick(("same", "valid"))
        stride = 2 if padding == "same" and w.chance(0.25) else 1
        shape_hw = (
            _conv_len(height, kernel, padding, stride),
            _conv_len(width, kernel, padding, stride),
        )
        act = w.activation() if w.chance(0.5) else "linear"
        common = f'kernel_size={kernel}, strides={stride}, padding="{padding}", activation="{act}"'
        if choice == "DepthwiseConv2D":
            multiplier = w.between(1, 2)
            return w.layer(
                choice,
                f"DepthwiseConv2D({common}, depth_multiplier={multiplier}",
                t,
                shape=(*shape_hw, channels * multiplier),
            )
        filters = w.between(2, 6)
        return w.layer(choice, f"{choice}({filters}, {common}", t, shape=(*shape_hw, filters))
    if choice == "Dense":
        return _dense(w, t)
    if choice == "Pooling2D" and min(height, width) >= 2:
        kind = w.pick(("MaxPooling2D", "AveragePooling2D"))
        return w.layer(kind, f"{kind}(2", t, shape=(height // 2, width // 2, channels))
    if choice == "GlobalPooling2D":
        kind = w.pick(("GlobalAveragePooling2D", "GlobalMaxPooling2D"))
        return w.layer(kind, f"{kind}(", t, shape=(channels,))
    if choice == "Flatten":
        return w.layer("Flatten", "Flatten(", t, shape=(height * width * channels,))
    if choice == "Permute":
        return w.layer("Permute", "Permute((2, 1, 3)", t, shape=(width, height, channels))
    if choice == "Reshape":
        return w.layer(
            "Reshape",
            f"Reshape(({height}, {width * channels})",
            t,
            shape=(height, width * channels),
        )
    return _shape_keeping(w, t)


def _unary(w: _Writer, t: Tensor) -> Tensor:
    return {1: _vector_op, 2: _sequence_op, 3: _image_op}[t.rank](w, t)


def _to_vector(w: _Writer, t: Tensor) -> Tensor:
    if t.rank == 1:
        return t
    if w.chance(0.5):
        return w.layer("Flatten", "Flatten(", t, shape=(int(np.prod(t.shape)),))
    kind = "GlobalAveragePooling1D" if t.rank == 2 else "GlobalAveragePooling2D"
    return w.layer(kind, f"{kind}(", t, shape=(t.shape[-1],))


def _residual(w: _Writer, t: Tensor) -> Tensor:
    """``merge(t, f(t))`` with ``f`` shape-keeping: a conv with ``same`` padding or a Dense
    back to the width, or a shape-keeping layer."""
    if t.rank == 3 and w.chance(0.6):
        kind = w.pick(("Conv2D", "DepthwiseConv2D"))
        kernel = w.between(1, 3)
        args = f'kernel_size={kernel}, padding="same"'
        if kind == "Conv2D":
            branch = w.layer(kind, f"Conv2D({t.shape[-1]}, {args}", t, shape=t.shape)
        else:
            branch = w.layer(kind, f"DepthwiseConv2D({args}", t, shape=t.shape)
    elif w.chance(0.5):
        branch = _dense(w, t, t.shape[-1])
    else:
        branch = _shape_keeping(w, t)
    kind = w.pick(("Add", "Multiply"))
    return w.layer(kind, f"{kind}(", t, branch, shape=t.shape)


def _merge(w: _Writer, a: Tensor, b: Tensor) -> Tensor:
    """Two tensors into one: Concatenate along the last axis, or Add/Multiply at one width."""
    if a.rank == b.rank and a.shape[:-1] == b.shape[:-1] and w.chance(0.5):
        return w.layer(
            "Concatenate", "Concatenate(", a, b, shape=(*a.shape[:-1], a.shape[-1] + b.shape[-1])
        )
    if a.shape != b.shape:
        a, b = _to_vector(w, a), _to_vector(w, b)
        if w.chance(0.4):
            return w.layer("Concatenate", "Concatenate(", a, b, shape=(a.shape[0] + b.shape[0],))
        if a.shape != b.shape:
            b = _dense(w, b, a.shape[0])
    kind = w.pick(("Add", "Multiply"))
    return w.layer(kind, f"{kind}(", a, b, shape=a.shape)


def _input(w: _Writer, index: int, ranges: dict[str, tuple[int, int]]) -> tuple[str, Tensor]:
    """A new ``keras.Input``: its variable, and the tensor the model continues from."""
    kind = w.pick(("vector", "sequence", "sequence", "image", "image", "tokens"))
    w.features.add(f"input:{kind}")
    if kind == "tokens":
        name, steps, vocab = f"tokens{index}", w.between(3, 6), w.between(5, 20)
        ranges[name] = (0, vocab)
        w.lines.append(f'{name} = keras.Input(({steps},), dtype="int32", name="{name}")')
        mask = w.chance(0.5)
        if mask:
            w.features.add("Embedding(mask_zero)")
        dim = w.between(2, 6)
        token = Tensor(name, (steps,))
        return name, w.layer(
            "Embedding", f"Embedding({vocab}, {dim}, mask_zero={mask}", token, shape=(steps, dim)
        )
    shape: tuple[int, ...]
    if kind == "vector":
        shape = (w.between(3, 8),)
    elif kind == "sequence":
        shape = (w.between(3, 6), w.between(2, 6))
    else:
        shape = (w.between(4, 8), w.between(4, 8), w.between(1, 3))
    name = f"x{index}"
    w.lines.append(f'{name} = keras.Input({shape!r}, name="{name}")')
    return name, Tensor(name, shape)


def generate(seed: int) -> ModelSpec:
    """Draw one model from the grammar (see the module docstring); deterministic in ``seed``."""
    w = _Writer(np.random.default_rng(seed))
    ranges: dict[str, tuple[int, int]] = {}
    inputs_count = 2 if w.chance(0.3) else 1
    drawn = [_input(w, i, ranges) for i in range(inputs_count)]
    input_vars = [var for var, _ in drawn]
    live = [t for _, t in drawn]
    if inputs_count > 1:
        w.features.add("multi_input")

    for _ in range(w.between(2, 6)):
        roll = w.rng.random()
        if roll < 0.15 and len(live) >= 2:
            i, j = sorted(w.rng.choice(len(live), size=2, replace=False).tolist())
            b, a = live.pop(j), live.pop(i)
            live.append(_merge(w, a, b))
        elif roll < 0.3:
            i = int(w.rng.integers(len(live)))
            live[i] = _residual(w, live[i])
        else:
            i = int(w.rng.integers(len(live)))
            out = _unary(w, live[i])
            if w.chance(0.15) and len(live) < MAX_OUTPUTS:
                live.append(out)  # a branch: the input stays live for another output
                w.features.add("branch")
            else:
                live[i] = out

    while len(live) > MAX_OUTPUTS:
        b, a = live.pop(), live.pop()
        live.append(_merge(w, a, b))
    if w.chance(0.3):
        i = int(w.rng.integers(len(live)))
        live[i] = _dense(w, _to_vector(w, live[i]), w.between(2, 5))
    outputs = [t.var for t in live]
    if w.chance(0.1):
        label = w.raw(
            "integer_output",
            f'layers.Lambda(lambda v: ops.cast(v > 0, "int32"), name="{{name}}")({live[0].var})',
            live[0].shape,
        )
        outputs.append(label.var)
    if len(outputs) > 1:
        w.features.add("multi_output")
    randomized = w.chance(0.6)
    w.features.add("weights:randomized" if randomized else "weights:fresh")

    body = [
        *w.lines,
        f'model = keras.Model([{", ".join(input_vars)}], [{", ".join(outputs)}], name="fuzz_{seed}")',
        *([f"randomize(model, {seed})"] if randomized else []),
        "return model",
    ]
    features = sorted(w.features)
    source = _PRELUDE.format(seed=seed, features=", ".join(features))
    source += textwrap.indent("\n".join(body), "    ") + "\n"
    return ModelSpec(seed, source, ranges, features)
