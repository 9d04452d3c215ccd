"""Where each TF variable is in an ONNX graph: the provenance record, kept in the model.

The export stage writes it, every pass that moves a variable's initializer updates it, and the
import stage reads it (``onnx.ModelProto.metadata_props`` key :data:`METADATA_KEY`, JSON), so
``model.raw.onnx`` and ``model.onnx`` each say which initializer holds which variable:

- ``initializers``: initializer name → its :class:`Part` s.  A part says that the
  initializer (or the ``region`` of it, a box of ``[start, stop)`` per axis) *is* the TF
  variable ``variable`` laid out by ``transform`` (a label of :mod:`pipeline.core.transforms`).
  Most initializers are one whole variable; tf2onnx's fused LSTM weights stack both
  directions' kernels in one ``W`` and pad the bias with zeros (elements no part covers are
  constants of the graph's own);
- ``lost``: variable → why no initializer holds it (e.g. an optimiser folded it into
  another constant);
- ``folded``: variable → what it was folded into, for ``--fold-for-inference`` only;
- ``route``: how the export located the variables (``stateless``: a Keras model's, each a
  graph input of its own; ``signature+variables``: a SavedModel's serving function with each
  variable it reads made a graph input; ``frozen+fingerprints``: a frozen graph searched for
  fingerprints; ``frozen``: a SavedModel that could only be frozen, its variables listed as
  folded and the run inference-only).

Nothing here compares values to find a variable: parts are recorded by the code that made
the initializer (or decoded from fingerprints, :mod:`pipeline.core.fingerprint`).
:func:`check_values` only confirms a record against the values, as a cross-check.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from pipeline.core import onnx_io
from pipeline.core.fingerprint import NOT_A_FINGERPRINT, Fingerprints
from pipeline.core.transforms import apply_transform, compose, describe_index_map

METADATA_KEY = "tf2torch.provenance"

Region = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Part:
    """``initializer[region] == apply_transform(variable's value, transform, region shape)``;
    ``region`` None is the whole initializer."""

    variable: str
    transform: str = "identity"
    region: Region | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out: dict[str, Any] = {"variable": self.variable, "transform": self.transform}
        if self.region is not None:
            out["region"] = [list(r) for r in self.region]
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Part:
        """Inverse of :meth:`to_json`."""
        region = d.get("region")
        return cls(
            str(d["variable"]),
            str(d.get("transform", "identity")),
            None if region is None else tuple((int(a), int(b)) for a, b in region),
        )

    def slices(self) -> tuple[slice, ...]:
        """The region as index slices (empty tuple: everything)."""
        return () if self.region is None else tuple(slice(a, b) for a, b in self.region)


@dataclass
class Provenance:
    """The record of one ONNX model (see the module docstring)."""

    initializers: dict[str, list[Part]] = field(default_factory=dict)
    lost: dict[str, str] = field(default_factory=dict)
    folded: dict[str, str] = field(default_factory=dict)
    route: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "route": self.route,
            "initializers": {k: [p.to_json() for p in v] for k, v in self.initializers.items()},
            "lost": dict(self.lost),
            "folded": dict(self.folded),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Provenance:
        """Inverse of :meth:`to_json`."""
        return cls(
            {k: [Part.from_json(p) for p in v] for k, v in d.get("initializers", {}).items()},
            dict(d.get("lost", {})),
            dict(d.get("folded", {})),
            str(d.get("route", "")),
        )

    def whole(self, initializer: str) -> Part | None:
        """The part of an initializer that is one whole variable, else None."""
        parts = self.initializers.get(initializer)
        if parts and len(parts) == 1 and parts[0].region is None:
            return parts[0]
        return None

    def derive(self, new: str, source: str, step: str, source_shape: Sequence[int]) -> bool:
        """Record that initializer ``new`` is initializer ``source`` (of shape
        ``source_shape``) moved by ``step`` (a transform label).  Only whole-variable sources
        can be derived; returns whether ``source`` was one (False: not tracked, so ``new``
        holds no variable either)."""
        part = self.whole(source)
        if part is None:
            return False
        label = compose(part.transform, step, source_shape)
        self.initializers[new] = [Part(part.variable, label)]
        return True

    def holders(self) -> dict[str, list[str]]:
        """Variable → the initializers holding (part of) it."""
        found: dict[str, list[str]] = {}
        for name, parts in self.initializers.items():
            for part in parts:
                found.setdefault(part.variable, []).append(name)
        return found

    def prune(self, existing: Iterable[str]) -> None:
        """Drop the records of initializers no longer in the graph."""
        keep = set(existing)
        self.initializers = {k: v for k, v in self.initializers.items() if k in keep}


def _props(model: Any) -> MutableMapping[str, str] | None:
    props = getattr(model, "metadata_props", None)
    return props if isinstance(props, MutableMapping) else None


def read(model: onnx.ModelProto | Any) -> Provenance | None:
    """The record of an ``onnx.ModelProto`` or ``onnx_ir.Model``, or None if it has none."""
    props = _props(model)
    if props is not None:
        text = props.get(METADATA_KEY)
    else:
        text = next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)
    return None if text is None else Provenance.from_json(json.loads(text))


def write(model: onnx.ModelProto | Any, record: Provenance) -> None:
    """Store ``record`` in an ``onnx.ModelProto`` or ``onnx_ir.Model``, in place."""
    text = json.dumps(record.to_json(), separators=(",", ":"))
    props = _props(model)
    if props is not None:
        props[METADATA_KEY] = text
        return
    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            entry.value = text
            return
    model.metadata_props.add(key=METADATA_KEY, value=text)


def build_value(
    base: np.ndarray, parts: Sequence[Part], values: Mapping[str, np.ndarray]
) -> np.ndarray:
    """``base`` (the initializer's own value) with every part written from ``values``
    (variable path → value in the TF layout, e.g. real values or fingerprints)."""
    out = np.array(base, copy=True)
    for part in parts:
        target = out[part.slices()] if part.region is not None else out
        placed = apply_transform(values[part.variable], part.transform, target.shape)
        if part.region is None:
            out = np.asarray(placed, dtype=out.dtype).reshape(out.shape).copy()
        else:
            out[part.slices()] = placed
    return out


def check_values(
    model: onnx.ModelProto, record: Provenance, values: Mapping[str, np.ndarray]
) -> dict[str, str]:
    """Confirm each recorded part against the variables' values (bit for bit); returns
    initializer → problem for those that disagree (a pass that moved a variable and recorded
    the move wrongly)."""
    problems: dict[str, str] = {}
    initializers = {t.name: t for t in model.graph.initializer}
    for name, parts in record.initializers.items():
        tensor = initializers.get(name)
        if tensor is None:
            continue
        actual = onnx_io.array(tensor)
        known = [p for p in parts if p.variable in values]
        expected = build_value(actual, known, values)
        if expected.shape != actual.shape or not np.array_equal(_bytes(expected), _bytes(actual)):
            problems[name] = "its value is not the recorded transform of " + ", ".join(
                sorted({p.variable for p in known})
            )
    return problems


def _bytes(array: np.ndarray) -> np.ndarray:
    """``array``'s elements as bytes (a scalar too: a 0-d array has no byte view)."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def decode_parts(
    array: np.ndarray, fingerprints: Fingerprints, paths: Sequence[str]
) -> tuple[list[Part], dict[str, str]]:
    """The parts of a fingerprinted initializer: each variable whose fingerprints it holds,
    the box they fill and the label of their layout.  Returns the parts and, per variable
    whose fingerprints are there but in no box a label describes, why it was left out."""
    owner, flat = fingerprints.decode(array)
    problems: dict[str, str] = {}
    parts: list[Part] = []
    present = np.unique(owner[owner != NOT_A_FINGERPRINT])
    for index in (int(i) for i in present):
        where = np.nonzero(owner == index)
        box = tuple((int(axis.min()), int(axis.max()) + 1) for axis in where)
        slices = tuple(slice(a, b) for a, b in box)
        inside = owner[slices]
        path = paths[index]
        if not np.all(inside == index):
            problems[path] = "its elements are interleaved with other values"
            continue
        shape = fingerprints.shapes[index]
        whole = box == tuple((0, d) for d in array.shape)
        label = describe_index_map(flat[slices], shape)
        if label is None:
            problems[path] = f"in a layout tf2torch cannot describe ({array.shape})"
            continue
        parts.append(Part(path, label, None if whole else box))
    return parts, problems
