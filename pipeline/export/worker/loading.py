"""Loading a TF model in the worker: Keras files, factories and SavedModels behind one
interface (:class:`LoadedModel`), with their signatures and variables."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from pipeline.core.errors import BadInputError
from pipeline.core.messages import one_line  # re-exported: the worker's one-line errors
from pipeline.core.signature import TensorSpec
from pipeline.core.weight_store import WeightStore
from pipeline.export.sources import Source, SourceKind
from pipeline.export.worker.frozen_export import export_keras_frozen
from pipeline.export.worker.initializers import (
    describe_initializer,
    layer_kind,
    recording_initializers,
    variable_owners,
)
from pipeline.export.worker.stateless_export import (
    export_stateless,
    flat_outputs,
    pack_inputs,
)


@dataclass(frozen=True)
class TfVariable:
    """One variable of the model: its path (``layer/sublayer/name``), trainability and value."""

    path: str
    trainable: bool
    variable: Any  # tf.Variable
    batchnorm: dict[str, float] | None = None  # epsilon, momentum of its BatchNormalization
    info: dict[str, Any] | None = None
    """Keras models only: ``layer`` (path), ``layer_class``, ``layer_kind`` (``conv``,
    ``dense`` or None, see :mod:`pipeline.scaling`) and ``initializer`` (``class_name``,
    ``config``; see :func:`describe_initializer`)."""


@dataclass
class LoadedModel:
    """A loaded TF model behind one interface, whatever its source format.

    ``call`` takes TF tensors keyed by input name and returns the output tensors in output
    order (inference mode); it is what both the reference run and the gradients use.
    """

    inputs: list[TensorSpec]
    call: Callable[[dict[str, Any]], list[Any]]
    export: Callable[..., Any]
    """``export(specs, opset, fingerprint=True)`` → ``onnx.ModelProto`` with its provenance
    record; ``fingerprint=False`` traces TF's own graph (real values everywhere, no record),
    for ``tf2torch diff``."""
    output_names: list[str] | None = None
    description: str = ""
    variables: list[TfVariable] = field(default_factory=list)
    keras_model: Any = None  # the keras.Model, when the source is a Keras model
    scaling: dict[str, Any] | None = None  # what --scale did (report.json's ``scaling``)
    variable_feeds: Callable[[], dict[str, np.ndarray]] = dict
    """After :attr:`export` started: every placeholder of the traced graph that is not a
    model input (a variable, a captured constant) → its value, by TF tensor name (what a
    run of that graph must be fed besides the model's inputs)."""

    def run(self, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs for numpy inputs, as numpy arrays."""
        import tensorflow as tf

        return [np.asarray(t) for t in self.call({k: tf.constant(v) for k, v in arrays.items()})]


def _import_user_module(location: str) -> ModuleType:
    """Import ``path/to/file.py`` or ``package.module`` (the current directory is importable)."""
    if location.endswith(".py"):
        path = Path(location)
        if not path.is_file():
            raise BadInputError(f"module file not found: {location}")
        name = f"_tf2torch_user_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        # The user's file may import siblings next to it.
        sys.path.insert(0, str(path.parent))
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(location)


def _dtype_name(dtype: Any) -> str:
    """numpy's name for a Keras input dtype; ``string`` for a string input, which numpy has
    no dtype for (the worker then refuses it by name)."""
    return "string" if str(dtype) == "string" else np.dtype(dtype).name


def _keras_model(
    model: Any,
    description: str,
    override: list[TensorSpec],
    recorded: dict[int, tuple[Any, Any, Any]] | None = None,
) -> LoadedModel:
    import keras

    if not isinstance(model, keras.Model):
        raise BadInputError(f"{description} is a {type(model).__name__}, not a Keras model")
    if override:
        specs = override
    else:
        try:
            keras_inputs = model.inputs
        except (AttributeError, ValueError):
            keras_inputs = None
        if not keras_inputs:
            raise BadInputError(
                f"{description} has no input signature (a subclassed model that was never "
                "built?); give one with --input-spec NAME=DTYPE[None,...]"
            )
        specs = [TensorSpec(t.name, _dtype_name(t.dtype), tuple(t.shape)) for t in keras_inputs]

    def call(tensors: dict[str, Any]) -> list[Any]:
        args = [tensors[s.name] for s in specs]
        result = model(pack_inputs(model, args), training=False)
        return flat_outputs(result)

    variables = _keras_variables(model, recorded or {})
    paths = [v.path for v in variables]

    last_feeds: dict[str, Any] = {}

    def export(
        specs: list[TensorSpec],
        opset: int,
        fingerprint: bool = True,
        store: WeightStore | None = None,
    ) -> Any:
        last_feeds.clear()
        try:
            return export_stateless(
                model, specs, opset, paths, fingerprint=fingerprint, feeds=last_feeds, store=store
            ).proto
        except Exception as err:  # a model stateless_call cannot trace: the frozen route
            first = one_line(err)
            print(f"stateless export failed ({first}); exporting the frozen graph")
            last_feeds.clear()
            try:
                return export_keras_frozen(model, specs, opset, paths, fingerprint=fingerprint)
            except Exception as frozen:
                # Both routes failed: the first one's cause is usually the model's own (a
                # Python loop over a run-time length), the fallback's only a consequence.
                second = one_line(frozen)
                also = "" if second == first else f" (then the frozen-graph route: {second})"
                raise ExportRoutesFailed(f"{first}{also}") from frozen

    def feeds() -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in last_feeds.items()}

    return LoadedModel(
        inputs=specs,
        call=call,
        export=export,
        description=description,
        variables=variables,
        keras_model=model,
        variable_feeds=feeds,
    )


class ExportRoutesFailed(Exception):
    """Both export routes failed: the message is the first route's ``Type: cause``, then the
    fallback's where it differs."""


def _keras_variables(model: Any, recorded: dict[int, tuple[Any, Any, Any]]) -> list[TfVariable]:
    import keras

    batchnorm: dict[int, dict[str, float]] = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            config = {"epsilon": float(layer.epsilon), "momentum": float(layer.momentum)}
            for v in layer.weights:
                batchnorm[id(v)] = config
    owners = variable_owners(model)
    weights = list(model.weights)
    outer = top_level_owners(model)
    paths = unique_paths([v.path for v in weights], [outer.get(id(v)) for v in weights])
    found = []
    for v, path in zip(weights, paths, strict=True):
        _, layer, initializer = recorded.get(id(v), (None, owners.get(id(v)), None))
        info = {
            "layer": path.rpartition("/")[0],
            "layer_class": type(layer).__name__ if layer is not None else None,
            "layer_kind": layer_kind(layer),
            "initializer": describe_initializer(initializer, layer, v)
            if id(v) in recorded
            else None,
        }
        found.append(TfVariable(path, bool(v.trainable), v.value, batchnorm.get(id(v)), info))
    return found


def top_level_owners(model: Any) -> dict[int, str]:
    """The name of the outermost layer of ``model`` (not ``model`` itself) that holds each
    variable, by ``id``: the sub-model a variable belongs to."""
    names: dict[int, str] = {}
    for layer in model._flatten_layers(include_self=False, recursive=False):
        for v in layer.weights:
            names.setdefault(id(v), str(layer.name))
    return names


def unique_paths(paths: Sequence[str], qualifiers: Sequence[str | None]) -> list[str]:
    """Every variable's key: its Keras ``path``, made unique where two variables share one.

    Keras builds a functional sub-model's layers outside the sub-model's name scope, so two
    sub-models with same-named layers (keras-hub CLIP's vision and text encoders both have
    ``layer_norm``...) give their variables the same ``path``.  The provenance record, the
    parameter table and the gradients key variables by path, so every variable of a
    sub-model (``qualifiers``: the outermost layer holding each variable) that holds a
    repeated path is named by that sub-model (``vision/layer_norm/gamma``): all of it, so
    its layers stay together and cannot nest under the other's (SigLIP's text ``head``
    Dense and vision ``head/attention/...``).  Where that does not tell them apart, the
    later ones (in ``model.weights`` order) take a numbered layer, ``layer_norm_1/gamma``,
    never a path another variable has.  A model without repeated paths keeps them all."""
    counts = Counter(paths)
    clashing = {q for p, q in zip(paths, qualifiers, strict=True) if q and counts[p] > 1}
    named = [
        f"{q}/{p}" if q in clashing and not p.startswith(f"{q}/") else p
        for p, q in zip(paths, qualifiers, strict=True)
    ]
    counts = Counter(named)
    taken = set(named)
    out: list[str] = []
    for name in named:
        if counts[name] == 1 or name not in out:  # the first of a group keeps its path
            out.append(name)
            continue
        layer, slash, attr = name.rpartition("/")
        n, unique = 0, name
        while unique in taken:
            n += 1
            unique = f"{layer}_{n}{slash}{attr}" if slash else f"{name}_{n}"
        taken.add(unique)
        out.append(unique)
    return out


def _load_keras_file(
    location: str,
    custom_objects: dict[str, Any],
    request: dict[str, Any],
    shown: str | None = None,
) -> Any:
    """A ``.keras`` or ``.h5`` file as a Keras 3 model (a Keras 2 ``.h5``'s legacy config
    translated, :mod:`.keras2`); errors name the file ``shown`` (default: ``location``)."""
    import keras

    from pipeline.export.worker.keras2 import Keras2Unsupported, keras2_h5_loading

    try:
        with keras2_h5_loading():
            return keras.models.load_model(
                location,
                # train-check reads the compiled optimizer and loss; export does not need them
                compile=bool(request.get("compile", False)),
                safe_mode=request.get("safe_mode", True),
                custom_objects=custom_objects or None,
            )
    except Keras2Unsupported:
        raise
    except Exception as err:
        hint = ""
        if "safe_mode" in str(err):
            hint = " (the file holds code; pass --unsafe only if you trust it)"
        # Keras's "Error when deserializing class X using config={...}" hides the cause
        # after the whole config: say the cause.
        cause = str(err).rpartition("Exception encountered: ")[2]
        why = one_line(err) if cause == str(err) else f"{type(err).__name__}: {cause}"
        raise BadInputError(f"cannot load {shown or location}: {one_line(ValueError(why))}{hint}") from None


def _saved_model(
    location: str,
    override: list[TensorSpec],
    custom_objects: dict[str, Any],
    request: dict[str, Any],
    recorded: dict[int, tuple[Any, Any, Any]],
) -> LoadedModel:
    """A SavedModel: a Keras 2 one rebuilt as the Keras 3 model it holds where it can be
    (:mod:`.keras2`), any other (or a subclassed Keras 2 model) through its serving signature
    (:mod:`.saved_model`)."""
    from pipeline.export.worker.keras2 import (
        NotRebuildable,
        is_keras2_saved_model,
        keras2_saved_model_as_h5,
        require_tf_keras,
    )
    from pipeline.export.worker.saved_model import load_saved_model

    if not is_keras2_saved_model(location):
        return load_saved_model(location, override)
    require_tf_keras(location)
    try:
        with keras2_saved_model_as_h5(location) as h5:
            model = _load_keras_file(str(h5), custom_objects, request, shown=location)
    except (NotRebuildable, BadInputError) as err:
        why = f"a Keras 2 SavedModel that Keras 3 cannot rebuild ({err})"
        print(f"{location}: {why}; exporting its serving signature")
        return load_saved_model(location, override, why)
    return _keras_model(model, f"Keras 2 SavedModel {location}", override, recorded)


def load_model(request: dict[str, Any]) -> LoadedModel:
    """Load the request's model (``source``, ``input_specs``, ``custom_objects``,
    ``safe_mode``) and read its signature and variables, recording each variable's
    initializer.  Raises :class:`BadInputError`.  Workers call
    :func:`pipeline.export.worker.scaling.load_and_scale`, which also applies ``--scale``."""
    with recording_initializers() as recorded:
        return _load_model(request, recorded)


def _load_model(request: dict[str, Any], recorded: dict[int, tuple[Any, Any, Any]]) -> LoadedModel:
    source = Source(
        SourceKind(request["source"]["kind"]),
        request["source"]["location"],
        request["source"].get("function"),
    )
    override = [TensorSpec.from_json(d) for d in request.get("input_specs", [])]
    custom_objects: dict[str, Any] = {}
    if request.get("custom_objects"):
        try:
            module = _import_user_module(request["custom_objects"])
        except BadInputError:
            raise
        except Exception as err:
            raise BadInputError(
                f"--custom-objects {request['custom_objects']} failed to import: {one_line(err)}"
            ) from None
        custom_objects = dict(getattr(module, "CUSTOM_OBJECTS", {}))

    if source.kind is SourceKind.SAVED_MODEL:
        return _saved_model(source.location, override, custom_objects, request, recorded)
    if source.kind in (SourceKind.KERAS, SourceKind.H5):
        model = _load_keras_file(source.location, custom_objects, request)
        return _keras_model(model, source.location, override, recorded)
    try:
        module = _import_user_module(source.location)
    except BadInputError:
        raise
    except Exception as err:
        raise BadInputError(f"cannot import {source.location}: {one_line(err)}") from None
    factory = getattr(module, source.function or "", None)
    if not callable(factory):
        raise BadInputError(f"{source.location} has no function {source.function!r}")
    try:
        model = factory()
    except Exception as err:
        raise BadInputError(f"factory {source} raised {one_line(err)}") from None
    return _keras_model(model, str(source), override, recorded)
