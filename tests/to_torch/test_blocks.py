"""Block classes and idioms in the generated ``model.py`` (``ConvertOptions(flat=False)``,
``tf2torch convert --blocks``): repeated subgraphs written once as ``nn.Module`` classes,
spelled-out activations as their ``F.`` calls, attention as
``F.scaled_dot_product_attention``, short local names inside a block, the parameter table
on the new names, and the block-structured module proven three ways with every gradient,
like the flat one (and run by ``torch.compile``).

The Keras models are in ``codegen_cases.py`` (loaded by the TF worker, never imported here).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import pipeline
from pipeline.api import ConversionResult, ConvertOptions, convert
from pipeline.init import reset_parameters
from pipeline.scaling import scale_weights
from pipeline.to_torch.codegen import blocks

CASES = Path(__file__).with_name("codegen_cases.py")


def _convert(
    name: str, out: Path, *, flat: bool, source: str | None = None, **options: object
) -> tuple[ConversionResult, str]:
    given = ConvertOptions(flat=flat, **options)  # type: ignore[arg-type]
    result = convert(source or f"{CASES}:{name}", out, given)
    return result, (result.run_dir / "torch_model" / "model.py").read_text()


def _forward(source: str, cls: str) -> str:
    """The ``forward`` of class ``cls`` in ``source``."""
    body = source.split(f"class {cls}(nn.Module):", 1)[1]
    return body.split("def forward(", 1)[1].split("\nclass ", 1)[0]


def _assert_proven(result: ConversionResult) -> None:
    assert result.verdict == "pass", result.report.get("error")
    gradients = result.report["gradients"]
    assert gradients and all(g["checked"] and g["pass"] for g in gradients)
    assert all(p["torch_name"] for p in result.report["parameters"])


@pytest.fixture(scope="module")
def mlp_blocks(tmp_path_factory: pytest.TempPathFactory) -> tuple[ConversionResult, str]:
    return _convert("gelu_swish_blocks", tmp_path_factory.mktemp("blocks"), flat=False)


def test_repeated_blocks_become_one_class_in_a_loop(
    mlp_blocks: tuple[ConversionResult, str],
) -> None:
    result, source = mlp_blocks
    _assert_proven(result)
    assert source.count("class Block(nn.Module):") == 1
    assert "self.blocks = nn.ModuleList([" in source
    assert "for block in self.blocks:" in source
    assert source.count("Block(),  # block_") == 3


def test_activations_are_written_as_their_calls(mlp_blocks: tuple[ConversionResult, str]) -> None:
    _, source = mlp_blocks
    assert "F.gelu(" in source
    assert 'F.gelu(neck, approximate="tanh")' in source
    assert "F.silu(" in source
    assert "F.hardswish(" in source
    for spelled_out in ("torch.erf", "torch.tanh", "torch.sigmoid", "torch.sym_"):
        assert spelled_out not in source


def test_parameter_names_map_to_keras_names(mlp_blocks: tuple[ConversionResult, str]) -> None:
    result, _ = mlp_blocks
    names = {p["tf_name"]: p["torch_name"] for p in result.report["parameters"]}
    assert names["block_1_expand/kernel"] == "blocks.0.expand.weight"
    assert names["block_3_project/bias"] == "blocks.2.project.bias"
    assert names["stem/kernel"] == "stem.weight"
    # load_model() loads strictly, and the module every check ran carries these names.
    module = pipeline.load_torch(result.run_dir)
    assert set(module.state_dict()) == set(names.values())
    assert module.get_parameter("blocks.1.expand.weight").requires_grad


def test_flat_keeps_one_statement_per_op(tmp_path: Path) -> None:
    result, source = _convert("gelu_swish_blocks", tmp_path, flat=True)
    _assert_proven(result)
    assert "class Block" not in source and "ModuleList" not in source
    assert "torch.erf(" in source and "self.block_2_expand(" in source
    names = {p["tf_name"]: p["torch_name"] for p in result.report["parameters"]}
    assert names["block_1_expand/kernel"] == "block_1_expand.weight"


@pytest.mark.slow
def test_blocks_that_differ_in_shape_stride_and_residual_share_a_class(tmp_path: Path) -> None:
    result, source = _convert("conv_stages", tmp_path, flat=False)
    _assert_proven(result)
    assert source.count("class Block(nn.Module):") == 1
    assert "residual: bool = False" in source
    assert "if self.residual:" in source
    assert source.count("residual=True),  # block_") == 3
    module = pipeline.load_torch(result.run_dir)
    assert module.get_submodule("blocks.2.conv").stride == (2, 2)
    assert module.get_submodule("blocks.3.conv").out_channels == 12


# ------------------------------------------------------------------- the pure parts


@pytest.mark.parametrize(
    ("layers", "key"),
    [
        (["block_3_expand_BN"], "block_3"),
        (["conv2_block1_1_conv"], "conv2_block1"),
        (["convnext_tiny_stage_0_block_2_depthwise_conv"], "convnext_tiny_stage_0_block_2"),
        (["block1a_se_squeeze"], "block1a"),
        (["transformer_layer_0", "self_attention", "query"], "transformer_layer_0"),
        (["expanded_conv_project"], None),
        (["Conv_1"], None),
    ],
)
def test_block_keys_come_from_layer_names(layers: list[str], key: str | None) -> None:
    assert blocks.block_key(layers) == key


def test_init_literals_that_differ_become_arguments() -> None:
    template = blocks.init_template(
        [
            [
                "self.conv = nn.Conv2d(16, 96, kernel_size=3, padding=1, groups=96, bias=False)",
                "self.bn = nn.BatchNorm2d(96, eps=0.001)",
            ],
            [
                "self.conv = nn.Conv2d(24, 144, kernel_size=3, stride=2, groups=144, bias=False)",
                "self.bn = nn.BatchNorm2d(144, eps=0.001)",
            ],
        ]
    )
    assert template.lines == [
        "self.conv = nn.Conv2d(in_channels, channels, kernel_size=3, stride=stride, "
        "padding=padding, groups=channels, bias=False)",
        "self.bn = nn.BatchNorm2d(channels, eps=0.001)",
    ]
    assert template.calls == [["16", "96", "1", "1"], ["24", "144", "2", "0"]]
    with pytest.raises(blocks.TemplateMismatch):
        blocks.init_template([["self.a = nn.ReLU()"], ["self.a = nn.Tanh()"]])


def test_pass_through_statements_become_flags() -> None:
    plain = ["h = self.conv(x)", "h = F.relu(h)", "return h"]
    residual = ["h = self.conv(x)", "h = F.relu(h)", "add = x + h", "return add"]
    padded = ["pad = F.pad(x, (0, 1, 0, 1))", "h = self.conv(pad)", "h = F.relu(h)", "return h"]
    (kind,) = blocks.merge_kinds([plain, residual, padded], [["x"]] * 3)
    assert sorted(kind.members) == [0, 1, 2]
    assert "if self.residual:" in kind.forward and "    h = x + h" in kind.forward
    assert dict(zip(kind.members, kind.flag_values, strict=True))[1] == [
        f == "residual" for f in kind.flags
    ]
    # A statement whose input is read again is no pass-through: two kinds stay two.
    other = ["h = self.conv(x)", "g = F.relu(h)", "add = g + h", "return add"]
    assert len(blocks.merge_kinds([plain, other], [["x"]] * 2)) == 2


def test_block_class_names() -> None:
    assert blocks.class_name("block_3", "mobilenetv2_1_00_96") == "Block"
    assert blocks.class_name("conv2_block1", "resnet50") == "ConvBlock"
    assert blocks.class_name("convnext_tiny_stage_0_block_1", "convnext_tiny") == "StageBlock"


def test_names_inside_a_block_drop_its_prefix() -> None:
    assert blocks.local_name("block_3_expand_BN", "block_3") == "expand_BN"
    assert blocks.local_name("conv2_block1_1_conv", "conv2_block1") == "conv1"
    assert blocks.local_name("conv2_block1_add", "conv2_block1") == "add"
    assert blocks.local_name("stem_conv", "block_3") == "stem_conv"


def test_init_and_scaling_follow_the_block_names(mlp_blocks: tuple[ConversionResult, str]) -> None:
    result, _ = mlp_blocks
    module = pipeline.load_torch(result.run_dir)
    before = module.get_parameter("blocks.2.expand.weight").detach().clone()
    records = scale_weights(module, "global=0.5")
    scaled = {name for r in records for name in r["torch_names"]}
    assert "blocks.2.expand.weight" in scaled
    after = module.get_parameter("blocks.2.expand.weight").detach().clone()
    assert torch.allclose(after, before * 0.5)
    reset = reset_parameters(module, seed=0)
    assert {n for r in reset for n in r["torch_names"]} >= {"blocks.0.project.bias"}
    assert not torch.allclose(module.get_parameter("blocks.2.expand.weight"), after)


# ------------------------------------------------------------------- attention


@pytest.fixture(scope="module")
def attention_blocks(tmp_path_factory: pytest.TempPathFactory) -> tuple[ConversionResult, str]:
    return _convert("attention_blocks", tmp_path_factory.mktemp("attention"), flat=False)


def test_attention_is_one_sdpa_call_in_a_block_class(
    attention_blocks: tuple[ConversionResult, str],
) -> None:
    result, source = attention_blocks
    _assert_proven(result)
    forward = _forward(source, "Block")
    # Keras's causal mask (a constant lower triangle) is SDPA's is_causal.
    assert "attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)" in forward
    assert "q = query.transpose(1, 2)" in forward
    assert "attn = attn.transpose(1, 2).flatten(2)" in forward
    for transcript in ("torch.softmax", " @ ", "unsqueeze", "permute", "torch.sym_"):
        assert transcript not in source
    # Short local names inside the class; the state dict keeps the block names.
    assert "norm = self.norm(x)" in forward and "query = self.mha.query(norm)" in forward
    names = {p["tf_name"]: p["torch_name"] for p in result.report["parameters"]}
    assert names["block_2_mha/query/kernel"] == "blocks.1.mha.query.weight"


def test_compiled_blocks_module_matches_eager(
    attention_blocks: tuple[ConversionResult, str],
) -> None:
    # aot_eager: Dynamo tracing and AOTAutograd on CPU without compiling kernels (fast).
    result, _ = attention_blocks
    module = pipeline.load_torch(result.run_dir).eval()
    x = torch.randn(3, 6, 16, generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_padded_attention_keeps_keras_masked_softmax(tmp_path: Path) -> None:
    # A padded query has every key masked: Keras attends uniformly there and SDPA would
    # give zeros (and its additive mask would send gradients into masked scores), so the
    # scores are filled as Keras does and the products stay explicit.
    result, source = _convert(
        "padded_attention", tmp_path, flat=False, input_ranges={"tokens": (0, 20)}
    )
    _assert_proven(result)
    assert ".masked_fill(~mask" in source
    assert "torch.softmax(scores, dim=-1) @ v" in source
    assert "torch.sym_" not in source


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit", "bert"])
def test_keras_hub_attention_blocks(name: str, tmp_path: Path) -> None:
    ranges = {"token_ids": (0, 128), "segment_ids": (0, 2), "padding_mask": (0, 2)}
    result, source = _convert(
        name,
        tmp_path,
        flat=False,
        source=f"{Path(__file__).parents[2] / 'models' / 'keras_hub.py'}:{name}",
        input_ranges=ranges if name == "bert" else {},
    )
    _assert_proven(result)
    assert source.count("class Transformer") == 1
    mask = ", attn_mask=mask" if name == "bert" else ""
    assert f"attn = F.scaled_dot_product_attention(q, k, v{mask})" in source
    for transcript in ("torch.softmax", "torch.sym_", "permute(0, 2, 1, 3, 4)"):
        assert transcript not in source


@pytest.mark.slow
def test_relative_position_bias_is_sdpas_float_mask(tmp_path: Path) -> None:
    # T5 adds a learned relative position bias (with its padding mask) to unscaled scores:
    # SDPA's float attn_mask with scale=1.0, its gradient reaching the bias's embedding.
    result, source = _convert(
        "t5",
        tmp_path,
        flat=False,
        source=f"{Path(__file__).parents[2] / 'models' / 'keras_hub.py'}:t5",
        input_ranges={
            "encoder_token_ids": (0, 128),
            "encoder_padding_mask": (0, 2),
            "decoder_token_ids": (0, 128),
            "decoder_padding_mask": (0, 2),
        },
    )
    _assert_proven(result)
    assert source.count("F.scaled_dot_product_attention(") >= 4
    assert ", scale=1.0)" in source
