"""R50+ViT-B/16 hybrid backbone of DPT-Hybrid (`vitb_rn50_384`), the estimator inside SD2 `512-depth-ema`.

A ResNet (timm ResNetV2 without pre-activation, weight-standardised "same" convolutions) turns
the image into a stride-16 feature map that the ViT reads as its patches. The decoder's two fine
maps are the outputs of the first two ResNet stages, used as they are (strides 4 and 8); the two
coarse maps are reassembled from the tokens after two ViT blocks (`act_postprocess3`, `4`).
"""

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from lib_depth2img.estimators.dpt import make_reassemble
from lib_depth2img.estimators.timm_parts import timm_parts
from lib_depth2img.estimators.vit import hooked_block_outputs, patch_grid, vit_tokens

STD_CONV_EPS = 1e-8
"""Epsilon of the weight standardisation in timm's hybrid ResNet; it changes the numbers, so it is pinned."""


@dataclass(frozen=True)
class HybridSize:
    """Shape of the hybrid: ResNet stages (blocks per stage, output channels) and the ViT on top."""

    img_size: int
    resnet_layers: tuple[int, int, int]
    resnet_channels: tuple[int, int, int]
    stem_channels: int
    embed_dim: int
    depth: int
    num_heads: int
    token_hooks: tuple[int, int]
    token_out_channels: tuple[int, int]


R50_VIT_BASE_384 = HybridSize(
    img_size=384,
    resnet_layers=(3, 4, 9),
    resnet_channels=(256, 512, 1024),
    stem_channels=64,
    embed_dim=768,
    depth=12,
    num_heads=12,
    token_hooks=(8, 11),
    token_out_channels=(768, 768),
)
HYBRID_TINY = HybridSize(
    img_size=64,
    resnet_layers=(1, 1, 1),
    resnet_channels=(128, 128, 128),  # GroupNorm(32) inside the bottlenecks needs 128 = 4 * 32 at least
    stem_channels=32,
    embed_dim=64,
    depth=4,
    num_heads=2,
    token_hooks=(2, 3),
    token_out_channels=(64, 64),
)


class HybridVitBackbone(nn.Module):
    """timm hybrid ViT (`model`, its ResNet at `model.patch_embed.backbone`) + reassemble stages 3 and 4."""

    def __init__(self, model: nn.Module, size: HybridSize) -> None:
        super().__init__()
        self.model = model
        self.token_hooks = size.token_hooks
        self.out_channels = size.resnet_channels[:2] + size.token_out_channels
        self.act_postprocess3 = make_reassemble(2, size.embed_dim, size.token_out_channels[0])
        self.act_postprocess4 = make_reassemble(3, size.embed_dim, size.token_out_channels[1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        grid = patch_grid(x)
        resnet = self.model.patch_embed.backbone
        features = resnet.stem(x)
        stage_outputs = []
        for stage in resnet.stages:
            features = stage(features)
            stage_outputs.append(features)
        tokens = vit_tokens(self.model, resnet.norm(features), grid)
        hooked = hooked_block_outputs(self.model.blocks, tokens, self.token_hooks)
        return [
            stage_outputs[0],
            stage_outputs[1],
            self.act_postprocess3(hooked[0], grid),
            self.act_postprocess4(hooked[1], grid),
        ]


def build_hybrid_backbone(size: HybridSize) -> HybridVitBackbone:
    """Hybrid as timm's `vit_base_r50_s16_384` (formerly `vit_base_resnet50_384`) defines it at `R50_VIT_BASE_384`."""
    parts = timm_parts()
    resnet = parts.ResNetV2(
        layers=size.resnet_layers,
        channels=size.resnet_channels,
        stem_chs=size.stem_channels,
        num_classes=0,
        global_pool="",
        preact=False,
        stem_type="same",
        conv_layer=partial(parts.StdConv2dSame, eps=STD_CONV_EPS),
    )
    model = parts.VisionTransformer(
        img_size=size.img_size,
        patch_size=1,  # one token per pixel of the stride-16 ResNet map
        embed_dim=size.embed_dim,
        depth=size.depth,
        num_heads=size.num_heads,
        embed_layer=partial(parts.HybridEmbed, backbone=resnet),
    )
    return HybridVitBackbone(model, size)
