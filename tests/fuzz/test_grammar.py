"""The fuzz grammar (no TensorFlow): deterministic, valid Python, covers every element the
issue lists, and the outcome classifier tells pass, loud and silent apart."""

from __future__ import annotations

import ast
import json
from collections import Counter

import pytest

from fuzz.grammar import ACTIVATIONS, generate
from fuzz.outcome import LOUD, PASS, SILENT, classify, error_kind

REQUIRED = {
    "Dense", "Conv1D", "Conv2D", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
    "SeparableConv2D", "BatchNormalization", "LayerNormalization", "Dropout", "MaxPooling1D",
    "MaxPooling2D", "AveragePooling1D", "AveragePooling2D", "GlobalAveragePooling1D",
    "GlobalMaxPooling2D", "Add", "Concatenate", "Multiply", "Embedding(mask_zero)", "LSTM",
    "GRU", "Bidirectional", "MultiHeadAttention", "FuzzWeight", "Reshape", "Flatten",
    "Permute", "multi_input", "multi_output", "input:tokens", "integer_output",
    "weights:randomized", "weights:fresh",
}  # fmt: skip


def test_same_seed_same_model_and_different_seeds_differ() -> None:
    assert generate(7).source == generate(7).source
    assert generate(7).source != generate(8).source


def test_generated_factories_are_valid_python_defining_make() -> None:
    for seed in range(200):
        tree = ast.parse(generate(seed).source)
        assert "make" in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_the_grammar_covers_every_element_the_fuzzer_promises() -> None:
    seen: Counter[str] = Counter()
    for seed in range(400):
        seen.update(generate(seed).features)
    missing = REQUIRED - set(seen)
    assert not missing, missing
    activations = {f.split(":", 1)[1] for f in seen if f.startswith("activation:")}
    assert activations == set(ACTIVATIONS)


def test_integer_inputs_get_a_range() -> None:
    spec = next(s for s in map(generate, range(200)) if "input:tokens" in s.features)
    [(name, (lo, hi))] = spec.input_ranges.items()
    assert name.startswith("tokens") and lo == 0 and hi >= 5
    assert spec.convert_args() == ["--input-range", f"{name}={lo}:{hi}"]


def _report(**overrides: object) -> str:
    report = {
        "verdict": "pass",
        "comparisons": [
            {"pair": p, "output": "y", "pass": True} for p in ("tf-ort", "tf-torch", "ort-torch")
        ],
        "parameters": [{"tf_name": "d/kernel", "torch_name": "d.weight", "trainable": True}],
        "parameter_count": {"status": "full"},
        "gradients": [{"tf_name": "d/kernel", "pass": True, "checked": True}],
        "gradient_check": {"status": "checked"},
    }
    report.update(overrides)
    return json.dumps(report)


def test_a_full_pass_and_a_stated_gradient_skip_are_passes() -> None:
    assert classify(0, _report(), "") == (PASS, "full pass", "")
    skipped = classify(
        0, _report(gradients=[], gradient_check={"status": "skipped", "reason": "r"}), ""
    )
    assert (skipped.status, skipped.kind, skipped.detail) == (PASS, "gradients skipped", "r")


@pytest.mark.parametrize(
    ("overrides", "kind"),
    [
        ({"parameter_count": {"status": "partial"}}, "pass with parameter count partial"),
        (
            {"parameters": [{"tf_name": "bn/gamma", "torch_name": None, "trainable": True}]},
            "pass with trainable variable(s) without a torch tensor",
        ),
        (
            {"gradients": [{"tf_name": "d/kernel", "pass": True, "checked": False}]},
            "pass with gradient(s) not checked",
        ),
        (
            {"comparisons": [{"pair": "tf-ort", "output": "y", "pass": True}]},
            "pass with missing pairs",
        ),
    ],
)
def test_a_pass_that_lost_something_is_silent(overrides: dict[str, object], kind: str) -> None:
    outcome = classify(0, _report(**overrides), "")
    assert (outcome.status, outcome.kind) == (SILENT, kind)


def test_exit_1_must_name_what_failed() -> None:
    failing = _report(
        verdict="fail",
        comparisons=[{"pair": "tf-torch", "output": "y", "pass": False}],
    )
    assert classify(1, failing, "")[:2] == (LOUD, "outputs differ (tf-torch)")
    grads = _report(verdict="fail", gradients=[{"tf_name": "d/kernel", "pass": False}])
    assert classify(1, grads, "") == (LOUD, "gradients differ", "d/kernel")
    assert classify(1, _report(verdict="fail"), "")[:2] == (SILENT, "exit 1 without a named reason")


def test_tracebacks_hangs_and_signals_are_silent() -> None:
    trace = "Traceback (most recent call last):\n  ...\nRuntimeError: boom\n"
    assert classify(2, "", trace) == (SILENT, "traceback", "RuntimeError: boom")
    assert classify(None, "", "")[:2] == (SILENT, "hang")
    assert classify(-11, "", "")[:2] == (SILENT, "exit -11")
    assert classify(2, "", "two\nlines\n")[:2] == (SILENT, "exit 2 without one error line")


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (
            "tf2torch: error: import: 2 unsupported op type(s): Bitcast x1 (a/Bitcast); "
            "BitwiseAnd x1 (a/BitwiseAnd). Add a patch for them (see README) or choose",
            "unsupported op (Bitcast, BitwiseAnd)",
        ),
        ("tf2torch: error: tf2onnx could not export the model: ValueError: x", "onnx export error"),
        (
            "tf2torch: error: pass 'layer_norm' changed ONNX Runtime's outputs",
            "fixup pass (layer_norm)",
        ),
        (
            "tf2torch: internal error in gradients: RuntimeError: x (details: /tmp/l.log)",
            "internal error (gradients: RuntimeError)",
        ),
    ],
)
def test_error_lines_are_classified(line: str, kind: str) -> None:
    assert error_kind(line) == kind
    assert classify(2, "", line + "\n") == (LOUD, kind, line)
