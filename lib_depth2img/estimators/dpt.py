"""DPT (Ranftl et al., "Vision Transformers for Dense Prediction"): the part shared by every backbone.

A backbone (`pretrained` in the state dict) yields four feature maps at strides 4, 8, 16 and 32;
transformer tokens become such maps through `Reassemble` stages (`act_postprocess1..4`). The
decoder (`scratch`) projects each map to a common width, fuses them from coarse to fine and ends in
a small head that predicts relative inverse depth at the input resolution.

Module names follow MiDaS exactly, so that its weights, and the copy inside Stable Diffusion's
`512-depth-ema` checkpoint, load without renaming.
"""

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

PATCH_SIZE = 16
"""Tokens come from 16x16 pixel patches in every supported backbone (the hybrid's ResNet also has stride 16)."""


@dataclass(frozen=True)
class DecoderSize:
    """Widths of the fusion decoder: `features` for every fusion stage, `head_hidden` inside the head."""

    features: int
    head_hidden: int


FULL_DECODER = DecoderSize(features=256, head_hidden=32)
TINY_DECODER = DecoderSize(features=32, head_hidden=8)


class ProjectReadout(nn.Module):
    """Folds the class token into every patch token: concatenate it, project back to the token width."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(2 * width, width), nn.GELU())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, 1:]
        readout = tokens[:, :1].expand_as(patches)
        return self.project(torch.cat((patches, readout), dim=-1))


class Reassemble(nn.Sequential):
    """Tokens of one transformer block -> a feature map at one of the four decoder strides.

    The children are named "0", "3" and "4" because MiDaS kept them in an `nn.Sequential` whose
    positions 1 and 2 held a parameter-free transpose and unflatten; the names stay so the
    checkpoints load as they are.
    """

    def __init__(self, token_width: int, out_channels: int, resample: nn.Module | None) -> None:
        layers = OrderedDict(
            [("0", ProjectReadout(token_width)), ("3", nn.Conv2d(token_width, out_channels, kernel_size=1))]
        )
        if resample is not None:
            layers["4"] = resample
        super().__init__(layers)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        readout, project, *resample = self
        features = project(readout(tokens).transpose(1, 2).unflatten(2, grid))
        for layer in resample:
            features = layer(features)
        return features


def make_resample(stage: int, channels: int) -> nn.Module | None:
    """Resampling of stage `stage` (0..3) from the token stride (16, or DINOv2's 14) to 4x, 2x, 1x and 1/2x
    that stride; None for the stage that keeps it."""
    if stage == 0:
        return nn.ConvTranspose2d(channels, channels, kernel_size=4, stride=4)
    if stage == 1:
        return nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2)
    if stage == 2:
        return None
    return nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)


def make_reassemble(stage: int, token_width: int, out_channels: int) -> Reassemble:
    """Reassemble stage `stage` (0..3): tokens sit at stride 16; stages go to strides 4, 8, 16 and 32."""
    return Reassemble(token_width, out_channels, make_resample(stage, out_channels))


class ResidualConvUnit(nn.Module):
    """relu-conv-relu-conv with a skip connection (no batch norm in the released depth models)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """Adds a refined skip map to the coarser path, refines, upsamples to the next scale, projects.

    The deepest block has no skip input and never uses `resConfUnit1`, but the released weights
    carry it, so it exists here too.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)

    def forward(
        self, path: torch.Tensor, skip: torch.Tensor | None = None, size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        if skip is not None:
            path = path + self.resConfUnit1(skip)
        path = self.resConfUnit2(path)
        if size is None:
            size = (path.shape[-2] * 2, path.shape[-1] * 2)
        path = F.interpolate(path, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(path)


def make_depth_head(features: int, hidden: int) -> nn.Sequential:
    """Stride-2 features -> one non-negative channel at full resolution (the final ReLU is MiDaS's `non_negative`)."""
    return nn.Sequential(
        nn.Conv2d(features, features // 2, kernel_size=3, padding=1),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
        nn.Conv2d(features // 2, hidden, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(hidden, 1, kernel_size=1),
        nn.ReLU(),
    )


class FusionStages(nn.Module):
    """Per-scale 3x3 projections to one width (`layerN_rn`) and the four fusion blocks, coarse to fine."""

    def __init__(self, in_channels: tuple[int, int, int, int], features: int) -> None:
        super().__init__()
        self.layer1_rn = nn.Conv2d(in_channels[0], features, kernel_size=3, padding=1, bias=False)
        self.layer2_rn = nn.Conv2d(in_channels[1], features, kernel_size=3, padding=1, bias=False)
        self.layer3_rn = nn.Conv2d(in_channels[2], features, kernel_size=3, padding=1, bias=False)
        self.layer4_rn = nn.Conv2d(in_channels[3], features, kernel_size=3, padding=1, bias=False)
        self.refinenet1 = FusionBlock(features)
        self.refinenet2 = FusionBlock(features)
        self.refinenet3 = FusionBlock(features)
        self.refinenet4 = FusionBlock(features)

    def fuse(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Four feature maps (finest first) -> one map at twice the finest map's resolution."""
        map1 = self.layer1_rn(maps[0])
        map2 = self.layer2_rn(maps[1])
        map3 = self.layer3_rn(maps[2])
        map4 = self.layer4_rn(maps[3])
        path = self.refinenet4(map4, size=map3.shape[-2:])
        path = self.refinenet3(path, map3, size=map2.shape[-2:])
        path = self.refinenet2(path, map2, size=map1.shape[-2:])
        return self.refinenet1(path, map1)


class FusionDecoder(FusionStages):
    """MiDaS's decoder, `scratch` in the state dict: the fusion stages and the depth head."""

    def __init__(self, in_channels: tuple[int, int, int, int], size: DecoderSize) -> None:
        super().__init__(in_channels, size.features)
        self.output_conv = make_depth_head(size.features, size.head_hidden)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        return self.output_conv(self.fuse(maps))


class DPT(nn.Module):
    """Backbone + fusion decoder. Input: (B, 3, H, W), H and W multiples of 32, normalised to [-1, 1].

    Output: (B, H, W) relative inverse depth, larger = nearer, non-negative.
    """

    def __init__(self, backbone: nn.Module, size: DecoderSize) -> None:
        super().__init__()
        self.pretrained = backbone
        self.scratch = FusionDecoder(backbone.out_channels, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scratch(self.pretrained(x)).squeeze(1)
