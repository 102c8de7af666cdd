"""The MiDaS DPT networks (Depth Anything: test_estimators_depth_anything.py): full-size layout against the published facts, tiny forward passes, timm parity."""

import copy
from pathlib import Path

import pytest
import torch

from lib_depth2img.estimators import ESTIMATORS, build_dpt
from lib_depth2img.estimators.beit import beit_block, relative_position_index
from lib_depth2img.estimators.timm_parts import timm_parts
from lib_depth2img.estimators.vit import resize_position_embedding

LAYOUT = Path(__file__).parent / "data" / "512-depth-ema.layout.tsv"
SD_DEPTH_PREFIX = "depth_model.model."


def shapes_of(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def sd_checkpoint_depth_layout() -> dict[str, tuple[int, ...]]:
    """Names and shapes of the depth model inside SD2 512-depth-ema, from the checkpoint's fact sheet."""
    layout = {}
    for line in LAYOUT.read_text().splitlines():
        name, shape = line.split("\t")
        if name.startswith(SD_DEPTH_PREFIX):
            layout[name[len(SD_DEPTH_PREFIX) :]] = tuple(int(n) for n in shape.strip("()").split(",") if n)
    return layout


def timm_reference_shapes(timm_model: str, derived_suffixes: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """timm's own registered model, built on meta, under the names it has inside a MiDaS checkpoint."""
    timm = timm_parts()  # makes `import timm` safe
    import timm as timm_module

    assert timm.version == timm_module.__version__
    with torch.device("meta"):
        model = timm_module.create_model(timm_model, pretrained=False)
    return {
        f"pretrained.model.{name}": shape
        for name, shape in shapes_of(model).items()
        if not name.endswith(derived_suffixes)
    }


def dpt_neck_shapes(token_width: int, stage_channels: tuple[int, ...], token_stages: tuple[int, ...]) -> dict:
    """Reassemble and decoder tensors of a DPT with 256 features, written out from the DPT design.

    Token stages 1..4 resample tokens (stride 16) to strides 4, 8, 16, 32: transposed convs with
    kernel 4 and 2, nothing, a 3x3 stride-2 conv.
    """
    shapes = {}
    resample_kernel = {1: 4, 2: 2, 3: None, 4: 3}
    for stage in token_stages:
        out = stage_channels[stage - 1]
        prefix = f"pretrained.act_postprocess{stage}."
        shapes[prefix + "0.project.0.weight"] = (token_width, 2 * token_width)
        shapes[prefix + "0.project.0.bias"] = (token_width,)
        shapes[prefix + "3.weight"] = (out, token_width, 1, 1)
        shapes[prefix + "3.bias"] = (out,)
        if resample_kernel[stage]:
            shapes[prefix + "4.weight"] = (out, out, resample_kernel[stage], resample_kernel[stage])
            shapes[prefix + "4.bias"] = (out,)
    for stage in range(1, 5):
        shapes[f"scratch.layer{stage}_rn.weight"] = (256, stage_channels[stage - 1], 3, 3)
        for unit in ("resConfUnit1", "resConfUnit2"):
            for conv in ("conv1", "conv2"):
                shapes[f"scratch.refinenet{stage}.{unit}.{conv}.weight"] = (256, 256, 3, 3)
                shapes[f"scratch.refinenet{stage}.{unit}.{conv}.bias"] = (256,)
        shapes[f"scratch.refinenet{stage}.out_conv.weight"] = (256, 256, 1, 1)
        shapes[f"scratch.refinenet{stage}.out_conv.bias"] = (256,)
    for index, shape in ((0, (128, 256, 3, 3)), (2, (32, 128, 3, 3)), (4, (1, 32, 1, 1))):
        shapes[f"scratch.output_conv.{index}.weight"] = shape
        shapes[f"scratch.output_conv.{index}.bias"] = shape[:1]
    return shapes


def test_registry_entries():
    assert {name: (spec.net_size, spec.file_name) for name, spec in ESTIMATORS.items()} == {
        "dpt_hybrid": (384, "dpt_hybrid-midas-501f0c75.pt"),
        "dpt_large": (384, "dpt_large-midas-2f21e586.pt"),
        "dpt_beit_large_512": (512, "dpt_beit_large_512.pt"),
        "depth_anything_v2_vits": (518, "depth_anything_v2_vits.pth"),
        "depth_anything_v2_vitb": (518, "depth_anything_v2_vitb.pth"),
        "depth_anything_v2_vitl": (518, "depth_anything_v2_vitl.pth"),
        "depth_anything_vits": (518, "depth_anything_vits14.pth"),
        "depth_anything_vitb": (518, "depth_anything_vitb14.pth"),
        "depth_anything_vitl": (518, "depth_anything_vitl14.pth"),
    }


def test_full_hybrid_matches_every_depth_tensor_of_the_sd_depth_checkpoint():
    layout = sd_checkpoint_depth_layout()
    assert len(layout) == 368
    assert shapes_of(build_dpt("dpt_hybrid", device="meta")) == layout


def test_full_hybrid_backbone_is_timms_registered_hybrid():
    ours = shapes_of(build_dpt("dpt_hybrid", device="meta"))
    timm_part = {name: shape for name, shape in ours.items() if name.startswith("pretrained.model.")}
    assert timm_part == timm_reference_shapes(ESTIMATORS["dpt_hybrid"].timm_model, ())
    neck = {name: shape for name, shape in ours.items() if not name.startswith("pretrained.model.")}
    assert neck == dpt_neck_shapes(768, (256, 512, 768, 768), token_stages=(3, 4))


@pytest.mark.parametrize("name", ["dpt_large", "dpt_beit_large_512"])
def test_full_large_backbones_are_timms_models_plus_the_dpt_neck(name):
    spec = ESTIMATORS[name]
    expected = timm_reference_shapes(spec.timm_model, spec.derived_key_suffixes)
    expected |= dpt_neck_shapes(1024, (256, 512, 1024, 1024), token_stages=(1, 2, 3, 4))
    assert shapes_of(build_dpt(name, device="meta")) == expected


def test_beit_512_has_a_relative_position_table_for_its_32x32_window():
    shapes = shapes_of(build_dpt("dpt_beit_large_512", device="meta"))
    assert shapes["pretrained.model.blocks.0.attn.relative_position_bias_table"] == (63 * 63 + 3, 16)
    assert "pretrained.model.pos_embed" not in shapes
    assert not any(name.endswith("relative_position_index") for name in shapes)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_tiny_network_uses_the_same_modules_as_the_full_one(name):
    full = {type(module) for module in build_dpt(name, device="meta").modules()}
    tiny = {type(module) for module in build_dpt(name, device="meta", tiny=True).modules()}
    assert full == tiny


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_tiny_forward_pass(name):
    torch.manual_seed(0)
    model = build_dpt(name, tiny=True)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    multiple = ESTIMATORS[name].size_multiple
    for height, width in [(2 * multiple, 2 * multiple), (3 * multiple, 5 * multiple)]:
        with torch.inference_mode():
            depth = model(torch.rand(2, 3, height, width) * 2 - 1)
        assert depth.shape == (2, height, width) and depth.dtype == torch.float32
        assert torch.isfinite(depth).all() and depth.min() >= 0 and depth.std() > 0


def test_relative_position_index_equals_timms():
    gen_relative_position_index = pytest.importorskip("timm.models.beit").gen_relative_position_index
    for window in [(4, 4), (3, 5), (32, 32)]:
        assert torch.equal(relative_position_index(window), gen_relative_position_index(window))


def test_beit_block_equals_timms_own_block_forward_at_the_pretraining_window():
    gen_relative_position_index = pytest.importorskip("timm.models.beit").gen_relative_position_index
    torch.manual_seed(0)
    block = build_dpt("dpt_beit_large_512", tiny=True).pretrained.model.blocks[0]
    block.gamma_1.fill_(0.5)  # BEiT's layer scale of 1e-5 would hide the attention path
    block.gamma_2.fill_(0.5)
    window = tuple(block.attn.window_size)
    timm_block = copy.deepcopy(block)  # timm's forward needs the buffers our build drops
    timm_block.attn.register_buffer(
        "relative_position_index", gen_relative_position_index(window), persistent=False
    )
    timm_block.attn.register_buffer("k_bias", torch.zeros_like(block.attn.v_bias), persistent=False)
    tokens = torch.randn(2, window[0] * window[1] + 1, 64)
    with torch.inference_mode():
        ours = beit_block(block, tokens, window, relative_position_index(window))
        theirs = timm_block(tokens)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert not torch.allclose(ours, tokens, atol=1e-2)


def test_position_embedding_is_kept_at_its_own_grid_and_resized_bilinearly_elsewhere():
    pos_embed = torch.randn(1, 1 + 4 * 4, 8)
    assert resize_position_embedding(pos_embed, (4, 4)) is pos_embed
    resized = resize_position_embedding(pos_embed, (2, 6))
    assert resized.shape == (1, 1 + 12, 8)
    assert torch.equal(resized[:, 0], pos_embed[:, 0])
