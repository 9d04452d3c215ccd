"""Render ``runs/corpus.jsonl`` (rows written by ``tests/test_corpus.py``) as the README's
markdown table: one row per network, max abs error per pair, variables mapped, planted faults
caught (and the smallest margin: max error / tolerance of the weakest catch), the worst
unplanted comparison's max error over its tolerance (a false alarm is above 1), the check's
resolution (its largest tolerance over the output's scale), seconds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = (
    "network",
    "size",
    "verdict",
    "tf-ort",
    "tf-torch",
    "ort-torch",
    "variables",
    "gradients",
    "worst_over_atol",
    "mutations",
    "resolution",
    "export_s",
    "total_s",
)


def _mutations(row: dict[str, object]) -> str:
    """``caught/planted (weakest margin)``, and how many were below the check's resolution
    (their exact effect under 1.5x the tolerance: not expected to be caught)."""
    margins = row.get("mutations")
    if not isinstance(margins, dict) or not margins:
        return ""
    caught = sum(1 for m in margins.values() if m > 1)
    text = f"{caught}/{len(margins)} (min {min(margins.values()):.3g}x)"
    below = row.get("below_resolution") or []
    if isinstance(below, list) and below:
        text += f", {len(below)} below resolution"
    return text


def render(rows: list[dict[str, object]]) -> str:
    """The markdown table for ``rows`` (the last row per network wins)."""
    latest = {str(r["network"]): r for r in rows}
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for name in sorted(latest):
        row = latest[name]
        cells = [
            _mutations(row)
            if c == "mutations"
            else f"{row[c]:.1e}"
            if c == "resolution" and isinstance(row.get(c), float)
            else f"{row[c]:.2f}"
            if c == "worst_over_atol" and isinstance(row.get(c), float)
            else f"{row[c]:.1e}"
            if isinstance(row.get(c), float) and "-" in c
            else str(row.get(c, ""))
            for c in COLUMNS
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """``python bench/corpus_table.py runs/corpus.jsonl [out.md]``."""
    source = Path(argv[0] if argv else "runs/corpus.jsonl")
    rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    table = render(rows)
    if len(argv) > 1:
        Path(argv[1]).write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
