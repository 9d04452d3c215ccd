"""diff names the culprit when tf2onnx invented its name: nameless nodes matched by value.

On the stateless export route a DepthwiseConv2D keeps TF's op name (``depthwise_1/depthwise``)
but not its tensor: our passes fold the ``BiasAdd`` into it and rename its output
(``val_<n>``), and the layout ``Transpose`` back to NHWC after it is one tf2onnx made
(``depthwise_1/depthwise__<n>``).  No TF tensor has those names.  A fault planted in either
must be the first divergence (not the next named node), shown with the TF op it came from; and
the terminal table keeps each row on one line however long the names.
"""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console

import pipeline
from pipeline.cli import main
from pipeline.diff.core import decomposition_aliases
from pipeline.diff.report import abbreviate, render_table
from pipeline.diff.value_match import MAX_REL_ERROR, match_by_value, neighbourhoods

FACTORY = textwrap.dedent(
    """
    import keras
    import numpy as np
    from keras import layers


    def depthwise_net():
        x = keras.Input((8, 8, 3), name="x")
        h = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(x)
        h = layers.DepthwiseConv2D(3, padding="same", name="depthwise")(h)
        h = layers.Flatten(name="flatten")(h)
        model = keras.Model(x, layers.Dense(5, name="logits")(h))
        rng = np.random.default_rng(0)
        for v in model.variables:
            v.assign(rng.normal(0, 0.3, v.shape).astype("float32"))
        return model
    """
)


def test_abbreviate_keeps_the_tail_segments_and_the_kind() -> None:
    assert abbreviate("short", 10) == "short"
    name = "functional_1/flatten_1/Reshape/shape_Concat__27"
    assert abbreviate(name, 40) == "…/flatten_1/Reshape/shape_Concat__27"
    assert abbreviate(name, 30) == "…/Reshape/shape_Concat__27"
    assert abbreviate("model/aaaaaaaaaaaa/b", 10) == "model/…/b"  # the head when it costs nothing
    assert abbreviate("functional_1/depthwise_1/BiasAdd (BiasAdd)", 32) == (
        "…/depthwise_1/BiasAdd (BiasAdd)"
    )
    assert abbreviate("averyveryveryverylongname", 10) == "…ylongname"
    for width in range(2, 40):
        assert len(abbreviate(name, width)) <= width


def _node(index: int, name: str, status: str = "ok") -> dict[str, object]:
    cell = {"status": status, "max_abs": 1e-3, "max_rel": 1e-2, "atol": 1e-4}
    return {
        "index": index,
        "onnx_node": name,
        "op_type": "Conv",
        "tf_op": f"{name}_tf_op_with_a_long_name/BiasAdd",
        "tf_type": "BiasAdd",
        "torch_module": f"{name.replace('/', '_')}_module (OnnxBinaryMathOperation)",
        "pairs": {p: dict(cell) for p in ("tf-ort", "tf-torch", "ort-torch")},
    }


def test_terminal_table_rows_are_one_line_at_140_columns() -> None:
    long = "model_with_a_long_name_1/block_17_expand_relu_branch_2/depthwise_conv_1/BiasAdd"
    nodes = [_node(i, f"{long}_{i}") for i in range(6)]
    data = {
        "nodes": nodes,
        "pairs": ["tf-ort", "tf-torch", "ort-torch"],
        "first_divergence": {"tf-ort": {"index": 2}, "tf-torch": None, "ort-torch": None},
    }
    console = Console(width=140, record=True, highlight=False)
    console.print(render_table(data, 0, 140))
    lines = console.export_text().splitlines()
    rows = [ln for ln in lines if ln.strip()[:1].isdigit()]
    assert len(rows) == len(nodes)  # no row wrapped onto a second line
    assert all(len(ln) <= 140 for ln in lines)
    assert all(f"_{i}" in row for i, row in enumerate(rows))  # the distinguishing tail stays


def test_neighbourhoods_reach_named_nodes_across_invented_ones() -> None:
    nodes = [
        helper.make_node("Transpose", ["x"], ["t0"], name="Transpose__1", perm=[0, 3, 1, 2]),
        helper.make_node("Relu", ["t0"], ["r"], name="Relu__2"),
        helper.make_node("Transpose", ["r"], ["t1"], name="Transpose__3", perm=[0, 2, 3, 1]),
        helper.make_node("Identity", ["t1"], ["y"], name="model/flatten/Reshape"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 3])],
    )
    near = neighbourhoods(helper.make_model(graph))
    assert near["r"][0] == "Relu__2" and "model/flatten/Reshape" in near["r"]
    assert "model/flatten/Reshape" not in neighbourhoods(helper.make_model(graph), hops=1)["r"]


def test_a_layout_transpose_after_a_node_is_no_decomposition() -> None:
    """``X`` then ``X__18`` (a Transpose back to NHWC) is TF's ``X`` in two layouts: neither is
    hidden as internal, so a fault in ``X`` is seen at ``X``.  ``Y`` then ``Y__4`` (a ``Not``)
    is a decomposition: TF's ``Y:0`` is the ``Not``'s output, whatever ``Y``'s output is
    called after the passes."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["val_1"], name="m/depthwise", group=3),
        helper.make_node("Transpose", ["val_1"], ["m/depthwise__18:0"], name="m/depthwise__18"),
        helper.make_node("Equal", ["m/depthwise__18:0", "z"], ["val_2"], name="m/NotEqual"),
        helper.make_node("Not", ["val_2"], ["m/NotEqual__4:0"], name="m/NotEqual__4"),
    ]
    out = helper.make_tensor_value_info("m/NotEqual__4:0", TensorProto.BOOL, [1])
    graph = helper.make_graph(nodes, "g", [], [out])
    aliases, internal = decomposition_aliases(helper.make_model(graph))
    assert aliases == {"m/NotEqual__4:0": "m/NotEqual:0"}
    assert list(internal) == ["val_2"]


def test_match_by_value_takes_the_closest_candidate_under_a_layout() -> None:
    rng = np.random.default_rng(0)
    tf_value = rng.normal(size=(2, 5, 5, 4)).astype(np.float32)  # NHWC
    onnx_value = np.transpose(tf_value, (0, 3, 1, 2)) * np.float32(1.05)  # NCHW, 5 % off
    other = rng.normal(size=(2, 5, 5, 4)).astype(np.float32)
    values = {"c0": other, "c1": tf_value}
    tensors = {
        "Conv__7:0": {
            "status": "not_found",
            "candidates": [
                {
                    "key": k,
                    "tf_name": f"t{k}:0",
                    "tf_op": f"t{k}",
                    "tf_type": "Op",
                    "shape": [2, 5, 5, 4],
                }
                for k in values
            ],
        },
        "Conv__9:0": {
            "status": "not_found",
            "candidates": [
                {
                    "key": "c0",
                    "tf_name": "tc0:0",
                    "tf_op": "tc0",
                    "tf_type": "Op",
                    "shape": [2, 5, 5, 4],
                }
            ],
        },
    }
    reference = {"Conv__7:0": onnx_value, "Conv__9:0": onnx_value}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["Conv__7:0"], name="Conv__7"),
        helper.make_node("Conv", ["x", "w"], ["Conv__9:0"], name="Conv__9"),
    ]
    graph = helper.make_graph(nodes, "g", [], [])
    matched = match_by_value(helper.make_model(graph), tensors, values.__getitem__, reference)
    assert matched == {"Conv__7:0": "tc1:0"}
    entry = tensors["Conv__7:0"]
    assert entry["status"] == "ok" and entry["key"] == "c1"
    assert entry["matched_by_value"]["layout"] == "nhwc->nchw"
    assert entry["matched_by_value"]["by"] == "value"
    assert entry["matched_by_value"]["rel_error"] == pytest.approx(0.05 / 1.05, rel=1e-3)
    # An unrelated tensor is far beyond the bound: the node stays unmatched.
    assert tensors["Conv__9:0"]["status"] == "not_found"
    assert MAX_REL_ERROR < 1.0


@pytest.fixture(scope="module")
def depthwise_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("depthwise")
    factory = root / "net.py"
    factory.write_text(FACTORY)
    result = pipeline.convert(f"{factory}:depthwise_net", root / "run")
    assert result.verdict == "pass"
    return result.run_dir


def _tf_style(tensor: str) -> bool:
    """Whether ``tensor`` is named like a TF tensor (``op:index``), as tf2onnx names the
    tensors it took from TF; tensors a pass or tf2onnx made are not (``val_3``)."""
    return re.fullmatch(r".+:\d+", tensor) is not None


def _invented_depthwise(model: onnx.ModelProto) -> onnx.NodeProto:
    """The depthwise convolution (a grouped ``Conv``), whose output has no TF tensor name."""
    [conv] = [
        n
        for n in model.graph.node
        if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
    ]
    assert not _tf_style(conv.output[0]), conv  # else it would be matched by name
    return conv


def _broken_copy(run: Path, tmp_path: Path, edit: object) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    model = onnx.load(str(target / "model.onnx"))
    edit(model)  # type: ignore[operator]
    onnx.save(model, str(target / "model.onnx"))
    return target


def test_a_fault_in_a_depthwise_conv_tf2onnx_renamed_is_the_first_divergence(
    depthwise_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conv_name = _invented_depthwise(onnx.load(str(depthwise_run / "model.onnx"))).name

    def plant(model: onnx.ModelProto) -> None:
        weight_name = _invented_depthwise(model).input[1]
        weight = next(t for t in model.graph.initializer if t.name == weight_name)
        value = numpy_helper.to_array(weight).copy()
        value[1] *= 1.05  # one channel's kernel 5 % off
        weight.CopyFrom(numpy_helper.from_array(value, weight.name))

    run = _broken_copy(depthwise_run, tmp_path, plant)
    assert main(["diff", str(run), "-q", "--top", "0", "--no-repro"]) == 1
    data = json.loads((run / "diff.json").read_text())
    for pair in ("tf-ort", "tf-torch"):
        first = data["first_divergence"][pair]
        assert first["onnx_node"] == conv_name, first
        assert "depthwise" in first["tf_op"]
        assert first["self_error"] is True
    assert data["first_divergence"]["ort-torch"] is None
    node = next(n for n in data["nodes"] if n["onnx_node"] == conv_name)
    [tensor] = node["outputs"]
    assert tensor["tf_match"]["by"] == "value" and "depthwise" in tensor["tf_name"]
    assert "depthwise_1/BiasAdd:0 by value" in node["pairs"]["tf-ort"]["note"]
    out = capsys.readouterr().out
    assert f"tf-ort: first divergence at #{node['index']} {conv_name} (Conv, TF " in out


def test_a_fault_in_an_invented_transpose_is_the_first_divergence(
    depthwise_run: Path, tmp_path: Path
) -> None:
    """The Transpose tf2onnx adds after the depthwise conv (NCHW → NHWC) given a wrong
    permutation that keeps the shape (H and W swapped): that Transpose is the culprit."""
    model = onnx.load(str(depthwise_run / "model.onnx"))
    conv_out = _invented_depthwise(model).output[0]
    [transpose] = [n for n in model.graph.node if n.op_type == "Transpose" and conv_out in n.input]
    # invented by tf2onnx: named after the TF op it serves plus a counter, no TF tensor
    assert re.fullmatch(r".+__\d+", transpose.name), transpose.name

    def swap_hw(m: onnx.ModelProto) -> None:
        node = next(n for n in m.graph.node if n.name == transpose.name)
        perm = next(a for a in node.attribute if a.name == "perm")
        assert list(perm.ints) == [0, 2, 3, 1]
        perm.ints[:] = [0, 3, 2, 1]

    run = _broken_copy(depthwise_run, tmp_path, swap_hw)
    assert main(["diff", str(run), "-q", "--no-repro"]) == 1
    data = json.loads((run / "diff.json").read_text())
    for pair in ("tf-ort", "tf-torch"):
        assert data["first_divergence"][pair]["onnx_node"] == transpose.name
    node = next(n for n in data["nodes"] if n["onnx_node"] == transpose.name)
    assert node["outputs"][0]["tf_match"]["by"] == "layout"
