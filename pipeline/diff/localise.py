"""Node-by-node comparison of the three frameworks, first divergence, self-error check.

For each pair ``(r, o)`` (``tf-ort``, ``tf-torch``, ``ort-torch``; ``r`` is the reference,
as in :mod:`pipeline.core.compare`) and each output tensor of each ONNX node, the two values are
compared with :func:`pipeline.core.compare.compare_pair` under the run's tolerances.  A node
**diverges** in a pair when one of its outputs does.

TF tensors come in TF's layout: a TF tensor whose shape is the ONNX shape is compared as it
is; one in channels-last layout where ONNX is channels-first (tf2onnx moves convolutions to
NCHW) is transposed first; a scalar against a one-element tensor is reshaped.  When both
layouts fit the shape (e.g. ``[N, 8, 8, 8]``) the cell says the layout was ambiguous and
which one was closer.  Any other shape difference is not compared (the cell says why).

A tensor is **tainted** in a pair when it diverged, or when it was not compared and is
computed from a tainted tensor.  A diverging node whose inputs are all untainted is a
**root**: its own outputs exceed tolerance although its inputs were within it.  The first
root in topological order is the pair's **first divergence**.

**Self error.**  The first divergence ``N`` is run again in ``o`` alone -- with the nodes that
feed it through tensors that could not be compared (tf2onnx's own Transposes and shape
arithmetic have no TF tensor), the smallest subgraph whose inputs are all known -- on
``r``'s values of those inputs.  If ``o``'s output still exceeds tolerance against ``r``'s,
the node itself computes something else (``self_error: true``); if it is now within
tolerance, the node only amplified error it inherited (``self_error: false``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from pipeline.core.compare import Tolerance, Tolerances, compare_pair
from pipeline.core.ort_runner import MAX_ORT_IR_VERSION

FRAMEWORKS = ("tf", "ort", "torch")
PAIRS: tuple[tuple[str, str], ...] = (("tf", "ort"), ("tf", "torch"), ("ort", "torch"))
MAX_SUBGRAPH_NODES = 64


def pair_name(pair: tuple[str, str]) -> str:
    """``tf-ort`` for ``("tf", "ort")``."""
    return f"{pair[0]}-{pair[1]}"


# ------------------------------------------------------------------------------ values


@dataclass
class Values:
    """Every framework's value of every ONNX tensor, in ONNX layout, with the reason a value
    is missing.  ``tf`` is read lazily (:class:`~pipeline.diff.tf_side.TfIntermediates`)."""

    inputs: Mapping[str, np.ndarray]
    ort: Mapping[str, np.ndarray]
    torch: Mapping[str, np.ndarray]
    tf_get: Callable[[str], np.ndarray | None] | None
    tf_status: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    torch_missing_reason: Mapping[str, str] = field(default_factory=dict)
    layouts: dict[str, str] = field(default_factory=dict)
    """How each TF tensor was aligned to ONNX (``identity``, ``nhwc->nchw``, ``reshape``)."""
    notes: dict[str, str] = field(default_factory=dict)

    def onnx_value(self, name: str) -> np.ndarray | None:
        if name in self.inputs:
            return self.inputs[name]
        value = self.ort.get(name)
        return value if value is not None else self.torch.get(name)

    def get(self, framework: str, name: str) -> tuple[np.ndarray | None, str | None]:
        """``(value, None)`` or ``(None, why it is missing)``."""
        if name in self.inputs:
            return self.inputs[name], None
        if framework == "ort":
            value = self.ort.get(name)
            return (value, None) if value is not None else (None, "ONNX Runtime gave no value")
        if framework == "torch":
            value = self.torch.get(name)
            if value is not None:
                return value, None
            return None, self.torch_missing_reason.get(name, "not in the torch module")
        if self.tf_get is None:
            return None, "TensorFlow not run (--no-tf)"
        status = self.tf_status.get(name, {}).get("status", "not_found")
        if status == "not_found":
            return None, "no TF tensor of this name (made by tf2onnx or a pass)"
        if status == "not_fetchable":
            return None, "TF tensor not fetchable"
        if status == "conflict":
            return None, str(self.tf_status[name].get("note"))
        raw = self.tf_get(name)
        if raw is None:
            return None, "no TF value"
        reference = self.onnx_value(name)
        if reference is None:
            return raw, None
        aligned, layout, note = align_tf(raw, reference)
        if aligned is None:
            return None, note
        self.layouts[name] = layout
        matched = self.tf_status.get(name, {}).get("matched_by_value")
        if matched:
            note = "; ".join(
                n
                for n in (
                    note,
                    f"no TF tensor of this name: matched to TF {self.tf_status[name]['tf_name']} "
                    + (
                        f"by value (relative error {matched['rel_error']:.1e} among "
                        f"{matched['candidates']} nearby tensors)"
                        if matched["by"] == "value"
                        else "through the layout op's input"
                    ),
                )
                if n
            )
        fused = self.tf_status.get(name, {}).get("fused")
        if fused:
            note = "; ".join(
                n
                for n in (
                    note,
                    f"tf2onnx fused {', '.join(fused)} into this node: compared with TF "
                    f"{self.tf_status[name]['tf_name']}",
                )
                if n
            )
        if note:
            self.notes[name] = note
        return aligned, None


def _channels_first(rank: int) -> tuple[int, ...]:
    return (0, rank - 1, *range(1, rank - 1))


def align_tf(
    tf_value: np.ndarray, onnx_value: np.ndarray
) -> tuple[np.ndarray | None, str, str | None]:
    """TF's value in ONNX's layout: ``(array, layout, note)``, or ``(None, "", why)``."""
    target = onnx_value.shape
    candidates: list[tuple[str, np.ndarray]] = []
    if tf_value.shape == target:
        candidates.append(("identity", tf_value))
    if tf_value.ndim >= 3:
        moved = np.transpose(tf_value, _channels_first(tf_value.ndim))
        if moved.shape == target:
            candidates.append(("nhwc->nchw", moved))
    if not candidates and tf_value.size == onnx_value.size:
        squeezed = tuple(d for d in tf_value.shape if d != 1)
        if squeezed == tuple(d for d in target if d != 1):
            candidates.append(("reshape", tf_value.reshape(target)))
    if not candidates:
        return (
            None,
            "",
            f"TF shape {list(tf_value.shape)} vs ONNX {list(target)}: no layout maps one to "
            "the other, not compared",
        )
    if len(candidates) == 1:
        return candidates[0][1], candidates[0][0], None

    def error(array: np.ndarray) -> float:
        with np.errstate(all="ignore"):
            diff = np.abs(array.astype(np.float64) - onnx_value.astype(np.float64))
        return float(np.nanmax(diff)) if diff.size else 0.0

    best = min(candidates, key=lambda c: error(c[1]))
    return (
        best[1],
        best[0],
        f"layout ambiguous ({' or '.join(c[0] for c in candidates)} fit the shape); "
        f"compared as {best[0]}, the closer",
    )


def harmonise(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Cast two values of different dtypes to a common one when that is meaningful (both
    integer/boolean, or both floating), with a note; otherwise leave them (compare fails)."""
    if a.dtype == b.dtype:
        return a, b, None
    kinds = {a.dtype.kind, b.dtype.kind}
    note = f"dtypes differ ({a.dtype.name} vs {b.dtype.name}), compared as values"
    if kinds <= {"b", "i", "u"}:
        return a.astype(np.int64), b.astype(np.int64), note
    if kinds == {"f"}:
        common = np.result_type(a.dtype, b.dtype)
        return a.astype(common), b.astype(common), note
    return a, b, None


# ----------------------------------------------------------------------------- the table


@dataclass
class PairCell:
    """One node, one pair: ``status`` ``ok``, ``diverged`` or ``not_compared``."""

    status: str
    max_abs: float | None = None
    max_rel: float | None = None
    mismatch_fraction: float | None = None
    atol: float | None = None
    rtol: float | None = None
    note: str | None = None
    root: bool = False
    tainted_input: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "mismatch_fraction": self.mismatch_fraction,
            "atol": self.atol,
            "rtol": self.rtol,
            "root": self.root,
            "inherits": self.tainted_input,
            "note": self.note,
        }


@dataclass
class NodeRow:
    """One ONNX node with its TF op, its torch module and one cell per pair."""

    index: int
    name: str
    op_type: str
    domain: str
    inputs: list[str]
    outputs: list[str]
    depth: int
    tf_op: str | None = None
    tf_type: str | None = None
    torch_module: str | None = None
    tensors: list[dict[str, Any]] = field(default_factory=list)
    pairs: dict[str, PairCell] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "onnx_node": self.name,
            "op_type": self.op_type
            if self.domain in ("", "ai.onnx")
            else f"{self.domain}::{self.op_type}",
            "depth": self.depth,
            "tf_op": self.tf_op,
            "tf_type": self.tf_type,
            "torch_module": self.torch_module,
            "inputs": self.inputs,
            "outputs": self.tensors,
            "pairs": {k: v.to_json() for k, v in self.pairs.items()},
        }


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _depths(model: onnx.ModelProto) -> list[int]:
    producer_depth: dict[str, int] = {}
    depths = []
    for node in model.graph.node:
        depth = 1 + max((producer_depth.get(i, 0) for i in node.input if i), default=0)
        depths.append(depth)
        for o in node.output:
            producer_depth[o] = depth
    return depths


def compare_nodes(
    model: onnx.ModelProto,
    values: Values,
    tolerances: Tolerances,
    pairs: Sequence[tuple[str, str]],
) -> list[NodeRow]:
    """The comparison table: one :class:`NodeRow` per top-level node, in graph order."""
    rows = []
    for index, (node, depth) in enumerate(zip(model.graph.node, _depths(model), strict=True)):
        row = NodeRow(
            index=index,
            name=node.name,
            op_type=node.op_type,
            domain=node.domain,
            inputs=[i for i in node.input if i],
            outputs=[o for o in node.output if o],
            depth=depth,
        )
        per_pair: dict[str, list[tuple[str, Any, str | None]]] = {pair_name(p): [] for p in pairs}
        for output in row.outputs:
            onnx_value = values.onnx_value(output)
            tensor: dict[str, Any] = {
                "name": output,
                "shape": None if onnx_value is None else list(onnx_value.shape),
                "dtype": None if onnx_value is None else onnx_value.dtype.name,
            }
            got: dict[str, tuple[np.ndarray | None, str | None]] = {}
            for framework in {f for p in pairs for f in p}:
                got[framework] = values.get(framework, output)
                if got[framework][0] is None:
                    tensor[framework] = got[framework][1]
            if output in values.layouts:
                tensor["tf_layout"] = values.layouts[output]
            tf_meta = values.tf_status.get(output, {})
            if tf_meta.get("tf_name"):
                tensor["tf_name"] = tf_meta["tf_name"]
            if tf_meta.get("matched_by_value"):
                tensor["tf_match"] = dict(tf_meta["matched_by_value"])
            row.tensors.append(tensor)
            for pair in pairs:
                (ref, why_ref), (other, why_other) = got[pair[0]], got[pair[1]]
                name = pair_name(pair)
                if ref is None or other is None:
                    why = why_ref if ref is None else why_other
                    who = pair[0] if ref is None else pair[1]
                    per_pair[name].append(("missing", None, f"{who}: {why}"))
                    continue
                ref, other, note = harmonise(ref, other)
                tol = tolerances.for_output(output, ref.dtype)
                result = compare_pair(name, output, ref, other, tol)
                notes = [n for n in (values.notes.get(output), note, result.note) if n]
                per_pair[name].append(("compared", result, "; ".join(notes) or None))
            del got
        for name, results in per_pair.items():
            row.pairs[name] = _cell(results)
        rows.append(row)
    return rows


def _cell(results: list[tuple[str, Any, str | None]]) -> PairCell:
    compared = [(r, n) for kind, r, n in results if kind == "compared"]
    missing = [n for kind, _, n in results if kind == "missing"]
    if not compared:
        return PairCell(
            "not_compared", note="; ".join(dict.fromkeys(n for n in missing if n)) or None
        )
    diverged = any(not r.passed for r, _ in compared)
    abs_values = [r.max_abs for r, _ in compared if r.max_abs is not None]
    rel_values = [r.max_rel for r, _ in compared if r.max_rel is not None]
    notes = [n for _, n in compared if n] + [n for n in missing if n]
    worst = max(compared, key=lambda rn: rn[0].max_abs if rn[0].max_abs is not None else np.inf)[0]
    return PairCell(
        "diverged" if diverged else "ok",
        max_abs=_finite(max(abs_values)) if abs_values else None,
        max_rel=_finite(max(rel_values)) if rel_values else None,
        mismatch_fraction=max(
            (r.mismatch_fraction for r, _ in compared if r.mismatch_fraction is not None),
            default=None,
        ),
        atol=worst.atol,
        rtol=worst.rtol,
        note="; ".join(dict.fromkeys(notes)) or None,
    )


def mark_roots(model: onnx.ModelProto, rows: list[NodeRow]) -> dict[str, int | None]:
    """Set ``root``/``tainted_input`` on every cell; return each pair's first root's index."""
    first: dict[str, int | None] = {}
    pair_names = list(rows[0].pairs) if rows else []
    for name in pair_names:
        tainted: set[str] = set()
        first[name] = None
        for row in rows:
            cell = row.pairs[name]
            cell.tainted_input = any(i in tainted for i in row.inputs)
            if cell.status == "diverged":
                tainted.update(row.outputs)
                cell.root = not cell.tainted_input
                if cell.root and first[name] is None:
                    first[name] = row.index
            elif cell.status == "not_compared" and cell.tainted_input:
                tainted.update(row.outputs)
            elif cell.tainted_input:
                # Compared and within tolerance although an input was tainted: the
                # uncompared outputs (if any) of this node are clean too.
                pass
    return first


# ---------------------------------------------------------------------- the small model


@dataclass
class Subgraph:
    """The smallest subgraph around a node whose inputs are all compared tensors."""

    nodes: list[int]
    inputs: list[str]
    """Tensors it reads from outside (graph inputs or compared intermediates)."""
    truncated: bool = False


def smallest_subgraph(
    model: onnx.ModelProto, row: NodeRow, pair: str, rows: list[NodeRow]
) -> Subgraph:
    """``row``'s node plus, recursively, the producers of its inputs that were not compared
    in ``pair`` (up to :data:`MAX_SUBGRAPH_NODES` nodes)."""
    producer = {o: i for i, node in enumerate(model.graph.node) for o in node.output if o}
    initializers = {t.name for t in model.graph.initializer}
    graph_inputs = {i.name for i in model.graph.input}
    chosen = {row.index}
    frontier = list(row.inputs)
    boundary: list[str] = []
    truncated = False
    while frontier:
        tensor = frontier.pop()
        if tensor in initializers or tensor in graph_inputs or tensor not in producer:
            if tensor in graph_inputs and tensor not in boundary:
                boundary.append(tensor)
            continue
        src = producer[tensor]
        compared = rows[src].pairs[pair].status != "not_compared" and _tensor_compared(
            rows[src], tensor, pair
        )
        if compared or src in chosen:
            if compared and tensor not in boundary:
                boundary.append(tensor)
            continue
        if len(chosen) >= MAX_SUBGRAPH_NODES:
            truncated = True
            if tensor not in boundary:
                boundary.append(tensor)
            continue
        chosen.add(src)
        frontier.extend(i for i in model.graph.node[src].input if i)
    return Subgraph(sorted(chosen), boundary, truncated)


def _tensor_compared(row: NodeRow, tensor: str, pair: str) -> bool:
    ref, _, other = pair.partition("-")
    for entry in row.tensors:
        if entry["name"] == tensor:
            return ref not in entry and other not in entry
    return False


def build_submodel(
    model: onnx.ModelProto,
    sub: Subgraph,
    outputs: Sequence[str],
    feeds: Mapping[str, np.ndarray],
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A standalone model of ``sub``'s nodes computing ``outputs``: floating inputs stay graph
    inputs (returned as the feed), integer and boolean ones (shapes, indices) become
    initializers so the importers see constants."""
    nodes = [model.graph.node[i] for i in sub.nodes]
    used = {i for n in nodes for i in n.input if i}
    initializers = [t for t in model.graph.initializer if t.name in used]
    graph_inputs, feed, constants = [], {}, []
    for name in sub.inputs:
        value = np.asarray(feeds[name])
        if value.dtype.kind in "fcV":
            graph_inputs.append(
                helper.make_tensor_value_info(
                    name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)
                )
            )
            feed[name] = value
        else:
            constants.append(numpy_helper.from_array(value, name))
    graph = helper.make_graph(
        nodes,
        f"diff_{model.graph.node[sub.nodes[-1]].name}",
        graph_inputs,
        [onnx.ValueInfoProto(name=o) for o in outputs],
        initializer=[*initializers, *constants],
    )
    sub_model = helper.make_model(
        graph,
        opset_imports=list(model.opset_import),
        functions=list(model.functions),
        producer_name="tf2torch diff",
    )
    sub_model.ir_version = min(model.ir_version or MAX_ORT_IR_VERSION, MAX_ORT_IR_VERSION)
    return sub_model, feed


def same_input_check(
    pair: tuple[str, str],
    tolerances: Tolerances,
    reference_outputs: Mapping[str, np.ndarray],
    other_outputs: Mapping[str, np.ndarray],
) -> dict[str, Any]:
    """Compare ``o``'s outputs on ``r``'s inputs with ``r``'s outputs."""
    worst_abs: float | None = None
    worst_rel: float | None = None
    diverged = False
    notes = []
    for name, ref in reference_outputs.items():
        other = other_outputs[name]
        ref, other, note = harmonise(np.asarray(ref), np.asarray(other))
        tol: Tolerance = tolerances.for_output(name, ref.dtype)
        result = compare_pair(pair_name(pair), name, ref, other, tol)
        diverged = diverged or not result.passed
        if result.max_abs is not None:
            worst_abs = max(worst_abs or 0.0, result.max_abs)
        if result.max_rel is not None:
            worst_rel = max(worst_rel or 0.0, result.max_rel)
        notes += [n for n in (note, result.note) if n]
    return {
        "self_error": diverged,
        "max_abs": _finite(worst_abs),
        "max_rel": _finite(worst_rel),
        "note": "; ".join(notes) or None,
    }
