"""What a fixup pass is, and what the runner records about it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import onnx


@dataclass(frozen=True)
class PassResult:
    """A pass's output graph and how many rewrites it made (0: the graph is unchanged)."""

    model: onnx.ModelProto
    changes: int


@runtime_checkable
class FixupPass(Protocol):
    """A graph-to-graph fixup.  ``name`` is unique; ``apply`` must not mutate its input."""

    name: str
    description: str

    def apply(self, model: onnx.ModelProto) -> PassResult:
        """Return the rewritten graph and the number of rewrites made."""
        ...


@dataclass
class PassRecord:
    """What one pass did in a run, for the report.

    ``check`` says how the pass was verified: ``numeric`` (ONNX Runtime outputs before and
    after agree), ``validity`` (the graph only became runnable with this pass, so there were
    no numbers before it: checker and shape inference only), or ``none`` (the graph is still
    not valid ONNX after it, e.g. it holds TF ops a later pass or patch handles).
    """

    name: str
    status: str
    seconds: float
    nodes_before: int
    nodes_after: int
    changes: int
    check: str
    max_abs_change: float | None = None
    note: str = ""
    """Why the pass could not be checked numerically (empty when it was, or did nothing)."""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "name": self.name,
            "status": self.status,
            "seconds": self.seconds,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "changes": self.changes,
            "check": self.check,
            "max_abs_change": self.max_abs_change,
            "note": self.note,
        }
