"""The conformance runner's machinery, on a few fast ONNX node test cases.

Not the conformance results themselves (``make conformance`` writes those to
``docs/results/conformance.md``): here a case known to pass passes, a case with an op no
converter handles is refused with its reason, a case whose expected output was made wrong
here is a numeric failure (and fails ``--strict-ops``), and :data:`conformance.ops.KERAS_OPS`
names real ONNX ops that tf2onnx emits.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conformance import run as conformance_run
from conformance.cases import MAX_IR_VERSION, Case, collect
from conformance.check import (
    FAIL_NUMERIC_IMPORT,
    OUTCOMES,
    PASS,
    REFUSED,
    CaseTimeout,
    compare,
    run_case,
    time_limit,
)
from conformance.ops import KERAS_OPS

REPO = Path(__file__).resolve().parents[2]
SUBSET = ("Relu", "Transpose", "Slice", "Reshape")


@pytest.fixture(scope="module")
def subset_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``python -m conformance --ops Relu,Transpose,Slice,Reshape`` run in this process;
    its exit code and ``conformance.json``."""
    out = tmp_path_factory.mktemp("conformance")
    code = conformance_run.main(["--ops", ",".join(SUBSET), "--out", str(out), "-q"])
    report = json.loads((out / "conformance.json").read_text())
    report["exit_code"] = code
    report["markdown"] = (out / "conformance.md").read_text()
    return report


@pytest.fixture(scope="module")
def relu_case() -> Case:
    [case] = [c for c in collect(["Relu"]) if c.name == "test_relu"]
    return case


def test_subset_run_completes_and_reports(subset_report: dict[str, Any]) -> None:
    assert subset_report["exit_code"] == 0
    cases = subset_report["cases"]
    assert {c["op"] for c in cases} == set(SUBSET)
    assert all(c["outcome"] in OUTCOMES for c in cases)
    assert all(c["reason"] for c in cases if c["outcome"] != PASS), "every non-pass has a reason"
    for key in ("onnx", "onnxruntime", "onnx2torch", "torch"):
        assert subset_report["versions"][key] != "not installed"
    md = subset_report["markdown"]
    assert "## Per op" in md and "| Transpose |" in md and " CPUs, Python " in md


def test_a_known_good_case_passes(subset_report: dict[str, Any]) -> None:
    outcomes = {c["name"]: c for c in subset_report["cases"]}
    assert outcomes["test_relu"]["outcome"] == PASS, outcomes["test_relu"]
    # ONNX writes Transpose at opset 25, which the importer has no converter for; the
    # version converter brings it to the pipeline's opset 17, where it runs.
    transpose = outcomes["test_transpose_default"]
    assert transpose["outcome"] == PASS, transpose
    assert transpose["note"].startswith("converted from opset"), transpose


def test_case_with_an_unsupported_op_is_refused_with_its_reason() -> None:
    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="example.unsupported")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.unsupported", 1)],
        ir_version=MAX_IR_VERSION,
    )
    x = np.ones(2, np.float32)
    result = run_case(Case("test_frobnicate", "example.unsupported::Frobnicate", model, [([x], [x])]))
    assert result.outcome == REFUSED
    assert result.reason.startswith("no converter (example.unsupported::Frobnicate at opset 1)")


def test_case_with_a_type_torch_cannot_hold_is_refused() -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.STRING, [1])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, [1])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=MAX_IR_VERSION
    )
    x = np.array(["a"], dtype=object)
    result = run_case(Case("test_strings", "Identity", model, [([x], [x])]))
    assert result.outcome == REFUSED
    assert result.reason == "type torch cannot hold (x is string; y is string)"


def _wrong_expected(case: Case) -> Case:
    inputs, expected = case.data_sets[0]
    wrong = np.array(expected[0], copy=True)
    wrong.flat[7] += 1.0
    return Case(case.name, case.op, copy.deepcopy(case.model), [(inputs, [wrong])])


def test_a_wrong_expected_output_is_a_numeric_failure(relu_case: Case) -> None:
    assert run_case(relu_case).outcome == PASS
    result = run_case(_wrong_expected(relu_case))
    assert result.outcome == FAIL_NUMERIC_IMPORT, result
    assert result.reason.startswith("output 0: 1 of 60 values differ"), result.reason


def test_strict_ops_exit_code(
    relu_case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conformance_run, "collect", lambda ops: [_wrong_expected(relu_case)])
    argv = ["--ops", "Relu", "--out", str(tmp_path), "-q"]
    assert conformance_run.main(argv) == 0, "the tally is the result without --strict-ops"
    assert conformance_run.main([*argv, "--strict-ops", "Sigmoid"]) == 0
    assert conformance_run.main([*argv, "--strict-ops", "Relu"]) == 1
    failing = (tmp_path / "conformance.md").read_text()
    assert "`test_relu` (Relu, fail-numeric-import)" in failing


def test_compare_checks_dtype_shape_and_count() -> None:
    import torch

    expected = [np.arange(6, dtype=np.int64).reshape(2, 3)]
    assert compare(torch.arange(6).reshape(2, 3), expected) is None
    assert compare(torch.arange(6, dtype=torch.int32).reshape(2, 3), expected) == (
        "output 0: dtype int32, expected int64"
    )
    assert compare(torch.arange(6).reshape(3, 2), expected) == (
        "output 0: shape (3, 2), expected (2, 3)"
    )
    assert compare((torch.arange(6), torch.arange(6)), expected) == "2 outputs, expected 1"
    floats = [np.array([1.0, np.nan], np.float32)]
    assert compare(torch.tensor([1.00001, float("nan")]), floats) is None
    assert "1 of 2 values differ" in (compare(torch.tensor([1.01, float("nan")]), floats) or "")


def test_time_limit_interrupts_a_case() -> None:
    start = time.perf_counter()
    with pytest.raises(CaseTimeout), time_limit(0.2):
        time.sleep(5)
    assert time.perf_counter() - start < 2


def test_worker_processes_agree_with_in_process(subset_report: dict[str, Any]) -> None:
    cases = [c for c in collect(["Relu", "Transpose"]) if not c.name.endswith("_ver18")][:4]
    results = conformance_run.run_cases(cases, jobs=2, echo=False)
    expected = {c["name"]: c["outcome"] for c in subset_report["cases"]}
    assert [r.name for r in results] == [c.name for c in cases]
    assert {r.name: r.outcome for r in results} == {c.name: expected[c.name] for c in cases}


def _tf2onnx_source() -> str:
    spec = importlib.util.find_spec("tf2onnx")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("tf2onnx is not installed (the 'tf' extra)")
    root = Path(next(iter(spec.submodule_search_locations)))
    return "\n".join(p.read_text() for p in root.rglob("*.py"))


def test_keras_ops_are_onnx_ops_tf2onnx_or_our_passes_emit() -> None:
    assert len(set(KERAS_OPS)) == len(KERAS_OPS), "duplicates in KERAS_OPS"
    tf2onnx = _tf2onnx_source()
    ours = "\n".join(p.read_text() for p in (REPO / "pipeline" / "passes").rglob("*.py"))
    with_tests = {c.op for c in collect(KERAS_OPS)}
    for op in KERAS_OPS:
        assert onnx.defs.has(op), f"{op} is not an ONNX op"
        assert f'"{op}"' in tf2onnx or op in ours, f"neither tf2onnx nor our passes emit {op}"
        assert op in with_tests, f"ONNX has no node test for {op}"
