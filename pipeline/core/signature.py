"""Input signatures: names, dtypes and shapes of a model's inputs, JSON-serialisable.

This module must stay free of TensorFlow and torch imports: both the TF worker and the
orchestrator use it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

DYNAMIC_SIZE = 8
"""Size drawn inputs get along a dynamic dimension other than batch (e.g. sequence length)."""


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output.  ``None`` in ``shape`` is a dynamic dimension."""

    name: str
    dtype: str  # numpy dtype name, e.g. "float32", "int32"
    shape: tuple[int | None, ...]

    def to_json(self) -> dict[str, object]:
        """Return a JSON-ready dict (the inverse of :meth:`from_json`)."""
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_json(cls, d: dict[str, object]) -> TensorSpec:
        """Build a spec from :meth:`to_json`'s output."""
        shape = d["shape"]
        assert isinstance(shape, list)
        return cls(name=str(d["name"]), dtype=str(d["dtype"]), shape=tuple(shape))

    def concrete_shape(self, batch: int, dynamic: int = DYNAMIC_SIZE) -> tuple[int, ...]:
        """The shape with the leading dynamic dimension set to ``batch`` and every other
        dynamic dimension (a sequence length) set to ``dynamic``.  Those dimensions stay
        dynamic in the exported models; this is only the size the comparison inputs get."""
        return tuple(
            (batch if i == 0 else dynamic) if d is None else int(d)
            for i, d in enumerate(self.shape)
        )
