"""The fixup pass framework: every pass is checked, a pass that changes the numbers is named."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.core.errors import BadInputError, PassError
from pipeline.core.ort_runner import OrtRunner
from pipeline.passes import (
    PassResult,
    default_passes,
    load_patch_dir,
    pass_tolerances,
    run_passes,
)
from pipeline.passes.erfc import ErfcPass


def _model(
    nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto] = ()
) -> onnx.ModelProto:  # type: ignore[assignment]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=list(initializers),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def _erfc_model() -> onnx.ModelProto:
    """``y = Erfc(x) * w``: Erfc as tf2onnx leaves it (default domain, not valid ONNX)."""
    w = numpy_helper.from_array(np.linspace(0.5, 2.0, 4, dtype=np.float32), "w")
    return _model(
        [
            helper.make_node("Erfc", ["x"], ["e"], name="erfc_node"),
            helper.make_node("Mul", ["e", "w"], ["y"], name="mul"),
        ],
        [w],
    )


def _scaled_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.linspace(0.5, 2.0, 4, dtype=np.float32), "w")
    return _model([helper.make_node("Mul", ["x", "w"], ["y"], name="mul")], [w])


INPUTS = {"x": np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32) * 2}


class ScaleWeight:
    """A test pass that multiplies initializer ``w`` by ``factor`` (a numeric change)."""

    description = "test: perturb w"

    def __init__(self, factor: float, name: str = "perturb") -> None:
        self.factor = factor
        self.name = name

    def apply(self, model: onnx.ModelProto) -> PassResult:
        out = onnx.ModelProto()
        out.CopyFrom(model)
        for i, init in enumerate(out.graph.initializer):
            if init.name == "w":
                value = numpy_helper.to_array(init) * np.float32(self.factor)
                out.graph.initializer[i].CopyFrom(numpy_helper.from_array(value, "w"))
        return PassResult(out, 1)


class BreakGraph:
    """A test pass that points the Mul at a tensor nobody produces."""

    name = "breaker"
    description = "test: invalid graph"

    def apply(self, model: onnx.ModelProto) -> PassResult:
        out = onnx.ModelProto()
        out.CopyFrom(model)
        out.graph.node[-1].input[0] = "nowhere"
        return PassResult(out, 1)


def test_erfc_pass_rewrites_to_valid_onnx_with_the_right_values() -> None:
    fixed, records = run_passes(_erfc_model(), [ErfcPass()], INPUTS)
    assert "Erfc" not in {n.op_type for n in fixed.graph.node}
    onnx.checker.check_model(fixed, full_check=True)
    [record] = records
    assert record.name == "erfc" and record.changes == 1 and record.check == "validity"
    w = np.linspace(0.5, 2.0, 4, dtype=np.float32)
    expected = np.vectorize(math.erfc)(INPUTS["x"].astype(np.float64)) * w
    got = OrtRunner(fixed).run(INPUTS)["y"]
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_erfc_pass_leaves_graphs_without_erfc_alone() -> None:
    model = _scaled_model()
    fixed, [record] = run_passes(model, [ErfcPass()], INPUTS)
    assert fixed.SerializeToString() == model.SerializeToString()
    assert record.status == "unchanged" and record.changes == 0


def test_a_pass_that_keeps_the_numbers_is_checked_numerically() -> None:
    _, [record] = run_passes(_scaled_model(), [ScaleWeight(1.0)], INPUTS)
    assert record.check == "numeric" and record.max_abs_change == 0.0


def test_a_pass_that_changes_the_numbers_stops_the_run_and_is_named() -> None:
    with pytest.raises(PassError, match=r"'perturb'.*changed ONNX Runtime's outputs"):
        run_passes(_scaled_model(), [ScaleWeight(1.001)], INPUTS)


def test_a_pass_may_move_outputs_as_far_as_float32_already_does() -> None:
    """With TensorFlow's outputs, a float output's check allows twice their distance from
    the raw graph (a deep network's float32 disagreement), and not a bit more."""
    model = _scaled_model()
    raw = OrtRunner(model).run(INPUTS)
    change = 1e-3 * float(np.max(np.abs(raw["y"])))  # what w x 1.001 moves y = f(x)·w by
    assert change > 1e-4  # beyond the fixed default: without a reference the run stops
    offset = np.full_like(raw["y"], 0.6 * change)  # TF 0.6·change away: 2·0.6 > 1
    _, [record] = run_passes(
        model, [ScaleWeight(1.001)], INPUTS, reference={"y": raw["y"] + offset}
    )
    assert record.check == "numeric" and record.max_abs_change > 1e-4
    with pytest.raises(PassError, match=r"'perturb'.*changed ONNX Runtime's outputs"):
        run_passes(model, [ScaleWeight(1.001)], INPUTS, reference={"y": raw["y"] + offset / 2})
    assert pass_tolerances({"y": raw["y"]}, raw).per_output == {}  # no distance: defaults


def test_a_pass_that_breaks_a_valid_graph_is_named() -> None:
    with pytest.raises(PassError, match="'breaker' made the graph invalid"):
        run_passes(_scaled_model(), [BreakGraph()], INPUTS)


def test_a_raising_pass_is_named() -> None:
    class Raises:
        name = "raises"
        description = "test"

        def apply(self, model: onnx.ModelProto) -> PassResult:
            raise KeyError("boom")

    with pytest.raises(PassError, match="'raises' raised KeyError"):
        run_passes(_scaled_model(), [Raises()], INPUTS)


def test_unknown_ops_left_at_the_end_are_left_for_the_import_stage() -> None:
    fixed, [record] = run_passes(_erfc_model(), [ScaleWeight(1.0, "noop")], INPUTS)
    assert "Erfc" in {n.op_type for n in fixed.graph.node}
    assert record.check == "none"


def test_duplicate_pass_names_are_rejected() -> None:
    with pytest.raises(BadInputError, match="two passes are named 'same'"):
        run_passes(_scaled_model(), [ScaleWeight(1.0, "same"), ScaleWeight(1.0, "same")], INPUTS)


def test_default_passes_start_with_the_builtin_erfc_pass() -> None:
    passes = default_passes()
    assert passes[0].name == "erfc"
    assert len({p.name for p in passes}) == len(passes)


def test_user_patch_dir_is_loaded(tmp_path: Path) -> None:
    (tmp_path / "my_patch.py").write_text(
        textwrap.dedent(
            """
            from pipeline.passes import PassResult

            class Identity:
                name = "user_identity"
                description = "does nothing"

                def apply(self, model):
                    return PassResult(model, 0)

            PATCH = Identity()
            """
        )
    )
    (tmp_path / "_helper.py").write_text("raise RuntimeError('private modules are not patches')")
    [patch] = load_patch_dir(tmp_path)
    assert patch.name == "user_identity"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("import no_such_module_xyz\n", "failed to import: ModuleNotFoundError"),
        ("x = 1\n", "defines no PATCH"),
        ("PATCH = 42\n", "PATCH must have"),
    ],
)
def test_broken_user_patch_is_named(tmp_path: Path, source: str, message: str) -> None:
    (tmp_path / "broken.py").write_text(source)
    with pytest.raises(BadInputError, match=message) as caught:
        load_patch_dir(tmp_path)
    assert "broken.py" in str(caught.value)
    assert "\n" not in str(caught.value)


class RewriteMul:
    """A test patch that replaces the node ``mul`` by an equal Mul of its own name."""

    description = "test: claims the Mul"

    def __init__(self, name: str) -> None:
        self.name = name

    def apply(self, model: onnx.ModelProto) -> PassResult:
        out = onnx.ModelProto()
        out.CopyFrom(model)
        for node in out.graph.node:
            if node.name == "mul":
                node.name = f"mul_by_{self.name}"
                return PassResult(out, 1)
        return PassResult(model, 0)


def test_two_patches_claiming_the_same_nodes_are_named() -> None:
    with pytest.raises(BadInputError, match="'first' and 'second' both claim 1 node") as caught:
        run_passes(_scaled_model(), [], INPUTS, patches=[RewriteMul("first"), RewriteMul("second")])
    assert "(mul)" in str(caught.value)


def test_patches_with_separate_claims_both_run() -> None:
    fixed, records = run_passes(
        _scaled_model(), [], INPUTS, patches=[RewriteMul("only"), ScaleWeight(1.0, "noop")]
    )
    assert [r.name for r in records] == ["only", "noop"]
    assert [n.name for n in fixed.graph.node] == ["mul_by_only"]
