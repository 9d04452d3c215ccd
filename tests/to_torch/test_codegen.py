"""The generated ``torch_model/`` package: readable, standalone, and the model every check runs.

Each zoo model is converted once (module-scoped fixture) with :func:`pipeline.api.convert`;
the tests then read the package it wrote.  Two representative models run in the default
suite (a CNN; the attention-pooling patch with an embedding on int tokens); the rest of the
non-slow zoo is marked slow.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import pipeline
from pipeline.api import ConversionResult, ConvertOptions, convert
from pipeline.core.ort_runner import OrtRunner
from pipeline.core.run_dir import write_npz
from pipeline.to_torch.codegen import CodegenFailed, emit_package, import_package
from pipeline.to_torch.codegen.naming import ScopeReader, TemporaryNames, class_name, sanitize
from pipeline.to_torch.importer import export_program, load_program
from pipeline.to_torch.module_surgery import sanitize_name as parameters_sanitize
from pipeline.to_torch.ops.recurrent import ReverseSequence

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from models.catalog import ZOO  # noqa: E402

DEFAULT = ("cnn", "attention_pooling")
MODELS = [
    pytest.param(name, marks=() if name in DEFAULT else pytest.mark.slow, id=name)
    for name, entry in ZOO.items()
    if not entry.slow and entry.expected == "pass"
]

# Run in a fresh interpreter (-I: no PYTHONPATH, no cwd) whose import system refuses the
# pipeline, the converters and every framework but torch: the package must stand alone.
STANDALONE = textwrap.dedent(
    """
    import importlib.abc, json, sys
    import numpy as np

    BLOCKED = {"pipeline", "patches", "onnx2torch", "tensorflow", "keras", "tf2onnx",
               "onnx", "onnxruntime", "models"}

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"blocked: {name}")
            return None

    sys.meta_path.insert(0, Refuse())
    run_dir, inputs_npz, out_npz = sys.argv[1:4]
    sys.path.insert(0, run_dir)
    import torch
    from torch_model import load_model

    model = load_model()
    with np.load(inputs_npz) as npz:
        arrays = {k: npz[k] for k in npz.files}
    outputs = {}
    for batch in ("1", "7"):
        args = [torch.from_numpy(a) for k, a in sorted(arrays.items()) if k.startswith(batch + "/")]
        with torch.no_grad():
            result = model(*args)
        for i, tensor in enumerate(result if isinstance(result, tuple) else (result,)):
            outputs[f"{batch}/{i}"] = tensor.numpy()
    np.savez(out_npz, **outputs)
    print(json.dumps({
        "class": type(model).__name__,
        "modules": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
    }))
    """
)


@dataclass
class Converted:
    name: str
    result: ConversionResult
    run_dir: Path

    @property
    def package(self) -> Path:
        return self.run_dir / "torch_model"

    @property
    def input_names(self) -> list[str]:
        return [str(s["name"]) for s in self.result.report["inputs"]]


@pytest.fixture(scope="module", params=MODELS)
def converted(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Converted:
    name = request.param
    entry = ZOO[name]
    run_dir = tmp_path_factory.mktemp("codegen") / name
    result = convert(
        f"{ROOT / 'models' / 'zoo.py'}:{name}",
        run_dir,
        ConvertOptions(input_ranges=entry.input_ranges, keep_batchnorm=entry.keep_batchnorm),
    )
    return Converted(name, result, run_dir)


def _batches(converted: Converted) -> dict[str, np.ndarray]:
    """Inputs at batch 1 and 7 (``1/<i>_<name>``), from the golden ones: float inputs get
    seeded noise, integer ones (token ids) repeat the golden rows."""
    rng = np.random.default_rng(7)
    arrays: dict[str, np.ndarray] = {}
    with np.load(converted.run_dir / "golden.npz") as golden:
        for i, name in enumerate(converted.input_names):
            base = golden[f"input/{name}"]
            for batch in (1, 7):
                rows = np.concatenate([base] * 4)[:batch]
                if np.issubdtype(rows.dtype, np.floating):
                    rows = rows + rng.normal(0, 0.1, rows.shape).astype(rows.dtype)
                arrays[f"{batch}/{i}_{name}"] = np.ascontiguousarray(rows)
    return arrays


def test_the_conversion_passes_on_the_generated_module(converted: Converted) -> None:
    report = converted.result.report
    assert converted.result.verdict == "pass", report["comparisons"]
    assert report["torch_model"]["package"] == "torch_model"
    assert type(converted.result.module).__name__ == report["torch_model"]["class"]
    assert isinstance(report["torch_model"]["transposes"], int)
    assert (converted.package / "weights.safetensors").is_file()


def test_model_py_is_ruff_clean(converted: Converted) -> None:
    model_py = converted.package / "model.py"
    for config in (["--config", str(ROOT / "pyproject.toml")], ["--isolated"]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", "check", *config, str(model_py)],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    text = model_py.read_text()
    assert "onnx2torch" not in text and "pipeline" not in text
    imports = [line for line in text.splitlines() if line.startswith(("import ", "from "))]
    assert all(" torch" in line or "__future__" in line for line in imports), imports


def test_package_stands_alone_and_matches_onnx_runtime_at_batch_1_and_7(
    converted: Converted, tmp_path: Path
) -> None:
    arrays = _batches(converted)
    inputs_npz, out_npz = tmp_path / "inputs.npz", tmp_path / "outputs.npz"
    write_npz(inputs_npz, arrays)
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            STANDALONE,
            str(converted.run_dir),
            str(inputs_npz),
            str(out_npz),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["modules"] == []
    assert seen["class"] == converted.result.report["torch_model"]["class"]

    import onnx

    ort = OrtRunner(onnx.load(str(converted.run_dir / "model.onnx")))
    outputs = [c["output"] for c in converted.result.report["comparisons"] if c["pair"] == "tf-ort"]
    with np.load(out_npz) as got:
        for batch in ("1", "7"):
            feed = {
                name: arrays[f"{batch}/{i}_{name}"] for i, name in enumerate(converted.input_names)
            }
            expected = ort.run(feed)
            for i, output in enumerate(outputs):
                actual = got[f"{batch}/{i}"]
                assert actual.shape == expected[output].shape
                np.testing.assert_allclose(actual, expected[output], rtol=1e-4, atol=1e-4)


def test_state_dict_and_trainable_parameters_follow_the_table(converted: Converted) -> None:
    module = import_package(converted.package).load_model()
    rows = converted.result.report["parameters"]
    table_names = {r["torch_name"] for r in rows if r["torch_name"]}
    assert table_names <= set(module.state_dict())
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable == {r["torch_name"] for r in rows if r["torch_name"] and r["trainable"]}


def test_load_torch_returns_the_generated_module(converted: Converted) -> None:
    module = pipeline.load_torch(converted.run_dir)
    assert type(module).__name__ == converted.result.report["torch_model"]["class"]
    assert type(module).__module__.endswith(".model")


def test_torch_export_of_the_generated_module_keeps_the_batch_dynamic(
    converted: Converted, tmp_path: Path
) -> None:
    module = import_package(converted.package).load_model()
    arrays = _batches(converted)
    export_program(
        module,
        [arrays[f"7/{i}_{n}"] for i, n in enumerate(converted.input_names)],
        tmp_path / "m.pt2",
    )
    program = load_program(tmp_path / "m.pt2")
    args = [torch.from_numpy(arrays[f"1/{i}_{n}"]) for i, n in enumerate(converted.input_names)]
    with torch.no_grad():
        eager, exported = module(*args), program(*args)
    for a, b in zip(
        eager if isinstance(eager, tuple) else (eager,),
        exported if isinstance(exported, tuple) else (exported,),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_torch_compile_fullgraph_matches_eager(converted: Converted) -> None:
    """The generated code compiles as one graph (no graph breaks) and computes the same."""
    module = import_package(converted.package).load_model()
    arrays = _batches(converted)
    args = [torch.from_numpy(arrays[f"7/{i}_{n}"]) for i, n in enumerate(converted.input_names)]
    # Dynamo refuses nn.LSTM/nn.GRU unless its (experimental) RNN support is switched on.
    recurrent = any(isinstance(m, nn.RNNBase) for m in module.modules())
    with torch._dynamo.config.patch(allow_rnn=recurrent), torch.no_grad():
        compiled = torch.compile(module, fullgraph=True, dynamic=True)
        eager, fast = module(*args), compiled(*args)
    for a, b in zip(
        eager if isinstance(eager, tuple) else (eager,),
        fast if isinstance(fast, tuple) else (fast,),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_channels_first_takes_nchw_and_leaves_no_transpose_before_the_head(
    tmp_path: Path,
) -> None:
    """``--channels-first`` on the CNN: the checks still pass on Keras-layout inputs, the
    generated model takes NCHW, and the only permute left is the one Keras's Flatten order
    needs before the Dense head (none between convolutions)."""
    run_dir = tmp_path / "cnn"
    result = convert(
        f"{ROOT / 'models' / 'zoo.py'}:cnn", run_dir, ConvertOptions(channels_first=True)
    )
    assert result.verdict == "pass"
    assert result.report["torch_model"]["channels_first"] is True
    assert result.report["torch_model"]["transposes"] == 1
    text = (run_dir / "torch_model" / "model.py").read_text()
    forward = text[text.index("def forward") :]
    assert forward.index(".permute(") > forward.index("F.max_pool2d(")
    with np.load(run_dir / "golden.npz") as golden:
        image = golden["input/image"]
    model = import_package(run_dir / "torch_model").load_model()
    with torch.no_grad():
        nchw = model(torch.from_numpy(image).permute(0, 3, 1, 2).contiguous())
    import onnx

    expected = OrtRunner(onnx.load(str(run_dir / "model.onnx"))).run({"image": image})
    np.testing.assert_allclose(nchw.numpy(), expected["logits"], rtol=1e-4, atol=1e-4)
    with pytest.raises(RuntimeError):
        model(torch.from_numpy(image))  # NHWC is refused: 28 input channels != 1


# ------------------------------------------------------------------- small, no TF


def test_sanitize_is_one_rule_shared_with_the_parameter_paths() -> None:
    assert sanitize("dense-1") == "dense_1"
    assert sanitize("1x1") == "_1x1"
    assert sanitize("block/conv:0") == "block_conv"
    assert sanitize("lambda") == "lambda_"
    for name in ("dense-1", "1x1", "conv.bn", "a/b", "ok_name", "é"):
        assert sanitize(name) == parameters_sanitize(name)


def test_class_names_are_camel_case() -> None:
    assert class_name("dense_mlp") == "DenseMlp"
    assert class_name("cnn") == "Cnn"
    assert class_name("mobilenetv2_1.00_96") == "Mobilenetv2_1_00_96"
    assert class_name("2net") == "Model2net"
    assert class_name(None) == "Model"


def test_scopes_name_temporaries_after_layers() -> None:
    reader = ScopeReader({"conv", "dense_1", "query", "mha"}, "cnn")
    assert reader.layer_path("cnn_1/conv_1/Relu") == ["conv"]
    assert reader.layer_path("cnn_1/dense_1_1/MatMul") == ["dense_1"]
    assert reader.layer_path("cnn_1/mha_1/query_1/Tensordot/Reshape") == ["mha", "query"]
    assert reader.layer_path("Transpose__26") == []
    names = TemporaryNames(reserved=["image"])
    assert names.allocate("conv", "relu", now=1, last_use=2) == "conv"
    assert names.allocate("conv", "relu", now=2, last_use=3) == "conv"  # the old value dies
    assert names.allocate("conv", "relu", now=2, last_use=9) == "conv_relu"  # it does not
    assert names.allocate("image", "", now=3, last_use=4) == "image_1"


class _Unknown(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


class _Graph(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.reverse = ReverseSequence(batch_axis=1, time_axis=0)
        self.unknown = _Unknown()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.reverse(x, lengths)


class _EveryModuleALeaf(torch.fx.Tracer):
    """Traces like onnx2torch's graphs: each module one call_module node."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


def _trace(root: nn.Module) -> torch.fx.GraphModule:
    return torch.fx.GraphModule(root, _EveryModuleALeaf().trace(root))


def test_helper_ops_are_written_into_the_file_and_listed(tmp_path: Path) -> None:
    gm = _trace(_Graph())
    x = torch.randn(5, 3, 4)
    lengths = torch.tensor([5, 2, 4])
    package = emit_package(
        gm,
        [],
        tmp_path,
        model_name="rev",
        input_names=["x", "lengths"],
        output_names=["y"],
        example_inputs=[x, lengths],
    )
    assert package.helper_ops == ["reverse_sequence (ReverseSequence: reverse)"]
    text = (package.path / "model.py").read_text()
    assert "def reverse_sequence(" in text
    torch.testing.assert_close(
        import_package(package.path).load_model()(x, lengths), gm(x, lengths)
    )


def test_an_op_without_translator_fails_naming_it(tmp_path: Path) -> None:
    class Uses(_Graph):
        def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            return self.unknown(self.reverse(x, lengths))

    gm = _trace(Uses())
    with pytest.raises(CodegenFailed, match="_Unknown"):
        emit_package(
            gm,
            [],
            tmp_path,
            model_name="rev",
            input_names=["x", "lengths"],
            output_names=["y"],
            example_inputs=[torch.randn(5, 3, 4), torch.tensor([5, 2, 4])],
        )
    assert not (tmp_path / "torch_model").exists()


class _Activation(nn.Module):
    def __init__(self, activation: nn.Module) -> None:
        super().__init__()
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(x)


@pytest.mark.parametrize(
    "activation",
    [
        nn.SELU(),  # Keras "selu" (fuzz seed 1049 had no readable form for it)
        nn.ELU(alpha=0.5),
        nn.CELU(),
        nn.LeakyReLU(0.2),
        nn.Hardswish(),
        nn.Softplus(),
        nn.Softsign(),
        nn.Sigmoid(),
        nn.Softmax(dim=1),
        nn.LogSoftmax(dim=1),
    ],
    ids=lambda m: type(m).__name__,
)
def test_every_activation_onnx2torch_makes_has_a_readable_form(
    activation: nn.Module, tmp_path: Path
) -> None:
    gm = _trace(_Activation(activation))
    x = torch.randn(4, 6)
    package = emit_package(
        gm,
        [],
        tmp_path,
        model_name="act",
        input_names=["x"],
        output_names=["y"],
        example_inputs=[x],
    )
    assert package.helper_ops == []
    torch.testing.assert_close(import_package(package.path).load_model()(x), gm(x))
