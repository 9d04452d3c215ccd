"""Input signatures: names, dtypes and shapes of a model's inputs, JSON-serialisable.

This module must stay free of TensorFlow and torch imports: both the TF worker and the
orchestrator use it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


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

    def concrete_shape(self, batch: int) -> tuple[int, ...]:
        """The shape with the leading dynamic dimension set to ``batch``.

        Raises ``ValueError`` if a non-leading dimension is dynamic: such shapes need a
        concrete size from ``--input-spec`` (or the inputs themselves from ``--inputs``).
        """
        dims: list[int] = []
        for i, d in enumerate(self.shape):
            if d is None:
                if i != 0:
                    example = ",".join(
                        "None" if j == 0 else "SIZE" if e is None else str(e)
                        for j, e in enumerate(self.shape)
                    )
                    raise ValueError(
                        f"input {self.name!r} has dynamic dimension {i} in shape "
                        f"{list(self.shape)}; give it a size with --input-spec "
                        f"{self.name}={self.dtype}[{example}] or pass --inputs FILE.npz"
                    )
                dims.append(batch)
            else:
                dims.append(int(d))
        return tuple(dims)
