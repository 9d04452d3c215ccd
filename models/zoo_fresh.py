"""Fresh twins of the zoo: each ``zoo.py`` model as Keras builds it, without
``randomize_weights`` (zero biases, ones and zeros in the normalisations, fresh BatchNorm
statistics), so equal-valued variables are everywhere.  ``zoo_fresh.py:<name>`` is the
twin of ``zoo.py:<name>``; the catalog is zoo's (``models/catalog.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import zoo  # the loader puts this directory on sys.path

CUSTOM_OBJECTS = zoo.CUSTOM_OBJECTS


def _unchanged(model: Any, seed: int = zoo.SEED) -> Any:
    return model


def __getattr__(name: str) -> Callable[[], Any]:
    """``zoo_fresh.<name>``: the zoo factory ``name`` with its random weights left out."""
    factory = getattr(zoo, name)
    if name.startswith("_") or not callable(factory) or name == "randomize_weights":
        raise AttributeError(name)

    def fresh() -> Any:
        randomize = zoo.randomize_weights
        zoo.randomize_weights = _unchanged
        try:
            return factory()
        finally:
            zoo.randomize_weights = randomize

    fresh.__doc__ = f"Fresh twin of zoo.{name}: {factory.__doc__}"
    return fresh
