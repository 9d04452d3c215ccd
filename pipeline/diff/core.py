"""``run_diff``: replay a run directory in TF, ONNX Runtime and PyTorch, node by node."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from pipeline.core.compare import Tolerance, Tolerances, compare_all
from pipeline.core.errors import BadInputError, Tf2TorchError
from pipeline.core.internal_error import enter_stage
from pipeline.core.ort_runner import OrtRunner
from pipeline.core.signature import TensorSpec
from pipeline.diff import localise, repro
from pipeline.diff.ort_side import ort_intermediates
from pipeline.diff.tf_side import TfIntermediates, tf_intermediates
from pipeline.diff.torch_side import (
    check_program,
    import_for_diff,
    load_converters,
    record_torch,
    run_onnx_in_torch,
)
from pipeline.diff.value_match import LAYOUT_OPS, match_by_value, neighbourhoods
from pipeline.export.sources import parse_source

DIFF_SCHEMA = "tf2torch.diff/1"
DIFF_JSON, DIFF_HTML, REPRO_DIR = "diff.json", "diff.html", "repro"

StageCallback = Callable[[str], None]


@dataclass
class DiffOptions:
    """Options of :func:`run_diff` (the CLI's flags).

    - ``atol``/``rtol``: override the run's tolerances (``report.json``) for every tensor;
      ``output_tolerances`` for named tensors.  Default: exactly the run's.
    - ``patches``: the ``--patches`` directories the run was converted with (their
      converters are needed to import ``model.onnx``).
    - ``source``: the TF model, when ``report.json``'s ``source`` no longer resolves from
      the current directory; ``custom_objects``, ``safe_mode``, ``input_specs`` as convert's.
    - ``tf``: run TensorFlow (off: ONNX Runtime vs PyTorch only, no TF needed).
    - ``repro``: write ``repro/`` for each pair's first divergence.
    """

    atol: float | None = None
    rtol: float | None = None
    output_tolerances: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    patches: Sequence[Path] = ()
    source: str | None = None
    custom_objects: str | None = None
    safe_mode: bool = True
    input_specs: Sequence[TensorSpec] = ()
    worker_timeout: float | None = None
    tf: bool = True
    repro: bool = True
    html: bool = True


@dataclass
class DiffResult:
    """What :func:`run_diff` returns; truth-tests as ``verdict == "pass"``."""

    verdict: str
    data: dict[str, Any]
    run_dir: Path

    def __bool__(self) -> bool:
        return self.verdict == "pass"

    @property
    def first_divergence(self) -> dict[str, dict[str, Any] | None]:
        """Per pair, the first divergent node (``diff.json``'s ``first_divergence``)."""
        result: dict[str, dict[str, Any] | None] = self.data["first_divergence"]
        return result


def _read_run(run_dir: Path) -> tuple[dict[str, Any], onnx.ModelProto, dict[str, np.ndarray]]:
    if not run_dir.is_dir():
        raise BadInputError(f"run directory not found: {run_dir}")
    missing = [
        f for f in ("report.json", "model.onnx", "golden.npz") if not (run_dir / f).is_file()
    ]
    if missing:
        raise BadInputError(
            f"{run_dir} is not a tf2torch run directory (missing {', '.join(missing)}); "
            "write one with 'tf2torch convert'"
        )
    try:
        report = json.loads((run_dir / "report.json").read_text())
        model = onnx.load(str(run_dir / "model.onnx"))
        with np.load(run_dir / "golden.npz", allow_pickle=False) as npz:
            golden = {k: npz[k] for k in npz.files}
    except Exception as err:  # a corrupt file: any parser error means the same
        raise BadInputError(f"cannot read {run_dir}: {err}") from None
    return report, model, golden


def _tolerances(report: Mapping[str, Any], options: DiffOptions) -> Tolerances:
    saved = Tolerances.from_json(report.get("tolerances") or {})  # noise floors included
    per_output = dict(saved.per_output)
    per_output |= {k: Tolerance(*v) for k, v in options.output_tolerances.items()}
    return replace(
        saved,
        atol=options.atol if options.atol is not None else saved.atol,
        rtol=options.rtol if options.rtol is not None else saved.rtol,
        per_output=per_output,
    )


def _check_tf_reproduces(
    tf_side: TfIntermediates,
    golden: Mapping[str, np.ndarray],
    output_names: Sequence[str],
    tolerances: Tolerances,
    report: Mapping[str, Any],
) -> None:
    """The reloaded TF model must give the run's golden outputs, or nothing compares."""
    tf_out = {n: v for n in output_names if (v := tf_side.get(n)) is not None}
    golden_out = {n: golden[f"output/{n}"] for n in tf_out if f"output/{n}" in golden}
    results = compare_all({"golden": golden_out, "tf": tf_out}, tolerances, [("golden", "tf")])
    bad = [r for r in results if not r.passed]
    if bad:
        worst = bad[0]
        raise BadInputError(
            f"the TF model from {report.get('source')!r} does not reproduce the run's golden "
            f"outputs ({worst.output}: max abs {worst.max_abs:.3g}); it changed since the conversion "
            "or its weights are not deterministic (seed the factory), so nothing can be compared"
        )


def decomposition_aliases(model: onnx.ModelProto) -> tuple[dict[str, str], dict[str, str]]:
    """Where tf2onnx split one TF op ``X`` into several ONNX nodes, which ONNX tensor holds
    TF's ``X:0``.

    tf2onnx names the extra nodes it makes for op ``X`` ``X__<n>`` and keeps ``X`` (and the
    tensor name ``X:0``) on the first one, e.g. TF ``NotEqual`` becomes ONNX ``Equal`` (named
    ``NotEqual``) then ``Not`` (``NotEqual__40``).  When the nodes ``X__<n>`` downstream of
    ``X`` leave the group through exactly one tensor, that tensor is TF's ``X:0`` and ONNX's
    ``X:0`` is an internal value with no TF counterpart.  Returns ``(aliases, internal)``:
    ONNX tensor → TF tensor name, and ONNX tensor → why it has no TF value.

    A group whose extra nodes only move data (:data:`~pipeline.diff.value_match.LAYOUT_OPS`,
    e.g. the ``Transpose`` back to NHWC after a convolution) is no decomposition: ``X``'s
    output is TF's value in another layout, compared as such (and after our fusion passes
    ``X`` may compute more than TF's ``X``, e.g. a depthwise ``Conv`` with the ``BiasAdd``
    folded in and its output renamed ``val_<n>``), so nothing is aliased or hidden there; the
    layout nodes get their TF tensor by value (:mod:`pipeline.diff.value_match`).  The alias
    names TF's tensor ``X:0`` from the node's name, not from its output, which a pass may
    have renamed.
    """
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(model.graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(index)
    graph_outputs = {o.name for o in model.graph.output}
    nodes = model.graph.node
    aliases: dict[str, str] = {}
    internal: dict[str, str] = {}
    for index, node in enumerate(nodes):
        if not node.name or len([o for o in node.output if o]) != 1:
            continue
        prefix = f"{node.name}__"
        group = {index}
        frontier = [index]
        while frontier:
            for out in nodes[frontier.pop()].output:
                for c in consumers.get(out, []):
                    tail = nodes[c].name[len(prefix) :]
                    if c not in group and nodes[c].name.startswith(prefix) and tail.isdigit():
                        group.add(c)
                        frontier.append(c)
        if all(nodes[g].op_type in LAYOUT_OPS for g in group - {index}):
            continue  # a single group too: nothing split
        exits = [
            out
            for g in sorted(group)
            for out in nodes[g].output
            if out and (out in graph_outputs or any(c not in group for c in consumers.get(out, [])))
        ]
        first = node.output[0]
        tf_name = f"{node.name}:0"
        if len(exits) == 1 and exits[0] != first:
            aliases[exits[0]] = tf_name
            internal[first] = (
                f"internal to tf2onnx's decomposition of TF {node.name} (TF's {tf_name} is "
                f"{exits[0]} here)"
            )
    return aliases, internal


def _consumers(model: onnx.ModelProto) -> dict[str, list[str]]:
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in dict.fromkeys(i for i in node.input if i):
            consumers.setdefault(name, []).append(node.name)
    return consumers


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)


def run_diff(
    run_dir: str | Path,
    options: DiffOptions | None = None,
    *,
    on_stage: StageCallback | None = None,
) -> DiffResult:
    """Compare every intermediate tensor of a run in TF, ONNX Runtime and PyTorch.

    Writes ``diff.json``, ``diff.html`` and ``repro/<pair>/`` (for each pair that diverges)
    into ``run_dir`` and returns them.  Raises :class:`~pipeline.core.errors.BadInputError` for a
    missing or unreadable run, a model source that does not load, or a ``model.onnx`` whose
    custom ops have no converter; :class:`~pipeline.core.errors.WorkerError` when the TF worker
    dies.
    """
    options = options or DiffOptions()
    callback = on_stage or (lambda _stage: None)

    def notify(stage: str) -> None:
        enter_stage(stage)
        callback(stage)

    notify("read run")
    run_dir = Path(run_dir)
    report, model, golden = _read_run(run_dir)
    tolerances = _tolerances(report, options)
    input_names = [i.name for i in model.graph.input]
    init_names = {t.name for t in model.graph.initializer}
    input_names = [n for n in input_names if n not in init_names]
    output_names = [o.name for o in model.graph.output]
    inputs = {}
    for name in input_names:
        if f"input/{name}" not in golden:
            raise BadInputError(f"golden.npz of {run_dir} has no input {name!r}")
        inputs[name] = golden[f"input/{name}"]
    pairs = localise.PAIRS if options.tf else (("ort", "torch"),)

    notify("torch import")
    load_converters(options.patches)
    module = import_for_diff(model)

    work = Path(tempfile.mkdtemp(prefix=".diff-", dir=run_dir))
    tf_side: TfIntermediates | None = None
    try:
        if options.tf:
            notify("TensorFlow")
            try:
                source = parse_source(options.source or str(report.get("source") or ""))
            except BadInputError as err:
                raise BadInputError(
                    f"{err} (the run's source as report.json records it; run diff from the "
                    "directory convert ran in, pass --source, or --no-tf)"
                ) from None
            aliases, internal = decomposition_aliases(model)
            tf_side = tf_intermediates(
                source,
                work,
                inputs=inputs,
                onnx_inputs=input_names,
                onnx_outputs=output_names,
                names=[o for n in model.graph.node for o in n.output if o],
                node_names=[n.name for n in model.graph.node],
                consumers=_consumers(model),
                aliases=aliases,
                neighbours=neighbourhoods(model),
                opset=_opset(model),
                input_specs=options.input_specs,
                custom_objects=options.custom_objects,
                safe_mode=options.safe_mode,
                timeout=options.worker_timeout,
                log_dir=run_dir,
                scale=report.get("scaling"),
            )
        if tf_side is not None:
            for name, why in internal.items():
                tf_side.tensors[name] = {"status": "conflict", "note": why}
            _check_tf_reproduces(tf_side, golden, output_names, tolerances, report)
        notify("ONNX Runtime")
        ort_values, provider = ort_intermediates(model, inputs)
        if tf_side is not None:
            match_by_value(model, tf_side.tensors, tf_side.read, ort_values)
        notify("PyTorch")
        torch_record = record_torch(module, model, inputs, input_names)
        del module
        folded = {
            o: "folded into static shapes at import (no torch module)"
            for index, n in enumerate(model.graph.node)
            if index not in torch_record.modules
            for o in n.output
        }
        values = localise.Values(
            inputs=inputs,
            ort=ort_values,
            torch=torch_record.values,
            tf_get=tf_side.get if tf_side else None,
            tf_status=tf_side.tensors if tf_side else {},
            torch_missing_reason=folded,
        )
        notify("compare")
        rows = localise.compare_nodes(model, values, tolerances, pairs)
        for row in rows:
            row.torch_module = torch_record.modules.get(row.index)
            if tf_side:
                op = tf_side.ops.get(row.name)
                if op is None:
                    op = next(
                        (
                            {"tf_op": t["tf_op"], "tf_type": t["tf_type"]}
                            for o in row.outputs
                            if (t := tf_side.tensors.get(o, {})).get("tf_op")
                        ),
                        None,
                    )
                if op:
                    row.tf_op, row.tf_type = op["tf_op"], op["tf_type"]
        first = localise.mark_roots(model, rows)

        notify("localise")
        first_divergence: dict[str, dict[str, Any] | None] = {}
        repros: dict[str, str] = {}
        shutil.rmtree(run_dir / REPRO_DIR, ignore_errors=True)
        for pair in pairs:
            name = localise.pair_name(pair)
            index = first[name]
            if index is None:
                first_divergence[name] = None
                continue
            row = rows[index]
            cell = row.pairs[name]
            entry: dict[str, Any] = {
                "onnx_node": row.name,
                "op_type": row.to_json()["op_type"],
                "index": row.index,
                "tf_op": row.tf_op,
                "tf_type": row.tf_type,
                "torch_module": row.torch_module,
                "max_abs": cell.max_abs,
                "max_rel": cell.max_rel,
                "mismatch_fraction": cell.mismatch_fraction,
                "note": cell.note,
            }
            entry |= _self_check(
                model, rows, row, pair, values, tolerances, run_dir, options, repros
            )
            first_divergence[name] = entry

        program = _program_check(
            run_dir, model, inputs, input_names, output_names, values, tolerances
        )
        diverged = any(v is not None for v in first_divergence.values())
        verdict = "fail" if diverged or (program and not program["pass"]) else "pass"
        counts = {
            localise.pair_name(p): {
                status: sum(1 for r in rows if r.pairs[localise.pair_name(p)].status == status)
                for status in ("ok", "diverged", "not_compared")
            }
            for p in pairs
        }
        data: dict[str, Any] = {
            "schema": DIFF_SCHEMA,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "run_dir": str(run_dir),
            "source": options.source or report.get("source"),
            "convert_verdict": report.get("verdict"),
            "verdict": verdict,
            "pairs": [localise.pair_name(p) for p in pairs],
            "providers": {"onnxruntime": provider, "torch_device": torch_record.device},
            "tolerances": tolerances.to_json(),
            "counts": counts,
            "first_divergence": first_divergence,
            "torch_program": program,
            "repro": repros,
            "nodes": [r.to_json() for r in rows],
            "artifacts": {"json": DIFF_JSON} | ({"html": DIFF_HTML} if options.html else {}),
        }
    finally:
        if tf_side is not None:
            tf_side.close()
        shutil.rmtree(work, ignore_errors=True)

    from pipeline.diff import report as diff_report

    diff_report.write_json(run_dir / DIFF_JSON, data)
    if options.html:
        diff_report.write_html(run_dir / DIFF_HTML, data)
    return DiffResult(verdict, data, run_dir)


def _self_check(
    model: onnx.ModelProto,
    rows: list[localise.NodeRow],
    row: localise.NodeRow,
    pair: tuple[str, str],
    values: localise.Values,
    tolerances: Tolerances,
    run_dir: Path,
    options: DiffOptions,
    repros: dict[str, str],
) -> dict[str, Any]:
    """Run the first divergence's smallest subgraph in ``pair[1]`` on ``pair[0]``'s inputs."""
    name = localise.pair_name(pair)
    ref, other = pair
    sub = localise.smallest_subgraph(model, row, name, rows)
    feeds: dict[str, np.ndarray] = {}
    for tensor in sub.inputs:
        value, why = values.get(ref, tensor)
        if value is None:
            return {
                "self_error": None,
                "same_inputs": {"note": f"no {ref} value of {tensor}: {why}"},
            }
        feeds[tensor] = value
    expected: dict[str, np.ndarray] = {}
    for tensor in row.outputs:
        value, _ = values.get(ref, tensor)
        other_value, _ = values.get(other, tensor)
        if value is not None and other_value is not None:
            expected[tensor] = value
    subgraph_nodes = [model.graph.node[i].name for i in sub.nodes]
    info: dict[str, Any] = {"subgraph": subgraph_nodes, "subgraph_inputs": sub.inputs}
    sub_model, feed = localise.build_submodel(model, sub, list(expected), feeds)
    try:
        if other == "ort":
            got = OrtRunner(sub_model).run(feed)
        else:
            got = run_onnx_in_torch(sub_model, feed)
        check = localise.same_input_check(pair, tolerances, expected, got)
    except (Tf2TorchError, RuntimeError, ValueError, KeyError, NotImplementedError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        check = {"self_error": None, "note": f"could not run the subgraph in {other}: {message}"}
        got = {}
    info["self_error"] = check.pop("self_error")
    info["same_inputs"] = check
    if options.repro:
        where = repro.write_repro(
            run_dir / REPRO_DIR / name,
            sub_model,
            feed,
            expected,
            pair=name,
            node=row.name,
            op_type=row.op_type,
            tolerances={k: tolerances.for_output(k, v.dtype) for k, v in expected.items()},
            patch_dirs=[Path(p).resolve() for p in options.patches],
        )
        repros[name] = str(where.relative_to(run_dir))
        info["repro"] = repros[name]
    return info


def _program_check(
    run_dir: Path,
    model: onnx.ModelProto,
    inputs: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
    values: localise.Values,
    tolerances: Tolerances,
) -> dict[str, Any] | None:
    """``model.pt2`` against the fresh import of ``model.onnx`` on the run's inputs: a
    difference means the fault lies after import (parameter adoption, BatchNorm rebuild,
    ``torch.export``) where the node table cannot see it."""
    program = check_program(run_dir / "model.pt2", inputs, input_names, output_names)
    if program is None:
        return None
    fresh = {n: values.torch[n] for n in output_names if n in values.torch}
    if len(fresh) != len(output_names):
        return None
    results = compare_all(
        {"torch_import": fresh, "model_pt2": program}, tolerances, [("torch_import", "model_pt2")]
    )
    worst = max((r.max_abs for r in results if r.max_abs is not None), default=None)
    return {
        "pass": all(results),
        "max_abs": worst,
        "note": None
        if all(results)
        else "model.pt2 disagrees with a fresh import of model.onnx: model.onnx changed after "
        "the conversion, or the fault is after import (parameter adoption, --keep-batchnorm "
        "rebuild, torch.export) where the node table cannot see it",
    }
