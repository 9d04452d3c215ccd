"""A Keras layer called twice is one torch module called twice: its variables are one trainable
parameter each, and torch's gradient sums over both uses, as TF's does.

ALBERT shares one transformer layer across all its layers; the shared layer's Dense sublayers
live at a nested path (``layer/feedforward_dense``), and their second call once became a frozen
``nn.Linear`` copy, silently missing from the gradient."""

from __future__ import annotations

from pathlib import Path

import torch

import pipeline

FACTORY = '''
import keras
import numpy as np


class Block(keras.layers.Layer):
    """A residual feedforward block on a sequence, like a transformer layer's."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.up = keras.layers.Dense(12, name="up")
        self.down = keras.layers.Dense(8, name="down")
        self.mix = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 8), bias_axes="d",
                                            name="mix")

    def build(self, input_shape):
        self.up.build(input_shape)
        self.down.build(input_shape[:-1] + (12,))
        self.mix.build(input_shape)

    def call(self, x):
        h = x + self.down(keras.activations.gelu(self.up(x)))
        return self.mix(h)


def model():
    keras.utils.set_random_seed(0)
    x = keras.Input((5, 8), name="x")
    block = Block(name="block")
    head = keras.layers.Dense(8, name="head")
    h = block(block(x))                     # one nested layer, called twice on 3-D input
    pooled = keras.ops.mean(h, axis=1)
    out = head(keras.activations.tanh(head(pooled)))  # one top-level Dense, called twice
    model = keras.Model(x, out)
    rng = np.random.default_rng(0)
    for v in model.weights:
        v.assign(rng.normal(0, 0.5, v.shape).astype("float32"))
    return model
'''

DENSE_LAYERS = {"block.up", "block.down", "head"}


def test_a_layer_called_twice_is_one_module_called_twice(tmp_path: Path) -> None:
    factory = tmp_path / "shared.py"
    factory.write_text(FACTORY)
    result = pipeline.convert(f"{factory}:model", tmp_path / "run")
    report = result.report
    assert report["parameter_count"]["status"] == "full", report["parameter_count"]
    rows = {r["tf_name"]: r for r in report["parameters"]}
    assert len(rows) == 8  # kernel and bias of up, down, mix and head
    gradients = {g["tf_name"]: g for g in report["gradients"]}
    assert set(gradients) == set(rows)
    for name, gradient in gradients.items():
        assert gradient["checked"] and gradient["pass"], (name, gradient)
    assert result.verdict == "pass", report

    module = pipeline.load_torch(result.run_dir)
    linears = {n for n, m in module.named_modules() if isinstance(m, torch.nn.Linear)}
    # One nn.Linear per Keras Dense, whatever the number of calls; no frozen copy beside it.
    assert linears >= DENSE_LAYERS, linears
    assert not {n for n in linears if n.rpartition("_")[0] in DENSE_LAYERS}, linears
    assert all(p.requires_grad for p in module.parameters())
    source = (result.run_dir / "torch_model" / "model.py").read_text()
    for layer in DENSE_LAYERS:
        assert source.count(f"self.{layer}(") == 2, layer
    assert "requires_grad_(False)" not in source


def _adopt_kernel(with_copy: bool) -> tuple[dict[str, str], dict[str, object]]:
    """Adopt one Dense kernel read by ``get_attr`` from its recorded (fingerprinted)
    initializer and, ``with_copy``, from an unrecorded transposed copy of its values too."""
    import numpy as np

    from pipeline.core import provenance
    from pipeline.core.fingerprint import fingerprints_for
    from pipeline.to_torch.parameters import adopt_tf_variables, count_trainable

    kernel = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    variables = [{"path": "dense/kernel", "trainable": True, "shape": [3, 4], "has_grad": True}]
    prints = fingerprints_for([kernel])

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.initializers = torch.nn.Module()
            self.initializers.register_buffer("recorded", torch.from_numpy(prints.value(0)))
            self.initializers.register_buffer("copy", torch.from_numpy(kernel.T.copy()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x @ self.initializers.recorded
            return y + x @ self.initializers.copy.T if with_copy else y

    module = torch.fx.symbolic_trace(Graph())
    adoption = adopt_tf_variables(module, variables, [kernel], prints, provenance.Provenance())
    assert [e.torch_name for e in adoption.entries] == ["dense.kernel"]
    return adoption.problems, count_trainable(
        module, variables, adoption.entries, adoption.problems
    )


def test_a_copy_without_fingerprints_is_a_problem_not_a_silent_constant() -> None:
    """A tensor holding a variable's values (here transposed) but not its fingerprints (a
    copy no provenance recorded) is left a constant by torch: the use reading it would not
    train.  The adoption reports it under the variable's name, so the parameter check fails."""
    problems, check = _adopt_kernel(with_copy=True)
    assert "holds a copy of its values without its fingerprints" in problems["dense/kernel"]
    assert check["status"] == "fail"
    assert [p["name"] for p in check["problems"]] == ["dense/kernel"]  # type: ignore[union-attr]

    problems, check = _adopt_kernel(with_copy=False)
    assert not problems
    assert check["status"] == "full"


DISENTANGLED = '''
import keras
import numpy as np
from keras import ops


class Attention(keras.layers.Layer):
    """DeBERTa's disentangled attention, reduced: ``query`` and ``key`` (EinsumDense with a
    ``(heads, dim)`` bias) read the hidden states and again a relative-position table."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.query = keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 2, 4),
                                              bias_axes="de", name="query")
        self.key = keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 2, 4),
                                            bias_axes="de", name="key")

    def build(self, input_shape):
        self.query.build(input_shape)
        self.key.build(input_shape)
        self.rel = self.add_weight(shape=(6, 8), name="rel_embeddings")

    def call(self, x):
        q = self.query(x)                                  # (batch, seq, heads, dim)
        k = self.key(x)
        rel = ops.repeat(ops.expand_dims(self.rel, 0), ops.shape(x)[0], axis=0)
        pos_q = self.query(rel)                            # (batch, 6, heads, dim)
        pos_k = self.key(rel)
        c2p = ops.einsum("aecd,abcd->acbe", pos_k, q)      # (batch, heads, seq, 6)
        p2c = ops.einsum("aecd,abcd->acbe", pos_q, k)
        scores = ops.einsum("abcd,aecd->acbe", q, k)
        return ops.mean(c2p, axis=-1) + ops.mean(p2c, axis=-1) + ops.mean(scores, axis=-1)


def model():
    keras.utils.set_random_seed(0)
    x = keras.Input((None, 8), name="x")
    out = Attention(name="attention")(x)
    model = keras.Model(x, out)
    rng = np.random.default_rng(0)
    for v in model.weights:
        v.assign(rng.normal(0, 0.5, v.shape).astype("float32"))
    return model
'''


def test_an_einsum_dense_called_on_hidden_states_and_a_position_table(tmp_path: Path) -> None:
    """DeBERTa calls its ``query`` and ``key`` EinsumDense on the hidden states (a dynamic
    sequence: tf2onnx writes ``Gemm`` without bias, ``Reshape``, ``Squeeze``, then adds the
    ``(heads, dim)`` bias) and on the relative-position table (``MatMul``, ``Reshape``,
    ``Add``).  Both calls must be one ``nn.Linear`` taking the bias: the Gemm's Linear once
    stayed bias-less, so the two were not one module, the bias landed beside the fused
    Linear as ``bias_1`` and the fused Linear's tensors became buffers (codegen failed)."""
    factory = tmp_path / "disentangled.py"
    factory.write_text(DISENTANGLED)
    result = pipeline.convert(f"{factory}:model", tmp_path / "run")
    report = result.report
    assert report["parameter_count"]["status"] == "full", report["parameter_count"]
    rows = {r["tf_name"]: r for r in report["parameters"]}
    assert len(rows) == 5  # query and key kernel and bias, the position table
    for layer in ("query", "key"):
        assert rows[f"attention/{layer}/kernel"]["torch_name"] == f"attention.{layer}.weight"
        assert rows[f"attention/{layer}/bias"]["torch_name"] == f"attention.{layer}.bias"
    gradients = {g["tf_name"]: g for g in report["gradients"]}
    assert set(gradients) == set(rows)
    for name, gradient in gradients.items():
        assert gradient["checked"] and gradient["pass"], (name, gradient)
    assert result.verdict == "pass", report

    module = pipeline.load_torch(result.run_dir)
    linears = {n for n, m in module.named_modules() if isinstance(m, torch.nn.Linear)}
    assert linears == {"attention.query", "attention.key"}, linears
    assert all(p.requires_grad for p in module.parameters())
    assert not list(module.buffers())
    source = (result.run_dir / "torch_model" / "model.py").read_text()
    for layer in ("query", "key"):
        assert source.count(f"self.attention.{layer}(") == 2, layer
