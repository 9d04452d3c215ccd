"""An embedding table shared by two lookups (a seq2seq model's token embedding, read by the
encoder and the decoder) becomes one ``nn.Embedding`` called at both, so its gradient
accumulates from both uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from onnx2torch.node_converters.gather import OnnxGather
from torch import nn

import pipeline
from pipeline.to_torch.codegen.simplify import embeddings

FACTORY = """
import keras
import numpy as np


def model():
    keras.utils.set_random_seed(0)
    enc = keras.Input((None,), dtype="int32", name="enc")
    dec = keras.Input((None,), dtype="int32", name="dec")
    table = keras.layers.Embedding(16, 4, name="tokens")
    e = keras.layers.Dense(4, name="enc_proj")(table(enc))
    d = keras.layers.Dense(4, name="dec_proj")(table(dec))
    model = keras.Model([enc, dec], keras.layers.Add(name="sum")([e, d]))
    rng = np.random.default_rng(0)
    for v in model.weights:
        v.assign(rng.normal(0, 0.5, v.shape).astype("float32"))
    return model
"""


class _Table(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embeddings = nn.Parameter(torch.arange(12.0).reshape(4, 3))


def test_two_reads_of_one_table_become_one_embedding_called_twice() -> None:
    root = nn.Module()
    root.tokens = _Table()
    root.enc_gather = OnnxGather(axis=0)
    root.dec_gather = OnnxGather(axis=0)
    graph = torch.fx.Graph()
    a, b = graph.placeholder("a"), graph.placeholder("b")
    first = graph.call_module("enc_gather", (graph.get_attr("tokens.embeddings"), a))
    second = graph.call_module("dec_gather", (graph.get_attr("tokens.embeddings"), b))
    graph.output(graph.call_function(torch.add, (first, second)))
    gm = torch.fx.GraphModule(root, graph)
    table = root.tokens.embeddings

    renames: dict[str, str] = {}
    embeddings(gm, renames)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()

    assert renames == {"tokens.embeddings": "tokens.weight"}
    assert isinstance(gm.tokens, nn.Embedding) and gm.tokens.weight is table
    calls = [n for n in gm.graph.nodes if n.op == "call_module"]
    assert [str(n.target) for n in calls] == ["tokens", "tokens"]
    assert [dict(gm.named_parameters())] == [{"tokens.weight": table}]

    out = gm(torch.tensor([1, 2]), torch.tensor([2, 3]))
    assert torch.equal(out, table[[1, 2]] + table[[2, 3]])
    out.sum().backward()
    assert table.grad is not None
    assert table.grad[:, 0].tolist() == [0.0, 1.0, 2.0, 1.0]  # row 2 read by both


def test_a_table_shared_by_two_inputs_converts_to_one_embedding(tmp_path: Path) -> None:
    factory = tmp_path / "shared.py"
    factory.write_text(FACTORY)
    options = pipeline.ConvertOptions(input_ranges={"enc": (0, 16), "dec": (0, 16)})
    result = pipeline.convert(f"{factory}:model", tmp_path / "run", options)
    report = result.report
    assert result.verdict == "pass", report
    rows = {r["tf_name"]: r for r in report["parameters"]}
    assert rows["tokens/embeddings"]["torch_name"] == "tokens.weight"
    gradients = {g["tf_name"]: g for g in report["gradients"]}
    assert gradients["tokens/embeddings"]["checked"] and gradients["tokens/embeddings"]["pass"]

    code = (result.run_dir / "torch_model" / "model.py").read_text()
    assert code.count("nn.Embedding(") == 1
    assert code.count("self.tokens(") == 2

    module = pipeline.load_torch(result.run_dir)
    weight = dict(module.named_parameters())["tokens.weight"]
    enc = torch.from_numpy(np.array([[1, 2]], np.int32))
    dec = torch.from_numpy(np.array([[3, 4]], np.int32))
    module(enc, dec).sum().backward()
    assert weight.grad is not None
    touched = weight.grad.abs().sum(dim=1).nonzero().flatten().tolist()
    assert touched == [1, 2, 3, 4]  # rows read by the encoder and by the decoder
