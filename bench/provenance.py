"""The header every generated results page starts with: title, what it is, and the date,
machine and library versions of the run that wrote it (``docs/results/*.md``)."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any

PACKAGES = (
    "keras",
    "tensorflow-cpu",
    "tf2onnx",
    "onnx",
    "onnx2torch",
    "onnxruntime-gpu",
    "torch",
)


def version(package: str) -> str:
    """The installed version of ``package``, or ``not installed``."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def header(title: str, description: str, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Markdown lines: ``# title``, the description, then date, machine and versions."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    versions = ", ".join(f"{p} {version(p)}" for p in packages)
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    return [
        f"# {title}",
        "",
        description,
        "",
        f"- date: {now}",
        f"- machine: {platform.platform()} ({platform.machine()}), {os.cpu_count()} CPUs",
        f"- versions: {versions}",
        f"- load average when written (1/5/15 min): {load}"
        " (other work on the machine slows timings, not ratios measured in the same run)",
        "",
    ]


def write_page(path: str | Path, title: str, description: str, text: str) -> None:
    """Write a benchmark's printed tables as a results page: the header, then ``text`` as a
    preformatted block (the tables exactly as the terminal showed them)."""
    lines = [*header(title, description), "```", text.rstrip(), "```"]
    write_text(path, "\n".join(lines) + "\n")


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The JSON rows (one object per line) a corpus test appended to ``path``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_text(path: str | Path, text: str) -> None:
    """Write a results page, creating its folder."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
