"""Keras initializers and layer kinds, recorded while the model is built: each variable's
initializer (for :func:`pipeline.init.reset_parameters`) and whether its layer is a Conv or a
Dense (for ``--scale``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pipeline.export.scale_spec import CONV, DENSE


@contextmanager
def recording_initializers() -> Iterator[dict[int, tuple[Any, Any, Any]]]:
    """While the model is built, record every ``Layer.add_weight``: variable id →
    (variable, layer, the initializer argument).  Keras variables forget their initializer
    once initialised, and custom layers (``add_weight(initializer=...)``) have no
    ``*_initializer`` attribute, so this is the one place every initializer is seen."""
    try:
        from keras.src.layers.layer import Layer
    except ImportError:  # another Keras layout: no initializers recorded
        yield {}
        return
    recorded: dict[int, tuple[Any, Any, Any]] = {}
    original = Layer.add_weight

    def add_weight(self: Any, *args: Any, **kwargs: Any) -> Any:
        variable = original(self, *args, **kwargs)
        initializer = kwargs.get("initializer", args[1] if len(args) > 1 else None)
        recorded[id(variable)] = (variable, self, initializer)  # keeps the id valid
        return variable

    Layer.add_weight = add_weight
    try:
        yield recorded
    finally:
        Layer.add_weight = original


def _json_safe(value: Any) -> Any:
    return json.loads(
        json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    )


def _initializer_json(initializer: Any) -> dict[str, Any] | None:
    import keras

    if isinstance(initializer, str | dict):
        try:
            initializer = keras.initializers.get(initializer)
        except (ValueError, TypeError):
            return None
    if not isinstance(initializer, keras.initializers.Initializer):
        return None
    config = dict(initializer.get_config())
    if isinstance(initializer, keras.initializers.VarianceScaling):
        # Subclasses (HeNormal, GlorotUniform, ...) leave these out of their config.
        config.update(
            scale=float(initializer.scale),
            mode=str(initializer.mode),
            distribution=str(initializer.distribution),
        )
    return {"class_name": type(initializer).__name__, "config": _json_safe(config)}


def describe_initializer(initializer: Any, layer: Any, variable: Any) -> dict[str, Any]:
    """``{"class_name", "config"}`` of the initializer a variable was created with (Keras's
    default when none was given); LSTM's ``unit_forget_bias`` closure becomes its
    ``bias_initializer`` plus ``"unit_forget_bias": true``; anything else that is not a
    ``keras.initializers.Initializer`` is ``{"class_name": <name>, "unsupported": why}``."""
    if initializer is None:  # Layer.add_weight's own default
        initializer = "glorot_uniform" if "float" in str(variable.dtype) else "zeros"
    described = _initializer_json(initializer)
    if described is not None:
        return described
    if variable.name == "bias" and getattr(layer, "unit_forget_bias", False):
        base = _initializer_json(getattr(layer, "bias_initializer", None))
        if base is not None:
            return {**base, "unit_forget_bias": True}
    return {
        "class_name": getattr(initializer, "__name__", type(initializer).__name__),
        "config": {},
        "unsupported": "a plain function, not a keras.initializers.Initializer",
    }


def variable_owners(model: Any) -> dict[int, Any]:
    owners: dict[int, Any] = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for v in [*layer._trainable_variables, *layer._non_trainable_variables]:
            owners.setdefault(id(v), layer)
    return owners


_CONV_CLASSES = (
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
    "DepthwiseConv1D",
    "DepthwiseConv2D",
    "SeparableConv1D",
    "SeparableConv2D",
)


def layer_kind(layer: Any) -> str | None:
    """``conv``, ``dense`` or None (see :mod:`pipeline.scaling`), by ``isinstance``."""
    if layer is None:
        return None
    import keras

    conv = tuple(
        getattr(keras.layers, name) for name in _CONV_CLASSES if hasattr(keras.layers, name)
    )
    if isinstance(layer, conv):
        return CONV
    if isinstance(layer, keras.layers.Dense):
        return DENSE
    return None
