"""``tf2torch diff`` on the real stack: planted faults must be found at the exact node.

Runs are converted once per module (``pipeline.convert``), copied, and then broken on
purpose: (a) ``model.onnx`` altered after conversion (an initializer, an attribute), (b) a
test-only patch whose torch module differs from its ONNX form, (c) a legitimate float16
round trip.  TensorFlow only ever runs in the diff's worker process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import pipeline
from pipeline.cli import main
from pipeline.commands.demo import load_catalog
from pipeline.diff import DiffOptions, run_diff

REPO = Path(__file__).resolve().parents[2]
ZOO_FILE = REPO / "models" / "zoo.py"
PAIRS = ["tf-ort", "tf-torch", "ort-torch"]

# The stateless export traces the layers' calls (no model name scope) and names each
# variable's initializer after its path.
DENSE_2_MATMUL = "dense_2_1/MatMul"
DENSE_2_KERNEL = "dense_2/kernel"
DENSE_2_RELU = "dense_2_1/Relu"
SOFTMAX = "probabilities_1/Softmax"

WRONG_RELU_PATCH = '''\
"""Test-only patch: the last Relu becomes tf2torch::TestWrongRelu, whose ONNX form is Relu
but whose torch module is LeakyReLU(0.1) -- a converter that disagrees with its ONNX form."""

import onnx
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from pipeline.passes import custom_ops
from pipeline.passes.base import PassResult

OP = "TestWrongRelu"


@custom_ops.register_converter(OP)
def _convert(node, graph):
    return OperationConverterResult(
        torch_module=nn.LeakyReLU(0.1),
        onnx_mapping=OnnxMapping(inputs=node.input_values, outputs=node.output_values),
    )


class WrongReluPatch:
    name = "test_wrong_relu"
    description = "test only: last Relu -> tf2torch.TestWrongRelu (torch form wrong)"

    def apply(self, model):
        if not any(n.op_type == "Relu" for n in model.graph.node):
            return PassResult(model, 0)
        out = onnx.ModelProto()
        out.CopyFrom(model)
        node = [n for n in out.graph.node if n.op_type == "Relu"][-1]
        node.op_type, node.domain = OP, custom_ops.DOMAIN
        opset = custom_ops.default_opset(out)
        custom_ops.add_function(
            out,
            custom_ops.parse_function(
                f'<domain: "{custom_ops.DOMAIN}", opset_import: ["" : {opset}]>\\n'
                f"{OP} (x) => (y) {{\\n y = Relu(x)\\n}}"
            ),
        )
        return PassResult(out, 1)


PATCH = WrongReluPatch()
'''


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("diff_runs")


@pytest.fixture(scope="module")
def dense_mlp_run(runs: Path) -> Path:
    result = pipeline.convert(f"{ZOO_FILE}:dense_mlp", runs / "dense_mlp")
    assert result.verdict == "pass"
    return result.run_dir


@pytest.fixture(scope="module")
def patch_dir(runs: Path) -> Path:
    directory = runs / "test_patches"
    directory.mkdir()
    (directory / "wrong_relu.py").write_text(WRONG_RELU_PATCH)
    return directory


def _copy(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / run.name
    shutil.copytree(run, target)
    return target


def _edit_onnx(run: Path, edit: object) -> None:
    model = onnx.load(str(run / "model.onnx"))
    edit(model)  # type: ignore[operator]
    onnx.save(model, str(run / "model.onnx"))


def _diff_json(run: Path) -> dict:
    return json.loads((run / "diff.json").read_text())


def test_passing_model_exits_0_and_agrees_with_convert(tmp_path: Path, capsys) -> None:
    result = pipeline.convert(f"{ZOO_FILE}:cnn", tmp_path / "cnn")
    assert result.verdict == "pass"
    assert main(["diff", str(result.run_dir), "-q"]) == 0
    data = _diff_json(result.run_dir)
    assert data["verdict"] == "pass" == data["convert_verdict"]
    assert data["first_divergence"] == {pair: None for pair in PAIRS}
    assert data["torch_program"]["pass"] is True
    nodes = {n["onnx_node"]: n for n in data["nodes"]}
    conv = nodes["conv_1/BiasAdd"]
    assert conv["op_type"] == "Conv" and conv["tf_type"] == "BiasAdd"
    # TF's NHWC tensor is compared with ONNX's NCHW one, not skipped.
    assert conv["outputs"][0]["tf_layout"] == "nhwc->nchw"
    assert all(conv["pairs"][p]["status"] == "ok" for p in PAIRS)
    # The input-layout Transpose tf2onnx made computes no tensor of the TF graph (it feeds
    # the model input into NCHW): the cell says so instead of guessing.  Nodes that do compute
    # a TF tensor under another name are matched by value (tests/diff/test_value_match.py).
    transpose = next(n for n in data["nodes"] if n["op_type"] == "Transpose")
    assert transpose["pairs"]["tf-ort"]["status"] == "not_compared"
    assert "no TF tensor" in transpose["pairs"]["tf-ort"]["note"]
    assert "data:image/png;base64," in (result.run_dir / "diff.html").read_text()
    assert not (result.run_dir / "repro").exists()
    out = capsys.readouterr().out
    assert "PASS: no node diverges" in out


def test_altered_initializer_is_named_with_self_error(
    dense_mlp_run: Path, tmp_path: Path, capsys
) -> None:
    run = _copy(dense_mlp_run, tmp_path)

    def alter(model: onnx.ModelProto) -> None:
        weight = next(t for t in model.graph.initializer if t.name == DENSE_2_KERNEL)
        value = numpy_helper.to_array(weight).copy()
        value[3, 5] += 0.5
        weight.CopyFrom(numpy_helper.from_array(value, weight.name))

    _edit_onnx(run, alter)
    assert main(["diff", str(run), "-q", "--top", "3"]) == 1
    data = _diff_json(run)
    assert data["verdict"] == "fail"
    for pair in ("tf-ort", "tf-torch"):
        first = data["first_divergence"][pair]
        assert first["onnx_node"] == DENSE_2_MATMUL, first
        assert first["op_type"] == "MatMul" and first["tf_op"] == DENSE_2_MATMUL
        assert first["self_error"] is True
        assert first["max_abs"] > 0.1
    # ORT and torch run the same (wrong) graph and agree.
    assert data["first_divergence"]["ort-torch"] is None
    # Downstream nodes inherit the error and are not roots.
    softmax = next(n for n in data["nodes"] if n["onnx_node"] == SOFTMAX)
    assert softmax["pairs"]["tf-ort"]["status"] == "diverged"
    assert softmax["pairs"]["tf-ort"]["root"] is False
    out = capsys.readouterr().out
    assert f"tf-ort: first divergence at #3 {DENSE_2_MATMUL}" in out
    assert "SELF ERROR" in out
    # The repro shows the divergence with onnxruntime and torch alone.
    repro = run / data["first_divergence"]["tf-ort"]["repro"]
    assert {p.name for p in repro.iterdir()} >= {
        "model.onnx",
        "inputs.npz",
        "expected.npz",
        "repro.py",
    }
    small = onnx.load(str(repro / "model.onnx"))
    assert [n.name for n in small.graph.node] == [DENSE_2_MATMUL]
    proc = subprocess.run(
        [sys.executable, "repro.py"], cwd=repro, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "divergence reproduces" in proc.stdout
    assert "tensorflow" not in proc.stdout.lower() or "TensorFlow vs" in proc.stdout


@pytest.mark.slow  # one more diff run; the default suite localises three other faults
def test_altered_attribute_is_named(dense_mlp_run: Path, tmp_path: Path) -> None:
    run = _copy(dense_mlp_run, tmp_path)

    def alter(model: onnx.ModelProto) -> None:
        softmax = next(n for n in model.graph.node if n.name == SOFTMAX)
        del softmax.attribute[:]
        softmax.attribute.append(helper.make_attribute("axis", 0))

    _edit_onnx(run, alter)
    result = run_diff(run, DiffOptions(repro=False, html=False))
    assert not result
    for pair in ("tf-ort", "tf-torch"):
        first = result.first_divergence[pair]
        assert first is not None and first["onnx_node"] == SOFTMAX
        assert first["self_error"] is True
    assert result.first_divergence["ort-torch"] is None


def test_wrong_torch_converter_is_named(runs: Path, patch_dir: Path, capsys) -> None:
    converted = pipeline.convert(
        f"{ZOO_FILE}:dense_mlp",
        runs / "dense_mlp_wrong_relu",
        pipeline.ConvertOptions(patches=[patch_dir]),
    )
    assert converted.verdict == "fail"
    run = converted.run_dir
    # Without the run's patches the custom op cannot be imported: one line, exit 2.  (A
    # fresh process: this one registered the patch's converter when it converted.)
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "diff", str(run), "-q", "--no-tf"],
        capture_output=True,
        text=True,
        check=False,
    )
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1 and "--patches" in err, err

    assert main(["diff", str(run), "-q", "--patches", str(patch_dir)]) == 1
    data = _diff_json(run)
    assert data["first_divergence"]["tf-ort"] is None
    for pair in ("tf-torch", "ort-torch"):
        first = data["first_divergence"][pair]
        assert first["onnx_node"] == DENSE_2_RELU, first
        assert first["op_type"] == "tf2torch::TestWrongRelu"
        assert "LeakyReLU" in first["torch_module"]
        assert first["self_error"] is True
    assert data["convert_verdict"] == "fail"


@pytest.mark.slow  # one more diff run, of a float16 copy of the model
def test_float16_path_is_reported_with_its_size(dense_mlp_run: Path, tmp_path: Path) -> None:
    run = _copy(dense_mlp_run, tmp_path)
    hidden = "dense_1_1/Relu:0"

    def half_precision(model: onnx.ModelProto) -> None:
        for node in model.graph.node:
            for i, name in enumerate(node.input):
                if name == hidden:
                    node.input[i] = f"{hidden}_fp32"
        at = next(i for i, n in enumerate(model.graph.node) if hidden in n.output) + 1
        model.graph.node.insert(
            at,
            helper.make_node(
                "Cast", [hidden], [f"{hidden}_fp16"], "to_fp16", to=TensorProto.FLOAT16
            ),
        )
        model.graph.node.insert(
            at + 1,
            helper.make_node(
                "Cast", [f"{hidden}_fp16"], [f"{hidden}_fp32"], "to_fp32", to=TensorProto.FLOAT
            ),
        )

    _edit_onnx(run, half_precision)
    result = run_diff(run, DiffOptions(html=False, repro=False))
    first = result.first_divergence["tf-ort"]
    assert first is not None
    # float16 rounding: ~1e-3 relative, reported with its size, not as a crash, at the Cast
    # that rounds (no TF name: matched by value to the TF tensor it carries).
    assert 1e-5 < first["max_abs"] < 1e-2, first
    assert first["onnx_node"] == "to_fp16"
    assert first["self_error"] is True
    assert result.first_divergence["ort-torch"] is None
    nodes = {n["onnx_node"]: n for n in result.data["nodes"]}
    assert nodes["to_fp16"]["outputs"][0]["tf_name"] == hidden
    assert nodes["to_fp32"]["pairs"]["tf-ort"]["root"] is False
    assert nodes[DENSE_2_MATMUL]["pairs"]["tf-ort"]["root"] is False
    # Loosened to float16 tolerances the same run passes.
    loose = run_diff(run, DiffOptions(atol=1e-2, rtol=1e-2, html=False, repro=False))
    assert loose.verdict == "pass"


def test_not_a_run_directory_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["diff", str(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a tf2torch run directory" in err


def test_terminal_table_top(dense_mlp_run: Path, tmp_path: Path, capsys) -> None:
    run = _copy(dense_mlp_run, tmp_path)
    assert main(["diff", str(run), "-q", "--no-tf", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "top 2 by error of 9 nodes" in out
    rows = [ln for ln in out.splitlines() if ln.strip()[:1].isdigit()]
    assert len(rows) == 2, out
    assert _diff_json(run)["pairs"] == ["ort-torch"]


_ZOO = load_catalog().ZOO


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [n for n, e in _ZOO.items() if e.expected == "pass" and not e.slow]
)
def test_diff_agrees_with_convert_on_the_zoo(name: str, tmp_path: Path) -> None:
    entry = _ZOO[name]
    converted = pipeline.convert(
        f"{ZOO_FILE}:{name}",
        tmp_path / name,
        pipeline.ConvertOptions(
            input_ranges=dict(entry.input_ranges), keep_batchnorm=entry.keep_batchnorm
        ),
    )
    result = run_diff(converted.run_dir, DiffOptions(html=False))
    assert result.verdict == converted.verdict, result.first_divergence
    compared = [n for n in result.data["nodes"] if n["pairs"]["tf-ort"]["status"] != "not_compared"]
    assert compared, "no TF tensor matched an ONNX tensor"
    assert np.isfinite(
        [n["pairs"]["ort-torch"]["max_abs"] or 0.0 for n in result.data["nodes"]]
    ).all()
