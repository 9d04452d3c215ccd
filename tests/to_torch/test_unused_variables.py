"""A trainable variable the outputs never read (a mask token, a head left out of the outputs)
keeps a torch parameter of its own, marked unused, with its zero gradient checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import pipeline

FACTORY = '''
import keras
import numpy as np


class MaskedEmbedding(keras.layers.Layer):
    """Adds a learned offset; its mask token (like DINOv2's) is only read when masking."""

    def build(self, input_shape):
        self.offset = self.add_weight(shape=(input_shape[-1],), name="offset")
        self.mask_token = self.add_weight(shape=(1, input_shape[-1]), name="mask_token")
        # A whole sublayer the call never uses (SmolLM3's rotary_emb, XLNet's mask layer).
        self.unused_proj = keras.layers.Dense(2, name="unused_proj")
        self.unused_proj.build(input_shape)

    def call(self, x):
        return x + self.offset


def model():
    keras.utils.set_random_seed(0)
    x = keras.Input((4, 6), name="x")
    h = MaskedEmbedding(name="embed")(x)
    out = keras.layers.Dense(3, name="head")(h)
    model = keras.Model(x, out)
    rng = np.random.default_rng(0)
    for v in model.weights:
        v.assign(rng.normal(0, 0.5, v.shape).astype("float32"))
    return model
'''


def test_unused_variable_is_a_parameter_with_a_checked_zero_gradient(tmp_path: Path) -> None:
    factory = tmp_path / "unused.py"
    factory.write_text(FACTORY)
    result = pipeline.convert(f"{factory}:model", tmp_path / "run")
    report = result.report
    assert report["parameter_count"]["status"] == "full", report["parameter_count"]
    rows = {r["tf_name"]: r for r in report["parameters"]}
    token = rows["embed/mask_token"]
    assert token["unused"] is True
    assert token["torch_name"] and token["trainable"]
    assert rows["embed/offset"]["unused"] is False
    for name in ("embed/unused_proj/kernel", "embed/unused_proj/bias"):
        assert rows[name]["unused"] is True and rows[name]["torch_name"], rows[name]
    gradients = {g["tf_name"]: g for g in report["gradients"]}
    assert gradients["embed/mask_token"]["checked"] and gradients["embed/mask_token"]["pass"]
    assert gradients["embed/mask_token"]["max_abs"] == 0.0
    assert result.verdict == "pass"

    module = pipeline.load_torch(result.run_dir)
    params = dict(module.named_parameters())
    parameter = params[token["torch_name"]]
    assert parameter.requires_grad and tuple(parameter.shape) == (1, 6)
    assert token["torch_name"] in module.state_dict()
    out = module(torch.from_numpy(np.ones((2, 4, 6), np.float32)))
    out.sum().backward()
    assert parameter.grad is None or float(parameter.grad.abs().sum()) == 0.0
