"""``migrate --shard K/N``: the K-th of N deterministic slices of a manifest, for CI matrices.

A model belongs to shard ``1 + (int(sha256(name)[:16], 16) mod N)``: it depends on the
model's name and N only, so adding, removing or reordering other models never moves a model
to another shard (a CI cache of shard K's run directories stays useful for ``--resume``).
The price is that shards are balanced only on average: with M models each shard gets about
M/N, give or take sqrt(M/N), and a shard may be empty (it then writes an empty, complete
summary and exits 0).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from pipeline.core.errors import BadInputError
from pipeline.migration.manifest import Manifest, ModelSpec

RULE = "1 + int(sha256(name)[:16], 16) % N"
"""How a model's shard is chosen (recorded in each shard's summary)."""
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based, as CI matrices count)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"K/N"`` as a :class:`Shard`; raises :class:`BadInputError` unless 1 <= K <= N."""
    match = _SHARD.match(text)
    if match is None:
        raise BadInputError(f"--shard must be K/N such as 2/4, got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if not 1 <= index <= count:
        raise BadInputError(f"--shard {text}: K must be between 1 and N (1 <= K <= N)")
    return Shard(index, count)


def shard_of(name: str, count: int) -> int:
    """The shard (1..count) the model called ``name`` belongs to."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    return 1 + int(digest[:16], 16) % count


def select(models: list[ModelSpec], shard: Shard | None) -> list[ModelSpec]:
    """The models of ``shard`` in manifest order (all of them without a shard)."""
    if shard is None:
        return list(models)
    return [m for m in models if shard_of(m.name, shard.count) == shard.index]


def shard_json(shard: Shard, manifest: Manifest, models: list[ModelSpec]) -> dict[str, Any]:
    """The ``shard`` entry of a shard's ``summary.json``: what ``migrate-merge`` checks."""
    return {
        "index": shard.index,
        "count": shard.count,
        "rule": RULE,
        "models": [m.name for m in models],
        "manifest_models": [m.name for m in manifest.models],
    }
