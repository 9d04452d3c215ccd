"""Llama-style decoders at LLM scale for ``make bench-big`` (issue 27's memory path).

Each factory builds the real ``keras_hub.models.LlamaBackbone`` with random weights (nothing
downloaded): keras-hub's own initializers, seeded, and every constant-initialised variable
redrawn as the keras-hub corpus does (``models/keras_hub.py``'s ``randomize``), so a misplaced norm scale
changes the outputs.  Inputs are ``token_ids`` in ``[0, VOCAB)`` and ``padding_mask``.

- :func:`llama_1b`: TinyLlama's dimensions, 1.1 billion parameters (22 layers, hidden 2048,
  MLP 5632, 32 query and 4 key/value heads, vocabulary 32000): 4.4 GB of float32 weights.
- :func:`llama_300m`: the same depth and vocabulary at half the width (hidden 1024, MLP 2816,
  16 query and 4 key/value heads): 0.3 billion parameters, 1.2 GB.
- :func:`llama_small`: the same family at 2 layers of width 256, for tests of the path.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import keras


def _hub_corpus() -> ModuleType:
    """``models/keras_hub.py`` (the keras-hub corpus) under its own name: imported as
    ``keras_hub`` it would shadow the real package it imports."""
    spec = importlib.util.spec_from_file_location(
        "hub_corpus", Path(__file__).with_name("keras_hub.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_corpus = _hub_corpus()

VOCAB = 32000
"""Vocabulary of every configuration here (Llama 2's)."""


def _llama(layers: int, hidden: int, mlp: int, heads: int, kv_heads: int, vocab: int) -> keras.Model:
    # the corpus's own build: seeded, then every constant-initialised variable redrawn
    return _corpus._build(
        lambda: _corpus.models.LlamaBackbone(
            vocabulary_size=vocab,
            num_layers=layers,
            num_query_heads=heads,
            num_key_value_heads=kv_heads,
            hidden_dim=hidden,
            intermediate_dim=mlp,
        )
    )


def llama_1b() -> keras.Model:
    """TinyLlama-sized ``LlamaBackbone``: 1.1 billion parameters, 4.4 GB of float32."""
    return _llama(22, 2048, 5632, 32, 4, VOCAB)


def llama_300m() -> keras.Model:
    """``LlamaBackbone`` at half TinyLlama's width: 0.3 billion parameters, 1.2 GB."""
    return _llama(22, 1024, 2816, 16, 4, VOCAB)


def llama_small() -> keras.Model:
    """``LlamaBackbone`` with 2 layers of width 256 and vocabulary 32000 (9 M parameters)."""
    return _llama(2, 256, 704, 4, 2, VOCAB)


def llama_mid() -> keras.Model:
    """``LlamaBackbone`` with 6 layers of width 768 (about 0.1 billion parameters)."""
    return _llama(6, 768, 2048, 12, 4, VOCAB)
