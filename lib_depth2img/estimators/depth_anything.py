"""Depth Anything V1 and V2 (Yang et al.): DINOv2 encoder + a DPT head of its own.

The state dict has two parts: `pretrained.*`, the DINOv2 ViT/14 (`dinov2`), and `depth_head.*`:
per-stage 1x1 projections (`projects`) and resampling (`resize_layers`) of the tokens of four
encoder blocks, then `scratch`, MiDaS's fusion stages followed by a head that is split around an
upsampling to the input size (`output_conv1`, upsample, `output_conv2` ending in a ReLU). The
class token is not used. V1 and V2 share this network and differ in which blocks feed the head (V2
spreads them over the depth, V1 takes the last four) and in how the depth map is resized back to
the image (see `preprocess.DEPTH_ANYTHING_V1_INPUT` / `_V2_INPUT`). The official forward applies
one more ReLU after the head's own; it changes nothing and is not repeated here.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lib_depth2img.estimators.dinov2 import (
    DINO_TINY,
    PATCH_SIZE,
    VIT_BASE_14,
    VIT_LARGE_14,
    VIT_SMALL_14,
    DinoSize,
    build_dinov2,
    dinov2_features,
    patch_grid,
)
from lib_depth2img.estimators.dpt import FusionStages, make_resample

HEAD_HIDDEN = 32
"""Channels between the head's two last convolutions, the same for every size."""
MASK_TOKEN_SUFFIX = "pretrained.mask_token"
"""DINOv2's training-only mask token, carried by the official files; no forward uses it."""


@dataclass(frozen=True)
class DepthAnythingSize:
    """One Depth Anything variant: its encoder, the blocks feeding the head and the head's widths."""

    encoder: DinoSize
    hooks: tuple[int, int, int, int]
    features: int
    out_channels: tuple[int, int, int, int]

    @property
    def img_size(self) -> int:
        return self.encoder.img_size

    @property
    def embed_dim(self) -> int:
        return self.encoder.embed_dim


def _last_four(encoder: DinoSize) -> tuple[int, int, int, int]:
    first = encoder.depth - 4
    return (first, first + 1, first + 2, first + 3)


V2_SMALL = DepthAnythingSize(VIT_SMALL_14, (2, 5, 8, 11), 64, (48, 96, 192, 384))
V2_BASE = DepthAnythingSize(VIT_BASE_14, (2, 5, 8, 11), 128, (96, 192, 384, 768))
V2_LARGE = DepthAnythingSize(VIT_LARGE_14, (4, 11, 17, 23), 256, (256, 512, 1024, 1024))
V1_SMALL = DepthAnythingSize(VIT_SMALL_14, _last_four(VIT_SMALL_14), 64, (48, 96, 192, 384))
V1_BASE = DepthAnythingSize(VIT_BASE_14, _last_four(VIT_BASE_14), 128, (96, 192, 384, 768))
V1_LARGE = DepthAnythingSize(VIT_LARGE_14, _last_four(VIT_LARGE_14), 256, (256, 512, 1024, 1024))
TINY = DepthAnythingSize(DINO_TINY, _last_four(DINO_TINY), 16, (8, 16, 32, 32))
"""For tests and demos: 70 px pretraining size (5x5 patches); the same blocks for V1 and V2."""


class DepthAnythingDecoder(FusionStages):
    """`scratch`: MiDaS's fusion stages, then a head split around the upsampling to the input size."""

    def __init__(self, in_channels: tuple[int, int, int, int], features: int) -> None:
        super().__init__(in_channels, features)
        self.output_conv1 = nn.Conv2d(features, features // 2, kernel_size=3, padding=1)
        self.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, HEAD_HIDDEN, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(HEAD_HIDDEN, 1, kernel_size=1),
            nn.ReLU(),
        )

    def forward(self, maps: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        path = self.output_conv1(self.fuse(maps))
        path = F.interpolate(path, size=size, mode="bilinear", align_corners=True)
        return self.output_conv2(path)


class DepthAnythingHead(nn.Module):
    """`depth_head`: encoder tokens of four blocks -> (B, 1, H, W) relative inverse depth."""

    def __init__(self, token_width: int, size: DepthAnythingSize) -> None:
        super().__init__()
        self.projects = nn.ModuleList(
            nn.Conv2d(token_width, channels, kernel_size=1) for channels in size.out_channels
        )
        self.resize_layers = nn.ModuleList(
            make_resample(stage, channels) or nn.Identity() for stage, channels in enumerate(size.out_channels)
        )
        self.scratch = DepthAnythingDecoder(size.out_channels, size.features)

    def forward(self, tokens: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        maps = [
            resize(project(stage_tokens.transpose(1, 2).unflatten(2, grid)))
            for stage_tokens, project, resize in zip(tokens, self.projects, self.resize_layers)
        ]
        return self.scratch(maps, (grid[0] * PATCH_SIZE, grid[1] * PATCH_SIZE))


class DepthAnything(nn.Module):
    """DINOv2 (`pretrained`) + head (`depth_head`). Input: (B, 3, H, W), H and W multiples of 14,
    ImageNet-normalised. Output: (B, H, W) relative inverse depth, larger = nearer, non-negative."""

    def __init__(self, encoder: nn.Module, size: DepthAnythingSize) -> None:
        super().__init__()
        self.pretrained = encoder
        self.depth_head = DepthAnythingHead(size.embed_dim, size)
        self.hooks = size.hooks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.depth_head(dinov2_features(self.pretrained, x, self.hooks), patch_grid(x)).squeeze(1)


def build_encoder(size: DepthAnythingSize) -> nn.Module:
    """The variant's DINOv2 encoder (timm)."""
    return build_dinov2(size.encoder)
