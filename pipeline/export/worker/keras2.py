"""Keras 2 files as Keras 3 models: legacy ``.h5`` files and Keras 2 SavedModels.

Keras 3 reads a Keras 2 ``.h5`` with its own legacy loader, but refuses the layer config keys
Keras 2 wrote and Keras 3 dropped (``LSTM(time_major=False)``, ``groups`` of transposed and
depthwise convolutions, ``MultiHeadAttention``'s build shapes, the random layers' ``rng_type``).
:func:`translated` rewrites a Keras 2 config into its Keras 3 form (dropping keys whose value is
what Keras 3 always does, refusing in one line the ones whose behaviour Keras 3 lacks, and
giving tensor keyword arguments such as ``MultiHeadAttention(q, value=v)`` Keras 3's node
form), and :func:`keras2_h5_loading` lets Keras 3's legacy loader use it, working around two
faults of that loader on the way (a string option named like a merge function, an ``axis``
list).  Weights are then read by that loader, layer by layer, so every variable is a Keras 3
variable of its own.

A Keras 2 SavedModel (it holds ``keras_metadata.pb``) is loaded with ``tf-keras`` (the
``keras2`` extra), written as a Keras 2 ``.h5`` and read back as above; where ``tf-keras``
cannot write it (a subclassed model), the caller exports its ``serving_default`` signature
instead (:mod:`.saved_model`).
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.core.errors import BadInputError
from pipeline.core.messages import one_line

KERAS_METADATA = "keras_metadata.pb"
INSTALL_HINT = (
    "pip install 'tf2torch[keras2]' and then pip install --no-deps tf-keras==2.21.0 "
    "(make setup does both)"
)

_RECURRENT = {"LSTM", "GRU", "SimpleRNN", "RNN", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"}

ANY = object()
"""A key dropped whatever its value: what Keras 3 works out for itself (build shapes)."""

# Keys Keras 2 wrote that Keras 3 refuses, per layer class, with the value at which dropping
# the key changes nothing (Keras 3 always behaves that way), or ANY.
_DROPPED_AT: dict[str, dict[str, Any]] = {
    **{name: {"time_major": False} for name in _RECURRENT},
    # Keras 2 wrote its Conv base class's ``groups`` for every convolution; Keras 3 has it on
    # Conv1D/2D/3D only.
    **{
        name: {"groups": 1}
        for name in (
            "Conv1DTranspose",
            "Conv2DTranspose",
            "Conv3DTranspose",
            "DepthwiseConv1D",
            "DepthwiseConv2D",
        )
    },
    # Keras 2's separable convolutions also wrote the base class's ``kernel_*`` options, which
    # they never used (their kernels are the depthwise and pointwise ones).
    **{
        name: {
            "groups": 1,
            "kernel_initializer": ANY,
            "kernel_regularizer": ANY,
            "kernel_constraint": ANY,
        }
        for name in ("SeparableConv1D", "SeparableConv2D")
    },
    # Keras 3's spatial dropouts take neither: they have no weights to train, and draw their
    # own per-channel noise shape.
    **{
        name: {"trainable": ANY, "noise_shape": None}
        for name in ("SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D")
    },
    # Keras 3's Discretization takes no ``trainable``: it has no weights to train.
    "Discretization": {"trainable": ANY},
    "MultiHeadAttention": {
        "query_shape": ANY,
        "key_shape": ANY,
        "value_shape": ANY,
        "softmax_robust_masking": False,
    },
}

# Keras 2's random preprocessing layers (RandomFlip, RandomCrop, ...) wrote how they drew
# random numbers; Keras 3's draw from a seed generator of their own, and at inference, which is
# all that is converted, they draw nothing.
_RANDOM_LAYER_KEYS = {"rng_type": ANY, "force_generator": ANY}


def _dropped_for(class_name: str) -> dict[str, Any]:
    """The keys :func:`translated` drops from a ``class_name`` config, with their neutral
    values."""
    dropped = dict(_DROPPED_AT.get(class_name, {}))
    if class_name.startswith("Random"):
        dropped.update(_RANDOM_LAYER_KEYS)
    return dropped


# Keras 3's legacy loader turns a string config value into the function of that name in
# ``keras.layers`` (meant for custom activations), so Attention's ``score_mode="dot"`` became
# the merge function ``keras.layers.dot``.  Naming the merge functions as custom objects that
# are not functions keeps such strings strings; no Keras 2 config names these functions.
_MERGE_FUNCTIONS = (
    "add",
    "subtract",
    "multiply",
    "average",
    "maximum",
    "minimum",
    "concatenate",
    "dot",
)


class Keras2Unsupported(BadInputError):
    """A Keras 2 config asks for behaviour that Keras 3 has no form of."""


def translated(config: Any) -> Any:
    """``config`` (a Keras 2 model or layer config, as ``.h5`` files and ``get_config`` give
    it) with every nested layer config in its Keras 3 form (a new object; see the module
    docstring).  Raises :class:`Keras2Unsupported` naming the layer and key."""
    if isinstance(config, list):
        return [translated(item) for item in config]
    if not isinstance(config, dict):
        return config
    out = {key: translated(value) for key, value in config.items()}
    if isinstance(out.get("inbound_nodes"), list):
        out["inbound_nodes"] = [_node_with_tensor_kwargs(node) for node in out["inbound_nodes"]]
    inner = out.get("config")
    class_name = out.get("class_name")
    if isinstance(class_name, str) and isinstance(inner, dict):
        for key, neutral in _dropped_for(class_name).items():
            if key not in inner:
                continue
            if neutral is not ANY and inner[key] != neutral:
                raise Keras2Unsupported(
                    f"Keras 2 layer {inner.get('name', class_name)!r} ({class_name}) has "
                    f"{key}={inner[key]!r}, which Keras 3 has no form of: save it with "
                    f"{key}={neutral!r}"
                )
            del inner[key]
    return out


def _tensor_ref(value: Any) -> bool:
    """Whether ``value`` is a Keras 2 reference to a tensor: ``[layer, node, tensor]``."""
    return (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], str)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value[1:])
    )


def _keras_tensor(ref: list[Any]) -> dict[str, Any]:
    """A Keras 3 serialized tensor standing for the Keras 2 reference ``ref`` (the functional
    loader replaces it by the output it names; shape and dtype are placeholders)."""
    return {
        "class_name": "__keras_tensor__",
        "config": {"shape": [], "dtype": "float32", "keras_history": list(ref)},
    }


def _node_with_tensor_kwargs(node: Any) -> Any:
    """A Keras 2 inbound node whose keyword arguments hold tensors (``MultiHeadAttention(q,
    value=v)``) in Keras 3's form, where Keras 3's legacy loader would pass the references
    on as lists; any other node as it is."""
    if not (isinstance(node, list) and node and all(isinstance(i, list) for i in node)):
        return node
    kwargs = node[-1][3] if len(node[-1]) == 4 and isinstance(node[-1][3], dict) else {}
    if not any(_tensor_ref(v) for v in kwargs.values()):
        return node
    inputs = [_keras_tensor(i[:3]) for i in node]
    return {
        "args": [inputs[0] if len(inputs) == 1 else inputs],
        "kwargs": {k: _keras_tensor(v) if _tensor_ref(v) else v for k, v in kwargs.items()},
    }


@contextmanager
def keras2_h5_loading() -> Iterator[None]:
    """While active, Keras 3's legacy ``.h5`` loader translates the model config it reads
    (:func:`translated`) before building the model."""
    from keras.src.legacy.saving import saving_utils

    original = saving_utils.model_from_config

    def model_from_config(config: Any, custom_objects: Any = None) -> Any:
        shadowed = {name: name for name in _MERGE_FUNCTIONS}
        config = translated(config)
        inner = config.get("config") if isinstance(config, dict) else None
        axis = inner.get("axis") if isinstance(inner, dict) else None
        made = original(config, custom_objects={**shadowed, **(custom_objects or {})})
        # The loader drops an ``axis`` list of more than one axis (LayerNormalization over
        # H, W, C), leaving the layer's default: give the layer, not yet built, its axes.
        if isinstance(axis, list) and len(axis) > 1 and hasattr(made, "axis"):
            if getattr(made, "built", True):
                raise Keras2Unsupported(
                    f"Keras 2 layer {made.name!r} normalises over axes {axis}, which "
                    "Keras 3's loader lost"
                )
            made.axis = list(axis)
        return made

    saving_utils.model_from_config = model_from_config
    try:
        yield
    finally:
        saving_utils.model_from_config = original


def is_keras2_saved_model(path: str) -> bool:
    """Whether the SavedModel directory ``path`` was written by Keras 2 (``model.save`` of
    ``tf.keras`` before TF 2.16, or of ``tf-keras``)."""
    return (Path(path) / KERAS_METADATA).is_file()


def tf_keras_installed() -> bool:
    """Whether ``tf-keras`` (the ``keras2`` extra) can be imported."""
    try:
        return importlib.util.find_spec("tf_keras") is not None
    except (ImportError, ValueError):
        return False


def require_tf_keras(path: str) -> None:
    """Refuse, in one line naming the ``keras2`` extra, to load the Keras 2 SavedModel at
    ``path`` where ``tf-keras`` is not installed."""
    if not tf_keras_installed():
        raise BadInputError(
            f"{path} is a Keras 2 SavedModel ({KERAS_METADATA}); loading it as a Keras model "
            f"needs tf-keras: {INSTALL_HINT}"
        )


class NotRebuildable(Exception):
    """tf-keras cannot load the model, or cannot write it as ``.h5`` (a subclassed model):
    there is no config Keras 3 could rebuild it from."""


@contextmanager
def keras2_saved_model_as_h5(path: str) -> Iterator[Path]:
    """Load the Keras 2 SavedModel at ``path`` with ``tf-keras`` and write it as a Keras 2
    ``.h5`` in a temporary directory; yields that file (removed afterwards).  Raises
    :class:`BadInputError` when ``tf-keras`` is missing, :class:`NotRebuildable` when it
    cannot load the model or write it with its config (a subclassed model)."""
    require_tf_keras(path)
    import tf_keras

    try:
        # No custom objects: the user's are Keras 3 classes.  tf-keras revives a custom layer
        # from the SavedModel, and the .h5 it writes names its class for Keras 3 to resolve.
        model = tf_keras.models.load_model(path, compile=False)
    except Exception as err:
        raise NotRebuildable(f"tf-keras cannot load it: {one_line(err)}") from None
    if not getattr(model, "_is_graph_network", False) and not isinstance(
        model, tf_keras.Sequential
    ):
        raise NotRebuildable(f"a subclassed Keras 2 model ({type(model).__name__})")
    with tempfile.TemporaryDirectory(prefix="tf2torch-keras2-") as scratch:
        target = Path(scratch) / "keras2.h5"
        try:
            model.save(target, save_format="h5")
        except Exception as err:
            raise NotRebuildable(f"tf-keras cannot write it as .h5: {one_line(err)}") from None
        yield target
