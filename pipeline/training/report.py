"""The ``training`` section of ``report.md``: the K-step comparison as a table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def training_markdown(section: Mapping[str, Any]) -> list[str]:
    """Markdown lines for ``report.json``'s ``training`` section (written by train-check)."""
    config = section["config"]
    optimizer = config["optimizer"]
    lr = optimizer["learning_rate"]
    losses = ", ".join(f"{t['output']}: {t['name']}" for t in config["losses"])
    lines = [
        "",
        f"## Training: {section['verdict'].upper()}",
        "",
        f"- optimizer: {optimizer['class_name']}, learning rate "
        f"{lr if isinstance(lr, float) else lr['class_name']}; loss: {losses}; "
        f"from {config['origin']}",
        f"- batch {section['batch']}, data {section['data']}; rtol {section['rtol']:g} "
        f"({section['error_formula']})",
    ]
    if section.get("dropout"):
        layers = ", ".join(d["layer"] for d in section["dropout"])
        lines.append(f"- dropout switched off in TensorFlow (none in the torch module): {layers}")
    lines += [f"- note: {note}" for note in section.get("notes", [])]
    lines += [
        "",
        "| step | loss tf | loss torch | loss rel | lr | worst variable | max abs | rel |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in section["steps"]:
        w = s["worst"]
        lines.append(
            f"| {s['step']} | {s['loss']['tf']:.6g} | {s['loss']['torch']:.6g} | "
            f"{s['loss_rel_error']:.1e} | {s['learning_rate']:.4g} | `{w['variable']}` | "
            f"{w['max_abs']:.1e} | {w['rel']:.1e} |"
        )
    return lines
