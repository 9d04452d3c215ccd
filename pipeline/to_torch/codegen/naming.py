"""Names in the generated code: one sanitising rule, class names, and readable temporaries.

Keras allows layer names that are not Python identifiers (``/``, ``-``, ``.``, a leading
digit, ``lambda``).  :func:`sanitize` is the one rule applied to every name the generated
file uses -- attribute paths, forward arguments, temporaries -- and it is the rule
:mod:`pipeline.to_torch.parameters` already applies to torch parameter paths (non-word characters
become ``_``, a leading digit gets a ``_`` prefix), plus a trailing ``_`` for Python keywords
and for names ``nn.Module`` already uses (``forward``, ``training``...).

Temporaries in ``forward`` are named after the Keras layer that produced them, read from the
ONNX node name that tf2onnx built from TF's name scopes (``cnn_1/conv_1/Relu`` → ``conv``):
see :class:`TemporaryNames`.
"""

from __future__ import annotations

import builtins
import keyword
import re
from collections.abc import Collection, Iterable

import torch

# Names the generated file binds at module level or that forward must not shadow.
RESERVED = frozenset({"self", "torch", "nn", "F", "annotations"})
_MODULE_ATTRIBUTES = frozenset(dir(torch.nn.Module))


def sanitize(name: str) -> str:
    """``name`` as a Python identifier: non-word characters become ``_``, a leading digit
    gets a ``_`` prefix, and a keyword gets a trailing ``_`` (``dense-1`` → ``dense_1``,
    ``1x1`` → ``_1x1``, ``lambda`` → ``lambda_``)."""
    part = re.sub(r"\W", "_", name.removesuffix(":0"))
    if not part or part[0].isdigit():
        part = f"_{part}"
    return f"{part}_" if keyword.iskeyword(part) else part


def attribute_name(name: str) -> str:
    """``name`` usable as an ``nn.Module`` attribute: :func:`sanitize`, plus a trailing
    ``_`` where ``nn.Module`` has an attribute of that name (``forward``, ``eval``...)."""
    part = sanitize(name)
    return f"{part}_" if part in _MODULE_ATTRIBUTES else part


def attribute_path(path: str) -> str:
    """A dotted torch path with every part made a valid attribute name (a Sequential's
    numeric parts included: ``Conv1.1`` → ``Conv1._1``)."""
    return ".".join(attribute_name(part) for part in path.split("."))


def class_name(model_name: str | None, fallback: str = "Model") -> str:
    """The generated class's name: the Keras model's name in CamelCase
    (``dense_mlp`` → ``DenseMlp``, ``mobilenetv2_1.00_96`` → ``Mobilenetv2_1_00_96``)."""
    words = [w for w in re.split(r"[^0-9A-Za-z]+", model_name or "") if w]
    name = ""
    for word in words:
        if name and name[-1].isdigit() and word[0].isdigit():
            name += "_"
        name += word[0].upper() + word[1:]
    if not name:
        return fallback
    return name if name[0].isalpha() else f"{fallback}{name}"


def snake(name: str) -> str:
    """``name`` in lower snake case (``BiasAdd`` → ``bias_add``, ``bn_Conv1`` → ``bn_conv1``,
    ``1`` → ``x_1``: never a leading digit)."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    text = re.sub(r"_+", "_", sanitize(spaced).lower()).strip("_") or "x"
    # Stripping sanitize's `_` prefix must not leave a name that starts with a digit.
    return f"x_{text}" if text[0].isdigit() else text


class ScopeReader:
    """Reads the Keras layer path out of an ONNX node name built from TF name scopes.

    tf2onnx names nodes after their TF op: ``<model>_1/<layer>_1/<sub-layer>_1/<op>``, where
    TF made each scope unique by appending ``_N`` (Keras calls the model once while building
    it, so the exported call's scopes end in ``_1``).  The model's own scope is dropped first.
    With the model's layer names known, a scope part is a layer when it is one, or is one
    plus ``_N``; other parts (``Tensordot``, ``batchnorm``) are the op's own scopes and are
    dropped.  Without layer names (a SavedModel), every scope part is kept.
    """

    def __init__(self, layer_names: Collection[str], model_name: str | None) -> None:
        self.layers = set(layer_names)
        # TF turns a "." in the model's name into a scope separator.
        self.model_scope = [p for p in (model_name or "").replace(".", "/").split("/") if p]

    def _layer(self, part: str) -> str | None:
        if part in self.layers:
            return part
        stripped = re.sub(r"_\d+$", "", part)
        return stripped if stripped in self.layers else None

    def _without_model(self, scopes: list[str]) -> list[str]:
        """``scopes`` without the model's own outermost scope (``cnn_1``), if present."""
        size = len(self.model_scope)
        head = scopes[:size]
        if size and len(head) == size and head[:-1] == self.model_scope[:-1]:
            last = re.sub(r"_\d+$", "", head[-1])
            if self.model_scope[-1] in (head[-1], last):
                return scopes[size:]
        return scopes

    def layer_path(self, onnx_name: str) -> list[str]:
        """The Keras layer names in ``onnx_name``'s scopes, outermost first (may be empty)."""
        parts = [p for p in onnx_name.split("/") if p]
        scopes = self._without_model(parts[:-1])
        if self.layers:
            found = [self._layer(p) for p in scopes]
            return [p for p in found if p is not None]
        return [p for p in (re.sub(r"_\d+$", "", s) for s in scopes) if p]


class TemporaryNames:
    """Allocates forward's variable names.

    A value is named after its layer (``conv``); the next op of the same layer reuses the
    name (``conv = F.relu(conv)``) when the value bound to it is not read again, the way a
    person writes a chain.  When that value is still needed, the op gets the layer name plus
    its own (``conv_relu``), then a number.  A name never shadows ``torch``, ``nn``, ``F``,
    ``self``, a builtin, or a name given to :meth:`reserve`.
    """

    def __init__(self, reserved: Iterable[str] = ()) -> None:
        self._reserved = set(RESERVED) | set(reserved) | set(dir(builtins))
        self._live_until: dict[str, int] = {}

    def reserve(self, name: str) -> None:
        """Never hand out ``name`` (e.g. a helper function's name)."""
        self._reserved.add(name)

    def bind(self, name: str, last_use: int) -> None:
        """Record that ``name`` holds a value read until statement ``last_use``."""
        self._live_until[name] = last_use

    def _free(self, name: str, now: int) -> bool:
        if name in self._reserved or keyword.iskeyword(name):
            return False
        return self._live_until.get(name, -1) <= now

    def allocate(self, base: str, op: str, now: int, last_use: int) -> str:
        """A name for the value computed by statement ``now`` and read until ``last_use``."""
        base = snake(base)
        candidates = [base, f"{base}_{snake(op)}"] if op and snake(op) != base else [base]
        name = next((c for c in candidates if self._free(c, now)), None)
        n = 1
        while name is None:
            candidate = f"{candidates[-1]}_{n}"
            if self._free(candidate, now):
                name = candidate
            n += 1
        self.bind(name, last_use)
        return name
