"""The run report: stage timing, verdict, report.json / report.md and the terminal table."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from rich.console import Console

import pipeline.core.run_dir as run_dir_module
import pipeline.verify.report as report_module
from pipeline.core.compare import EXACT, Tolerance, compare_pair
from pipeline.core.errors import BadInputError, UnsupportedOpsError
from pipeline.verify.report import Report, print_summary, render_markdown, render_table, verdict_of

REQUIRED_KEYS = {"schema", "source", "verdict", "stages", "providers", "comparisons", "artifacts"}


def comparison(
    pair: str = "tf-ort",
    output: str = "logits",
    *,
    passed: bool = True,
    max_abs: float | None = 1.25e-3,
    max_rel: float | None = 0.5,
    mismatch_fraction: float | None = 0.25,
    cosine: float | None = 0.999,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    note: str | None = None,
) -> dict[str, Any]:
    """A comparison dict shaped like ``OutputComparison.to_json()``, built by hand."""
    return {
        "pair": pair,
        "output": output,
        "max_abs": max_abs,
        "max_rel": max_rel,
        "mismatch_fraction": mismatch_fraction,
        "cosine": cosine,
        "atol": atol,
        "rtol": rtol,
        "pass": passed,
        "note": note,
        "worst_index": None,
        "worst_ref": None,
        "worst_other": None,
    }


def fake_clock(monkeypatch: pytest.MonkeyPatch, *times: float) -> None:
    """Make ``time.perf_counter`` inside pipeline.verify.report return ``times`` in order."""
    ticks: Iterator[float] = iter(times)
    monkeypatch.setattr(report_module, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))


def rendered(table: Any, width: int = 200) -> str:
    console = Console(record=True, width=width)
    console.print(table)
    return console.export_text()


def line_with(text: str, needle: str) -> str:
    (line,) = [ln for ln in text.splitlines() if needle in ln]
    return line


def strict_loads(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


# --- stage() ----------------------------------------------------------------------------


def test_stage_success_records_ok_and_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_clock(monkeypatch, 5.0, 7.5)
    rep = Report(source="model.keras")
    with rep.stage("export") as entry:
        assert rep.stages["export"] is entry
        assert entry["status"] == "running"
        entry["detail"] = "kept"
    assert rep.stages["export"] == {"status": "ok", "seconds": 2.5, "detail": "kept"}
    assert rep.error is None


def test_stage_seconds_are_rounded_to_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_clock(monkeypatch, 0.0, 1.23456)
    rep = Report(source="m")
    with rep.stage("import"):
        pass
    assert rep.stages["import"]["seconds"] == pytest.approx(1.235)


def test_stage_records_tf2torch_error_and_reraises(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_clock(monkeypatch, 1.0, 4.0)
    rep = Report(source="m")
    with pytest.raises(BadInputError, match="bad shape"), rep.stage("fixup"):
        raise BadInputError("bad shape")
    assert rep.stages["fixup"] == {"status": "failed", "seconds": 3.0}
    assert rep.error == {"kind": "bad_input", "message": "bad shape", "stage": "fixup"}


def test_stage_error_kind_follows_the_subclass() -> None:
    rep = Report(source="m")
    with pytest.raises(UnsupportedOpsError), rep.stage("import"):
        raise UnsupportedOpsError("import", {"Foo": ["n1"]})
    assert rep.error is not None
    assert rep.error["kind"] == "unsupported_ops"
    assert rep.error["stage"] == "import"
    assert "Foo" in rep.error["message"]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_stage_other_exceptions_mark_failed_and_propagate(exc: BaseException) -> None:
    rep = Report(source="m")
    with pytest.raises(type(exc)), rep.stage("compare"):
        raise exc
    assert rep.stages["compare"]["status"] == "failed"
    assert rep.stages["compare"]["seconds"] >= 0.0
    assert rep.error is None  # only a Tf2TorchError is recorded


def test_stages_keep_their_order() -> None:
    rep = Report(source="m")
    for name in ("export", "fixup", "import", "compare"):
        with rep.stage(name):
            pass
    assert list(rep.to_json()["stages"]) == ["export", "fixup", "import", "compare"]
    assert all(s["status"] == "ok" for s in rep.stages.values())


# --- verdict_of -------------------------------------------------------------------------


def _cmp(passed: bool) -> Any:
    ref = np.array([1.0])
    return compare_pair("tf-ort", "y", ref, ref if passed else ref + 1, EXACT)


def test_verdict_of_no_comparisons_is_fail() -> None:
    assert verdict_of([]) == "fail"


def test_verdict_of_all_passing_is_pass() -> None:
    assert verdict_of([_cmp(True), _cmp(True)]) == "pass"


def test_verdict_of_one_failure_is_fail() -> None:
    assert verdict_of([_cmp(True), _cmp(False), _cmp(True)]) == "fail"


def test_verdict_of_accepts_a_generator() -> None:
    assert verdict_of(c for c in [_cmp(True)]) == "pass"
    assert verdict_of(c for c in [_cmp(False)]) == "fail"


# --- to_json / write --------------------------------------------------------------------


def sample_report() -> Report:
    rep = Report(source="models/tiny.keras")
    rep.verdict = "fail"
    rep.stages = {"export": {"status": "ok", "seconds": 1.5}}
    rep.providers = {"onnxruntime": "CPUExecutionProvider", "torch_device": "cpu"}
    rep.comparisons = [
        comparison("tf-ort", "logits", passed=True),
        comparison(
            "ort-torch",
            "probs",
            passed=False,
            max_abs=None,
            max_rel=None,
            mismatch_fraction=None,
            cosine=None,
            atol=0.0,
            rtol=0.0,
            note="shape mismatch: ort [2] vs torch [3]",
        ),
    ]
    rep.artifacts = {"onnx": "model.onnx", "report_json": "report.json"}
    return rep


def test_to_json_has_documented_keys() -> None:
    rep = sample_report()
    data = rep.to_json()
    assert set(data) >= REQUIRED_KEYS
    assert set(data) >= {"created", "error", "passes", "inputs", "tolerances", "versions"}
    assert data["schema"] == "tf2torch.report/1.1"
    assert data["source"] == "models/tiny.keras"
    assert data["verdict"] == "fail"
    assert data["stages"] == {"export": {"status": "ok", "seconds": 1.5}}
    assert data["providers"]["onnxruntime"] == "CPUExecutionProvider"
    assert [c["output"] for c in data["comparisons"]] == ["logits", "probs"]
    assert data["artifacts"] == {"onnx": "model.onnx", "report_json": "report.json"}


def test_new_report_defaults_to_error_and_has_a_timezone_aware_timestamp() -> None:
    data = Report(source="m").to_json()
    assert data["verdict"] == "error"
    assert data["comparisons"] == []
    created = datetime.fromisoformat(data["created"])
    assert created.tzinfo is not None


def test_write_creates_report_json_and_md(tmp_path: Path) -> None:
    rep = sample_report()
    rep.write(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "report.md"]
    data = strict_loads((tmp_path / "report.json").read_text())
    assert data == rep.to_json()
    assert (tmp_path / "report.md").read_text() == render_markdown(rep.to_json())


def test_write_replaces_an_earlier_report(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text("old")
    (tmp_path / "report.md").write_text("old")
    rep = sample_report()
    rep.write(tmp_path)
    assert strict_loads((tmp_path / "report.json").read_text())["source"] == "models/tiny.keras"
    assert (tmp_path / "report.md").read_text().startswith("# tf2torch report: FAIL")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "report.md"]


def test_write_is_atomic_when_the_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "report.json").write_text("old")

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(
        run_dir_module, "os", SimpleNamespace(fdopen=os.fdopen, replace=failing_replace)
    )
    with pytest.raises(OSError, match="disk full"):
        sample_report().write(tmp_path)
    assert (tmp_path / "report.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temp files left


def test_write_refuses_nan_instead_of_writing_invalid_json(tmp_path: Path) -> None:
    rep = sample_report()
    rep.comparisons = [comparison(max_abs=float("nan"))]
    with pytest.raises(ValueError):
        rep.write(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_real_nan_and_inf_comparisons_write_strict_json(tmp_path: Path) -> None:
    nan_cmp = compare_pair(
        "tf-ort", "y", np.array([1.0, np.nan]), np.array([1.0, 2.0]), Tolerance(1e-4, 1e-4)
    )
    inf_cmp = compare_pair(
        "tf-torch", "y", np.array([1.0, 2.0]), np.array([np.inf, 2.0]), Tolerance(1e-4, 1e-4)
    )
    rep = Report(source="m")
    rep.comparisons = [nan_cmp.to_json(), inf_cmp.to_json()]
    rep.verdict = verdict_of([nan_cmp, inf_cmp])
    rep.write(tmp_path)
    data = strict_loads((tmp_path / "report.json").read_text())
    assert data["verdict"] == "fail"
    assert [c["pass"] for c in data["comparisons"]] == [False, False]
    assert data["comparisons"][1]["max_abs"] is None
    md = (tmp_path / "report.md").read_text()
    assert "NaN in tf output" in md
    assert "Inf in torch output" in md


# --- render_markdown --------------------------------------------------------------------


def markdown_rows(md: str) -> dict[tuple[str, str], list[str]]:
    """Comparison rows of report.md keyed by (pair, output), as lists of cells."""
    section = md.split("## Comparisons", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith("| pair "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[(cells[0], cells[1])] = cells
    return rows


def test_markdown_has_a_row_per_comparison() -> None:
    md = render_markdown(sample_report().to_json())
    rows = markdown_rows(md)
    assert set(rows) == {("tf-ort", "logits"), ("ort-torch", "probs")}

    good = rows[("tf-ort", "logits")]
    assert len(good) == 10
    assert float(good[2]) == pytest.approx(1.25e-3)  # max abs
    assert float(good[3]) == pytest.approx(0.5)  # max rel
    assert good[4] == "25.00%"  # mismatch fraction 0.25
    assert float(good[5]) == pytest.approx(0.999)  # cosine
    assert float(good[6]) == 1e-4  # atol
    assert float(good[7]) == 1e-4  # rtol
    assert good[8] == "PASS"
    assert good[9] == ""

    bad = rows[("ort-torch", "probs")]
    assert bad[2:6] == ["-", "-", "-", "-"]
    assert bad[8] == "FAIL"
    assert bad[9] == "shape mismatch: ort [2] vs torch [3]"


def test_markdown_escapes_pipes_in_cells() -> None:
    rep = sample_report()
    rep.comparisons = [comparison(output="a|b", note="x | y")]
    md = render_markdown(rep.to_json())
    rows = markdown_rows(md.replace("\\|", "<pipe>"))
    (cells,) = rows.values()
    assert len(cells) == 10
    assert cells[1] == "a<pipe>b"
    assert cells[9] == "x <pipe> y"


def test_markdown_header_stages_providers_and_artifacts() -> None:
    md = render_markdown(sample_report().to_json())
    assert md.startswith("# tf2torch report: FAIL\n")
    assert "`models/tiny.keras`" in md
    assert "CPUExecutionProvider" in md
    assert "torch device: cpu" in md
    assert "| export | ok | 1.50 |" in md
    assert "- onnx: `model.onnx`" in md
    assert "## Fixup passes" not in md  # no passes recorded
    assert md.endswith("\n")


def test_markdown_shows_error_and_passes_when_present() -> None:
    rep = sample_report()
    rep.error = {"kind": "pass_failed", "message": "pass 'erfc' broke it", "stage": "fixup"}
    rep.passes = [{"name": "erfc", "status": "applied", "check": "numeric", "seconds": 0.25}]
    md = render_markdown(rep.to_json())
    assert "error (fixup): pass 'erfc' broke it" in md
    assert "## Fixup passes" in md
    assert "| erfc | applied | numeric | 0.25 |" in md


def test_markdown_pass_verdict_title() -> None:
    rep = sample_report()
    rep.verdict = "pass"
    assert render_markdown(rep.to_json()).startswith("# tf2torch report: PASS\n")


# --- render_table / print_summary -------------------------------------------------------


def test_table_shows_pass_and_fail_rows() -> None:
    text = rendered(render_table(sample_report().comparisons))
    good = line_with(text, "logits")
    assert "tf-ort" in good
    assert "PASS" in good and "FAIL" not in good
    assert "1.3e-03" in good  # 1.25e-3 to two significant digits
    assert "5.0e-01" in good
    assert "25.00%" in good
    assert "0.999000" in good
    assert "1e-04" in good
    bad = line_with(text, "probs")
    assert "ort-torch" in bad
    assert "FAIL" in bad and "PASS" not in bad
    assert "shape mismatch" in bad


def test_table_colours_pass_green_and_fail_red() -> None:
    console = Console(
        record=True, width=200, force_terminal=True, color_system="standard", highlight=False
    )
    console.print(render_table(sample_report().comparisons))
    text = console.export_text(styles=True)
    green, red = "\x1b[32m", "\x1b[31m"
    assert f"{green}PASS" in text
    assert f"{red}FAIL" in text
    assert f"{red}PASS" not in text
    assert f"{green}FAIL" not in text


def test_table_note_column_only_when_some_note() -> None:
    without = rendered(render_table([comparison(note=None)]))
    assert "note" not in line_with(without, "pair")
    with_note = rendered(render_table([comparison(note="Inf in tf output (1 elements)")]))
    assert "note" in line_with(with_note, "pair")
    assert "Inf in tf output" in with_note


def test_table_escapes_markup_in_names() -> None:
    text = rendered(render_table([comparison(output="[bold]x[/bold]", passed=False)]))
    assert "[bold]x[/bold]" in text
    assert "FAIL" in line_with(text, "[bold]x[/bold]")


def test_table_with_no_comparisons_renders_headers_only() -> None:
    text = rendered(render_table([]))
    assert "verdict" in text
    assert "PASS" not in text and "FAIL" not in text


def test_bug_table_fits_80_columns() -> None:
    text = rendered(render_table([comparison(output="y", max_abs=1.2e-5, max_rel=3.4e-3)]), 80)
    assert "…" not in text
    row = line_with(text, "1.2e-05")
    for cell in ("tf-ort", " y ", "3.4e-03", "25.00%", "0.999000", "1e-04", "PASS"):
        assert cell in row


def test_table_fits_80_columns_with_different_atol_and_rtol() -> None:
    rows = [
        comparison("ort-torch", "logits", max_abs=1.2e-5, cosine=-0.5, atol=1e-4, rtol=1e-5),
        comparison("tf-torch", "ids", atol=0.0, rtol=0.0),
    ]
    text = rendered(render_table(rows), 80)
    assert "…" not in text
    assert "atol/rtol" in line_with(text, "pair")
    assert "1e-04/1e-05" in line_with(text, "logits")
    assert "-0.500000" in line_with(text, "logits")
    assert "0/0" in line_with(text, "ids")


def test_table_tolerance_keeps_every_digit() -> None:
    text = rendered(render_table([comparison(atol=2.5e-4, rtol=2.5e-4)]))
    assert "2.5e-04" in line_with(text, "logits")


def test_print_summary_verdict_line() -> None:
    rep = sample_report()
    rep.stages = {"export": {"status": "ok", "seconds": 1.5}}
    console = Console(record=True, width=200)
    print_summary(console, rep.to_json())
    text = console.export_text()
    assert "export 1.5s" in text
    assert "CPUExecutionProvider" in text
    assert "FAIL: 1 comparison(s) out of tolerance" in text

    rep.verdict = "pass"
    rep.comparisons = [comparison(passed=True)]
    console = Console(record=True, width=200)
    print_summary(console, rep.to_json())
    assert "PASS: all pairs, parameters and gradients agree" in console.export_text()


def _noisy_report() -> Report:
    rep = sample_report()
    rep.comparisons = [
        comparison(atol=7.6e-4, rtol=0.0),
        comparison("tf-torch", atol=7.6e-4, rtol=0.0),
    ]
    rep.tolerances = {
        "noise_model": {"rule": "|a - b| <= k*(noise + noise) + f*eps*scale", "k": 2.0, "f": 16.0},
        "noise_floor": {
            "logits": {"noise": 1.87e-4, "scale": 5.9, "dtype": "float32", "atol": 7.6e-4}
        },
        "noise_unmeasured": None,
    }
    return rep


def test_noise_floors_are_shown_in_report_md_and_the_terminal() -> None:
    data = _noisy_report().to_json()
    md = render_markdown(data)
    assert "## Float32 noise floor" in md
    assert "| logits | 1.87e-04 | 5.90e+00 | 7.60e-04 |" in md
    console = Console(record=True, width=200)
    print_summary(console, data)
    text = console.export_text()
    assert "float32 noise floor (max |float32 - float64|): logits 1.9e-04" in text
    # Noise-floor tolerances have rtol 0: the column is atol alone.
    assert "atol" in line_with(text, "pair") and "7.6e-04" in line_with(text, "tf-torch")


def test_an_unmeasured_noise_floor_is_said() -> None:
    rep = sample_report()
    rep.tolerances = {"noise_floor": {}, "noise_unmeasured": "float64 run failed: X"}
    data = rep.to_json()
    assert "Not measured (float64 run failed: X)" in render_markdown(data)
    console = Console(record=True, width=200)
    print_summary(console, data)
    assert "noise floor not measured (float64 run failed: X)" in console.export_text()
