"""``diff.json``, ``diff.html`` (table + error-against-depth plot) and the terminal table.

``diff.json`` (schema ``tf2torch.diff/1``): ``verdict`` (pass/fail), ``convert_verdict``,
``pairs``, ``providers``, ``tolerances``, ``counts`` (per pair: nodes ok / diverged / not
compared), ``first_divergence`` (per pair null or ``onnx_node``, ``op_type``, ``index``,
``tf_op``, ``tf_type``, ``torch_module``, ``max_abs``, ``max_rel``, ``mismatch_fraction``,
``self_error`` (true/false; null when the check could not run), ``same_inputs`` (the
self-error check's ``max_abs``/``max_rel``), ``subgraph``, ``subgraph_inputs``, ``repro``),
``torch_program`` (``model.pt2`` against the fresh import), ``repro`` (pair → directory) and
``nodes``: per ONNX node in graph (topological) order ``index``, ``onnx_node``, ``op_type``,
``depth``, ``tf_op``, ``tf_type``, ``torch_module``, ``inputs``, ``outputs`` (per tensor:
``name``, ``shape``, ``dtype``, ``tf_name``, ``tf_layout``, and for a framework without a
value the reason) and ``pairs`` (per pair ``status`` ok/diverged/not_compared, ``max_abs``,
``max_rel``, ``mismatch_fraction``, ``atol``, ``rtol``, ``root``, ``inherits``, ``note``).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.core.run_dir import atomic_write_bytes

_NAMES = {"tf": "TensorFlow", "ort": "ONNX Runtime", "torch": "PyTorch"}
PAIR_COLOURS = {"tf-ort": "#1f77b4", "tf-torch": "#d62728", "ort-torch": "#2ca02c"}


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """``diff.json``, atomically (no NaN/Inf: undefined numbers are null)."""
    atomic_write_bytes(path, (json.dumps(data, indent=2, allow_nan=False) + "\n").encode())


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def _cell_text(cell: Mapping[str, Any]) -> str:
    if cell["status"] == "not_compared":
        return "n/a"
    return f"{_fmt(cell['max_abs'])} {_fmt(cell['max_rel'])}"


def _severity(node: Mapping[str, Any]) -> float:
    """How far a node is beyond tolerance in its worst pair (max_abs / allowed)."""
    worst = 0.0
    for cell in node["pairs"].values():
        if cell["max_abs"] is None or cell["status"] == "not_compared":
            continue
        allowed = max((cell["atol"] or 0.0), 1e-30)
        worst = max(worst, cell["max_abs"] / allowed)
    return worst


def shown_nodes(data: Mapping[str, Any], top: int) -> list[Mapping[str, Any]]:
    """The nodes the terminal table shows: every pair's first divergence plus the ``top``
    nodes with the largest error relative to tolerance, in graph order (``top`` 0: all)."""
    nodes = data["nodes"]
    if top <= 0 or top >= len(nodes):
        return list(nodes)
    firsts = {f["index"] for f in data["first_divergence"].values() if f}
    ranked = sorted(nodes, key=_severity, reverse=True)[:top]
    keep = firsts | {n["index"] for n in ranked}
    return [n for n in nodes if n["index"] in keep]


def _module_parts(text: str | None) -> tuple[str | None, str | None]:
    """``("target", "Class")`` from ``"target (Class)"``."""
    if not text:
        return None, None
    target, _, rest = text.rpartition(" (")
    return target, rest.rstrip(")")


def _short(node: str, name: str | None, kind: str | None) -> str:
    """``Kind`` when ``name`` is the ONNX node's own name, else ``name (Kind)``; ``-`` if none."""
    if not name:
        return "-"
    return str(kind) if name == node else f"{name} ({kind})"


ELLIPSIS = "…"
PAIR_CELL_WIDTH = len("1.3e-01 3.0e+00 ◀")


def abbreviate(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, keeping what tells nodes apart: whole if it
    fits, else as many whole trailing path segments as fit, after its first segment when
    that costs none of them (``functional_1/…/conv_1/BiasAdd``, else ``…/conv_1/BiasAdd``),
    else ``…`` and the trailing characters.  A trailing `` (Kind)`` is always kept."""
    if len(text) <= width:
        return text
    kind = ""
    if text.endswith(")") and " (" in text:
        text, _, rest = text.rpartition(" (")
        kind = f" ({rest}"
    room = width - len(kind)
    parts = text.split("/")

    def fill(head: str) -> tuple[int, str]:
        kept, tail = 0, ""
        for part in reversed(parts[1:]):
            candidate = f"/{part}{tail}"
            if len(head) + len(candidate) > room:
                break
            kept, tail = kept + 1, candidate
        return kept, head + tail

    with_head = fill(parts[0] + "/" + ELLIPSIS)
    without = fill(ELLIPSIS)
    kept, short = with_head if with_head[0] >= without[0] else without
    if kept == 0:
        short = ELLIPSIS + text[-(room - 1) :] if room > 1 else ELLIPSIS
    return short + kind


def _column_widths(total: int, pairs: int, index_width: int) -> dict[str, int]:
    """How many characters each text column gets so that a row fits ``total`` columns:
    the pair columns keep their full width, the rest is shared (node name first)."""
    fixed = index_width + pairs * PAIR_CELL_WIDTH + 2 * (4 + pairs)  # cells + gaps
    free = max(total - fixed, 40)
    return {
        "node": max(16, free * 38 // 100),
        "op": max(10, free * 14 // 100),
        "tf": max(12, free * 28 // 100),
        "torch": max(10, free * 20 // 100),
    }


def render_table(data: Mapping[str, Any], top: int, width: int = 140) -> Table:
    """The node table: per pair ``max_abs max_rel``; diverged cells red, first divergences
    marked ``◀ first`` and bold.  Each row is one line in ``width`` columns: long node, op,
    TF op and module names are abbreviated (:func:`abbreviate`); diff.json and diff.html
    keep them whole."""
    pairs = list(data["pairs"])
    shown = shown_nodes(data, top)
    widths = _column_widths(width, len(pairs), len(str(len(data["nodes"]))))
    firsts = {p: (f["index"] if f else None) for p, f in data["first_divergence"].items()}
    table = Table(
        title=f"Per-node comparison ({'all' if top <= 0 else f'top {top} by error'} of "
        f"{len(data['nodes'])} nodes; each pair: max abs, max rel)",
        caption="TF op and torch module: type only when named like the ONNX node; "
        "n/a: a side has no such tensor (diff.json says why); ◀ first divergence",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("ONNX node", no_wrap=True, overflow="ellipsis")
    table.add_column("op", no_wrap=True, overflow="ellipsis")
    table.add_column("TF op", no_wrap=True, overflow="ellipsis")
    table.add_column("torch module", no_wrap=True, overflow="ellipsis")
    for pair in pairs:
        table.add_column(pair, justify="right", no_wrap=True)
    for node in shown:
        cells = []
        first_here = []
        for pair in pairs:
            cell = node["pairs"][pair]
            text = escape(_cell_text(cell))
            if firsts.get(pair) == node["index"]:
                first_here.append(pair)
                text = f"[bold red]{text} ◀[/]"
            elif cell["status"] == "diverged":
                text = f"[red]{text}[/]"
            elif cell["status"] == "not_compared":
                text = f"[dim]{text}[/]"
            cells.append(text)
        name = escape(abbreviate(node["onnx_node"], widths["node"]))
        tf_op = _short(node["onnx_node"], node["tf_op"], node["tf_type"])
        module = _short(node["onnx_node"], *_module_parts(node["torch_module"]))
        table.add_row(
            str(node["index"]),
            f"[bold]{name}[/]" if first_here else name,
            escape(abbreviate(node["op_type"], widths["op"])),
            escape(abbreviate(tf_op, widths["tf"])),
            escape(abbreviate(module, widths["torch"])),
            *cells,
        )
    return table


def summary_lines(data: Mapping[str, Any]) -> list[str]:
    """One line per pair (its first divergence, or that it agrees), then the verdict."""
    lines = []
    for pair in data["pairs"]:
        first = data["first_divergence"][pair]
        counts = data["counts"][pair]
        if first is None:
            lines.append(
                f"{pair}: no divergence ({counts['ok']} nodes within tolerance, "
                f"{counts['not_compared']} not comparable)"
            )
            continue
        self_error = first.get("self_error")
        same = first.get("same_inputs") or {}
        ref = _NAMES[pair.split("-")[0]]
        verdict = {
            True: f"SELF ERROR: fed {ref}'s inputs it is still off by {_fmt(same.get('max_abs'))}",
            False: f"inherited: fed {ref}'s inputs it agrees (max abs {_fmt(same.get('max_abs'))})",
            None: f"self-error check could not run ({same.get('note')})",
        }[self_error]
        tf = f", TF {first['tf_op']} ({first['tf_type']})" if first.get("tf_op") else ""
        others = [n for n in first.get("subgraph") or [] if n != first["onnx_node"]]
        if others:
            verdict += f" (checked with the uncomparable nodes feeding it: {', '.join(others)})"
        lines.append(
            f"{pair}: first divergence at #{first['index']} {first['onnx_node']} "
            f"({first['op_type']}{tf}): max abs {_fmt(first['max_abs'])}, max rel "
            f"{_fmt(first['max_rel'])}; {verdict}"
            + (f"; repro: {first['repro']}/" if first.get("repro") else "")
        )
    program = data.get("torch_program")
    if program and not program["pass"]:
        lines.append(f"model.pt2: {program['note']} (max abs {_fmt(program['max_abs'])})")
    lines.append(
        "PASS: no node diverges" if data["verdict"] == "pass" else "FAIL: frameworks diverge"
    )
    return lines


def print_diff(console: Console, data: Mapping[str, Any], top: int) -> None:
    """The terminal output: table, then one summary line per pair and the verdict."""
    console.print(render_table(data, top, console.width))
    for line in summary_lines(data):
        style = "red" if line.startswith("FAIL") else ("green" if line.startswith("PASS") else "")
        console.print(f"[{style}]{escape(line)}[/]" if style else escape(line))


PAIR_MARKERS = {"tf-ort": "o", "tf-torch": "x", "ort-torch": "+"}


def plot_png(data: Mapping[str, Any]) -> bytes:
    """Max absolute error of each node against its depth, one series per pair, log scale,
    with the float32 tolerance dashed; first divergences circled and named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4), dpi=100)
    floor = 1e-12
    labels: dict[tuple[int, float, str], list[str]] = {}
    for pair in data["pairs"]:
        points = [
            (n["depth"], max(n["pairs"][pair]["max_abs"], floor))
            for n in data["nodes"]
            if n["pairs"][pair]["max_abs"] is not None
        ]
        colour = PAIR_COLOURS.get(pair)
        if points:
            xs, ys = zip(*sorted(points), strict=True)
            ax.plot(
                xs,
                ys,
                PAIR_MARKERS.get(pair, "."),
                label=pair,
                color=colour,
                alpha=0.8,
                markerfacecolor="none",
            )
        first = data["first_divergence"][pair]
        if first and first["max_abs"] is not None:
            depth = data["nodes"][first["index"]]["depth"]
            y = max(first["max_abs"], floor)
            ax.plot([depth], [y], "o", markersize=16, markerfacecolor="none", color=colour)
            labels.setdefault((depth, y, first["onnx_node"]), []).append(pair)
    for (depth, y, node), pairs in labels.items():
        ax.annotate(f"  {node} ({', '.join(pairs)})", (depth, y), fontsize=7)
    tolerances = data.get("tolerances", {})
    atol = tolerances.get("atol") or tolerances.get("defaults", {}).get("float32", {}).get("atol")
    if atol:
        ax.axhline(atol, linestyle="--", color="grey", linewidth=0.8, label=f"atol {atol:g}")
    ax.set_yscale("log")
    ax.set_xlabel("node depth (longest path from the inputs)")
    ax.set_ylabel("max absolute error")
    ax.set_title("Error against depth (circled: first divergence)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


_CSS = """
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-family: monospace; }
tr.first td { font-weight: bold; background: #fdd; }
td.diverged { color: #b00; } td.na { color: #999; }
"""


def _h(text: object) -> str:
    return html.escape(str(text))


def render_html(data: Mapping[str, Any]) -> str:
    """``diff.html``: the summary, the plot (PNG embedded) and the full node table."""
    png = base64.b64encode(plot_png(data)).decode()
    pairs: Sequence[str] = data["pairs"]
    firsts = {f["index"] for f in data["first_divergence"].values() if f}
    head = "".join(f"<th>{_h(p)} max abs</th><th>{_h(p)} max rel</th>" for p in pairs)
    rows = []
    for node in data["nodes"]:
        cells = []
        for pair in pairs:
            cell = node["pairs"][pair]
            cls = {"diverged": "num diverged", "not_compared": "num na"}.get(cell["status"], "num")
            title = _h(cell["note"] or "")
            if cell["status"] == "not_compared":
                cells.append(f'<td class="{cls}" colspan="2" title="{title}">n/a</td>')
            else:
                cells.append(
                    f'<td class="{cls}" title="{title}">{_fmt(cell["max_abs"])}</td>'
                    f'<td class="{cls}" title="{title}">{_fmt(cell["max_rel"])}</td>'
                )
        tf = f"{node['tf_op']} ({node['tf_type']})" if node["tf_op"] else "-"
        rows.append(
            f'<tr class="{"first" if node["index"] in firsts else ""}"><td>{node["index"]}</td>'
            f"<td>{_h(node['onnx_node'])}</td><td>{_h(node['op_type'])}</td><td>{_h(tf)}</td>"
            f"<td>{_h(node['torch_module'] or '-')}</td>{''.join(cells)}</tr>"
        )
    summary = "".join(f"<li>{_h(line)}</li>" for line in summary_lines(data))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>tf2torch diff: {_h(data["run_dir"])}</title>
<style>{_CSS}</style></head><body>
<h1>tf2torch diff</h1>
<p>Run <code>{_h(data["run_dir"])}</code> (source <code>{_h(data["source"])}</code>);
ONNX Runtime {_h(data["providers"]["onnxruntime"])}, torch {_h(data["providers"]["torch_device"])}.
Verdict: <b>{_h(data["verdict"].upper())}</b> (convert said {_h(data["convert_verdict"])}).</p>
<ul>{summary}</ul>
<img alt="max relative error against node depth" src="data:image/png;base64,{png}">
<h2>Nodes in topological order</h2>
<p>Hover a cell for its note (why a tensor was not compared, layout, dtype).</p>
<table><tr><th>#</th><th>ONNX node</th><th>op</th><th>TF op</th><th>torch module</th>{head}</tr>
{"".join(rows)}
</table></body></html>
"""


def write_html(path: Path, data: Mapping[str, Any]) -> None:
    """``diff.html``, atomically."""
    atomic_write_bytes(path, render_html(data).encode())
