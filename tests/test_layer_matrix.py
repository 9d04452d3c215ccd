"""The Keras layer matrix (``models/layer_matrix.py``): one small model per public
``keras.layers`` class and common option, through convert, three ways plus gradients.

The default suite checks that the matrix is current (every public ``keras.layers`` class is a
case, refused by name or not applicable, each with its reason) and converts a few
representative cases.  The whole matrix is ``@pytest.mark.slow`` (``make layer-matrix``, which
also writes ``docs/results/layer_matrix.md`` from the rows each test appends to
``$TF2TORCH_LAYER_TABLE``).  Each case runs on up to three routes: ``keras3`` (the factory),
and where ``tf_keras`` is installed and has the class, ``keras2_h5`` and ``keras2_savedmodel``
(the file written by ``tf_keras`` in a subprocess, then converted).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from test_end_to_end import PAIRS, assert_three_way_pass

import pipeline
from pipeline.core.errors import Tf2TorchError

REPO = Path(__file__).resolve().parents[1]
MATRIX_FILE = REPO / "models" / "layer_matrix.py"
ROUTES = ("keras3", "keras2_h5", "keras2_savedmodel")


def _load_matrix() -> ModuleType:
    """``models/layer_matrix.py`` as data (it imports Keras only inside ``build``)."""
    spec = importlib.util.spec_from_file_location("tf2torch_layer_matrix", MATRIX_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


MATRIX = _load_matrix()

REPRESENTATIVE = (
    "Conv2D_filters_4_kernel_size_3_padding_same_strides_2",
    "BatchNormalization",
    "Add",
    "MaxPooling2D_pool_size_3_strides_2_padding_same",
    # No weights of its own (a Dense lead-in), and its temporary was once named `1`.
    "ReLU",
)
"""Cases the default suite converts (Keras 3 route); the rest are slow."""

_ENUMERATE = """
import inspect, json, sys
module = __import__(sys.argv[1])
groups = {}
for name in dir(module.layers):
    value = getattr(module.layers, name)
    if not name.startswith("_") and inspect.isclass(value):
        groups.setdefault(id(value), []).append(name)
print(json.dumps(sorted(sorted(g) for g in groups.values())))
"""


def public_layer_classes(module: str = "keras") -> list[list[str]]:
    """The public classes of ``<module>.layers``, each as the list of names it is exported
    under (``AvgPool2D`` and ``AveragePooling2D`` are one class), read in a subprocess (no
    TensorFlow in the test process)."""
    done = subprocess.run(
        [sys.executable, "-c", _ENUMERATE, module],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return json.loads(done.stdout.splitlines()[-1])


def test_matrix_names_every_keras_layer() -> None:
    """Every public ``keras.layers`` class is exactly one of: built by a case, refused by name,
    not applicable, and the last two say why; nothing in the matrix names a class Keras does
    not have.  A class a new Keras adds fails here until it is placed."""
    groups = public_layer_classes()
    assert len(groups) > 100, groups  # Keras 3.15 ships 144 distinct classes
    covered = MATRIX.covered_classes()
    refused, not_applicable = set(MATRIX.REFUSED), set(MATRIX.NOT_APPLICABLE)
    assert not covered & refused and not covered & not_applicable and not refused & not_applicable
    for reason in [*MATRIX.REFUSED.values(), *MATRIX.NOT_APPLICABLE.values()]:
        assert reason.strip() and "\n" not in reason
    placed = covered | refused | not_applicable
    missing = [names for names in groups if not placed & set(names)]
    assert not missing, f"keras.layers classes the layer matrix does not place: {missing}"
    known = {name for names in groups for name in names}
    assert placed <= known, placed - known


def test_case_ids_are_factory_names() -> None:
    """Each case id is an identifier (what ``file.py:fn`` accepts) and the module's factory
    lookup knows it; integer inputs have ranges."""
    for case_id, case in MATRIX.CASES.items():
        assert case_id.isidentifier() and case.id == case_id
        for spec in case.inputs:
            assert spec.dtype.startswith("float") or spec.range is not None, case_id
    assert callable(getattr(MATRIX, REPRESENTATIVE[0]))
    with pytest.raises(AttributeError):
        _ = MATRIX.NoSuchLayer


def test_known_failures_are_cases_and_never_internal_errors() -> None:
    """``KNOWN_FAILURES`` (and the Keras 2 ones) name real cases, each with a reason, and
    none is a bug."""
    for case_id, reason in [*MATRIX.KNOWN_FAILURES.items(), *MATRIX.KERAS2_KNOWN_FAILURES.items()]:
        assert case_id in MATRIX.CASES, case_id
        assert reason.strip() and "internal error" not in reason.lower(), (case_id, reason)


def _params() -> list[object]:
    params = []
    for route in ROUTES:
        for case_id in MATRIX.CASES:
            fast = route == "keras3" and case_id in REPRESENTATIVE
            marks = [] if fast else [pytest.mark.slow]
            params.append(pytest.param(route, case_id, marks=marks, id=f"{route}-{case_id}"))
    return params


def _tf_keras_installed() -> bool:
    return importlib.util.find_spec("tf_keras") is not None


@pytest.mark.parametrize(("route", "case_id"), _params())
def test_layer_case_converts(route: str, case_id: str, tmp_path: Path) -> None:
    """The case converts on ``route`` and passes three ways, every variable its own parameter
    and every gradient checked; what happened is appended to ``$TF2TORCH_LAYER_TABLE``."""
    case = MATRIX.CASES[case_id]
    start = time.perf_counter()
    row: dict[str, object] = {"case": case_id, "layer": case.layer, "route": route}
    source = _source(route, case_id, tmp_path, row, start)
    # A Lambda's file holds Python code, which loads only with safe_mode off: this test wrote
    # the file itself a moment ago, so it is trusted (convert refuses it otherwise, saying so).
    options = pipeline.ConvertOptions(
        input_ranges=MATRIX.input_ranges(case), safe_mode="Lambda" not in case.classes()
    )
    known = MATRIX.known_failure(route, case_id)
    try:
        result = pipeline.convert(source, tmp_path / "run", options)
    except Tf2TorchError as exc:
        _record({**row, "verdict": "error", "reason": _one_line(exc)}, start)
        if known is not None and _one_line(exc).startswith(known):
            return  # the state KNOWN_FAILURES records
        raise
    except Exception as exc:  # a bug in tf2torch or a library under it: never expected
        _record({**row, "verdict": "internal error", "reason": _one_line(exc)}, start)
        raise
    summary = summarize(result.report)
    _record({**row, **summary}, start)
    if known is not None:
        assert summary["verdict"] != "pass", f"{case_id} passes now: drop it from KNOWN_FAILURES"
        assert str(summary["reason"]).startswith(known), summary
        return
    assert_case_passes(result)


def assert_case_passes(result: pipeline.ConversionResult) -> None:
    """All three pairs agree on every output; with trainable variables, each is its own
    named parameter and every gradient matches (a model without any, such as a lookup layer
    alone, has nothing more to check)."""
    report = result.report
    if report["parameter_count"]["tf_trainable"] == 0:
        assert result.verdict == "pass" and report["verdict"] == "pass", report["comparisons"]
        pairs = {(c["output"], c["pair"]) for c in report["comparisons"]}
        outputs = {output for output, _ in pairs}
        assert outputs and pairs == {(o, p) for o in outputs for p in PAIRS}
        assert all(c["pass"] and c["mismatch_fraction"] == 0.0 for c in report["comparisons"])
        return
    assert_three_way_pass(result)
    gradients = report["gradients"]
    assert gradients and all(g["pass"] for g in gradients), gradients


def _source(route: str, case_id: str, tmp_path: Path, row: dict[str, object], start: float) -> str:
    """What convert reads for ``route``: the factory, or a file ``tf_keras`` writes now."""
    if route == "keras3":
        return f"{MATRIX_FILE}:{case_id}"
    if not _tf_keras_installed():
        pytest.skip("tf_keras is not installed (the Keras 2 routes need it)")
    path = tmp_path / (f"{case_id}.h5" if route == "keras2_h5" else f"{case_id}_savedmodel")
    done = subprocess.run(
        [sys.executable, str(MATRIX_FILE), "save", case_id, str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit {done.returncode}"
        # The matrix's own case cannot be built in Keras 2 (no such class, another keyword):
        # not a tf2torch result, so the row says so and the test is skipped, not passed.
        _record({**row, "verdict": "n/a", "reason": f"tf_keras cannot build it: {last}"}, start)
        pytest.skip(f"tf_keras cannot build {case_id}: {last}")
    return str(path)


def summarize(report: dict[str, object]) -> dict[str, object]:
    """The table's columns of one finished conversion: verdict, variables mapped, gradients,
    the worst comparison over its tolerance and, when it failed, why in one line."""
    comparisons = report["comparisons"]
    gradients = report["gradients"]
    count = report["parameter_count"]
    assert isinstance(comparisons, list) and isinstance(gradients, list)
    assert isinstance(count, dict)
    ratios = [c["max_abs"] / c["atol"] for c in comparisons if c["atol"] > 0]
    reasons = [
        f"{c['pair']} {c['output']}: max_abs {c['max_abs']:.2g} over atol {c['atol']:.2g}"
        for c in comparisons
        if not c["pass"]
    ]
    off = [g["tf_name"] for g in gradients if not g["pass"]]
    if off:
        reasons.append(f"{len(off)} of {len(gradients)} gradients off ({', '.join(off[:3])})")
    if not count.get("pass", True):
        reasons.append(f"parameters {count.get('status')}: {count.get('message', '')}".strip())
    checked = sum(1 for g in gradients if g["pass"] and g.get("checked", True))
    return {
        "verdict": report["verdict"],
        "variables": f"{count.get('torch_trainable')}/{count.get('tf_trainable')}",
        "gradients": f"{checked}/{len(gradients)}",
        "worst_over_tolerance": max(ratios, default=0.0),
        "reason": "; ".join(reasons),
    }


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"


def _record(row: dict[str, object], start: float) -> None:
    """Append ``row`` to ``$TF2TORCH_LAYER_TABLE`` (``make layer-matrix`` renders it)."""
    table = os.environ.get("TF2TORCH_LAYER_TABLE")
    if table:
        row["seconds"] = round(time.perf_counter() - start, 1)
        with Path(table).open("a") as out:
            out.write(json.dumps(row) + "\n")
