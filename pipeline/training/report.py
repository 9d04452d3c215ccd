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
        f"- batch {section['batch']}, data {section['data']}; rule: {_rule(section)}",
    ]
    if section.get("dropout"):
        layers = ", ".join(d["layer"] for d in section["dropout"])
        lines.append(f"- dropout switched off in TensorFlow (none in the torch module): {layers}")
    lines += [f"- note: {note}" for note in section.get("notes", [])]
    lines += [
        "",
        "| step | loss tf | loss torch | lr | worst variable | max abs | floor torch | "
        "floor tf | atol | rel | margin | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in section["steps"]:
        w = s["worst"]
        lines.append(
            f"| {s['step']} | {s['loss']['tf']:.6g} | {s['loss']['torch']:.6g} | "
            f"{s['learning_rate']:.4g} | `{w['variable']}` | {_n(w['max_abs'])} | "
            f"{_n(w['noise_torch'])} | {_n(w['noise_tf'])} | {_n(w['atol'])} | {_n(w['rel'])} | "
            f"{_n(s['margin'], '.2f')} | {'pass' if s['passed'] else 'FAIL'} |"
        )
    return lines


def _n(value: float | None, spec: str = ".1e") -> str:
    return "-" if value is None else format(value, spec)


def _rule(section: Mapping[str, Any]) -> str:
    rule = section.get("rule") or {}
    measured = ", ".join(f"{k} float64: {v}" for k, v in (rule.get("float64") or {}).items())
    return f"{rule.get('kind', '?')} ({rule.get('formula', '')}; {measured})"
