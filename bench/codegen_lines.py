"""Readability of the generated ``model.py``: lines flat (``--flat``) and with block classes,
the classes written and the blocks per class, and whether the block-structured module
passes the three-way comparison with every gradient.

``python bench/codegen_lines.py [--hub-all] [NAME ...]`` (``make codegen-lines``) converts
each model twice and writes ``docs/results/codegen_lines.md``; names are zoo factories
(``models/zoo.py``), ``keras.applications`` corpus networks (``models/applications.py``) and
keras-hub backbones (``models/keras_hub.py``, prefixed ``hub:``).  ``--hub-all`` adds every
keras-hub backbone of the catalog and a summary over them.  Rows are appended to
``runs/codegen_lines.jsonl`` as they finish, so an interrupted run keeps its rows.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "models")]

from catalog import CORPUS, HUB, ZOO  # noqa: E402

import pipeline  # noqa: E402
from bench.provenance import header, write_text  # noqa: E402

DEFAULT = [
    "mobilenet_v2",
    "convnext_tiny",
    "ResNet50",
    "EfficientNetB0",
    "hub:vit",
    "hub:bert",
    "multi_head_attention",
    "cnn",
]
ROWS = ROOT / "runs" / "codegen_lines.jsonl"
PAGE = ROOT / "docs" / "results" / "codegen_lines.md"


def source_of(name: str) -> tuple[str, dict[str, tuple[int, int]]]:
    """The ``file.py:factory`` source of a model name and its integer input ranges."""
    if name.startswith("hub:"):
        entry = HUB[name[4:]]
        return f"models/keras_hub.py:{name[4:]}", dict(entry.input_ranges)
    if name in CORPUS:
        return f"models/applications.py:{name}", {}
    return f"models/zoo.py:{name}", dict(ZOO[name].input_ranges) if name in ZOO else {}


def classes_of(source: str) -> list[dict[str, Any]]:
    """The block classes of a generated ``model.py`` (the classes whose instances fill an
    ``nn.ModuleList``) with their instance counts, in order of first use."""
    counts: dict[str, int] = {}
    for name in re.findall(r"^ +([A-Z]\w*)\(.*\),  # \S+$", source, re.MULTILINE):
        counts[name] = counts.get(name, 0) + 1
    return [{"class": name, "blocks": n} for name, n in counts.items()]


def measure(name: str, work: Path) -> dict[str, Any]:
    """Convert ``name`` flat and with blocks; the row of the table."""
    source, ranges = source_of(name)
    row: dict[str, Any] = {"model": name}
    for flat in (True, False):
        label = "flat" if flat else "blocks"
        options = pipeline.ConvertOptions(input_ranges=ranges, flat=flat)
        start = time.perf_counter()
        try:
            result = pipeline.convert(source, work / f"{name.replace(':', '_')}_{label}", options)
        except pipeline.Tf2TorchError as exc:
            row[f"{label}_error"] = str(exc)[:200]
            continue
        text = (result.run_dir / "torch_model" / "model.py").read_text()
        row[f"{label}_lines"] = len(text.splitlines())
        row[f"{label}_verdict"] = result.verdict
        row[f"{label}_seconds"] = round(time.perf_counter() - start, 1)
        row[f"{label}_sym"] = len(re.findall(r"\btorch\.sym_\w+\(", text))
        if not flat:
            gradients = result.report.get("gradients") or []
            row["gradients"] = f"{sum(1 for g in gradients if g.get('pass'))}/{len(gradients)}"
            row["classes"] = classes_of(text)
            row["attention"] = text.count("F.scaled_dot_product_attention(") + text.count(
                "torch.softmax(scores, dim=-1) @ "
            )
            row["softmax_left"] = len(re.findall(r"torch\.softmax\((?!scores,)", text))
    return row


def render(rows: list[dict[str, Any]]) -> str:
    """The results page's table."""
    lines = [
        "| model | flat lines | block lines | ratio | classes (blocks each) | attention idioms "
        "| softmax left | `torch.sym_*` flat → blocks | verdict | gradients |",
        "|---|---:|---:|---:|---|---:|---:|---|---|---|",
    ]
    for row in rows:
        flat, blocks = row.get("flat_lines"), row.get("blocks_lines")
        ratio = f"{blocks / flat:.2f}" if flat and blocks else "-"
        classes = ", ".join(f"`{c['class']}` ({c['blocks']})" for c in row.get("classes", []))
        verdict = row.get("blocks_verdict") or row.get("blocks_error", "-")
        sym = f"{row.get('flat_sym', '-')} → {row.get('blocks_sym', '-')}"
        lines.append(
            f"| {row['model']} | {flat or '-'} | {blocks or '-'} | {ratio} | {classes or '-'} "
            f"| {row.get('attention', '-')} | {row.get('softmax_left', '-')} | {sym} "
            f"| {verdict} | {row.get('gradients', '-')} |"
        )
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]], label: str) -> list[str]:
    """Totals over ``rows`` (the keras-hub corpus)."""
    both = [r for r in rows if r.get("flat_lines") and r.get("blocks_lines")]
    passed = [r for r in both if r.get("blocks_verdict") == "pass"]
    flat = sum(r["flat_lines"] for r in both)
    blocks = sum(r["blocks_lines"] for r in both)
    with_classes = sum(1 for r in both if r.get("classes"))
    attention = sum(r.get("attention", 0) for r in both)
    left = sum(r.get("softmax_left", 0) for r in both)
    sym = (sum(r.get("flat_sym", 0) for r in both), sum(r.get("blocks_sym", 0) for r in both))
    ratio = f"{blocks / flat:.2f}" if flat else "-"
    return [
        f"{label}: {len(rows)} models, {len(both)} written in both forms; the block form passes "
        f"three ways with every gradient for {len(passed)}.",
        f"- `model.py` lines: {flat} flat → {blocks} with blocks (ratio {ratio}); "
        f"{with_classes} models get block classes.",
        f"- attention regions written as one idiom: {attention}; softmaxes left op by op: {left}.",
        f"- `torch.sym_*` calls: {sym[0]} flat → {sym[1]} with blocks.",
        "",
    ]


def write_page(rows: list[dict[str, Any]], hub_all: bool) -> None:
    """Write ``docs/results/codegen_lines.md`` from ``rows`` (with the keras-hub summary when
    ``hub_all``)."""
    description = (
        "`model.py` lines as generated flat (`--flat`, one statement per op in `forward`) and "
        "with block classes (repeated subgraphs written once as `nn.Module` classes held in "
        "`nn.ModuleList`s), the classes and how many blocks each writes, and the verdict and "
        "gradients of the block-structured module (the one every check runs). "
        "Attention idioms: attention regions written as `F.scaled_dot_product_attention` (or, "
        "for Keras's masked softmax, `softmax(masked_fill(scores)) @ v`); softmax left: "
        "softmaxes still written op by op in the block form; `torch.sym_*`: calls in "
        "`model.py`. "
        "`make codegen-lines`; see [../generated-code.md](../generated-code.md)."
    )
    page = [*header("Generated code: lines flat and with blocks", description)]
    if hub_all:
        hub_rows = [r for r in rows if str(r["model"]).startswith("hub:")]
        page += summary(hub_rows, "keras-hub corpus (`--hub-all`)")
    page.append(render(rows))
    write_text(PAGE, "\n".join(page) + "\n")


def main(argv: list[str]) -> int:
    """Measure the models named in ``argv`` (default :data:`DEFAULT`; ``--hub-all`` adds
    every keras-hub backbone) and write the page."""
    hub_all = "--hub-all" in argv
    argv = [a for a in argv if a != "--hub-all"]
    names = argv or DEFAULT
    if hub_all:
        names = [*names, *(f"hub:{n}" for n in HUB if f"hub:{n}" not in names)]
    rows: list[dict[str, Any]] = []
    ROWS.parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="codegen_lines_") as tmp:
        for name in names:
            row = measure(name, Path(tmp))
            rows.append(row)
            with ROWS.open("a") as out:
                out.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    write_page(rows, hub_all)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
