"""DINOv2 ViT/14, the encoder of Depth Anything, on timm's VisionTransformer.

timm's `vit_{small,base,large}_patch14_dinov2` hold the same tensors under the same names as the
official DINOv2 (`pretrained.*` in the Depth Anything files), except the training-only
`mask_token`, which nothing here uses. The tokens are computed here rather than by timm's forward
for one reason: DINOv2 resizes its position embedding with its own formula (bicubic, by a scale
factor of (grid + 0.1) / stored grid, no antialiasing), and timm's resampling to a size with
antialiasing gives other numbers on every input but the 518x518 the table was stored for.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lib_depth2img.estimators.timm_parts import timm_parts
from lib_depth2img.estimators.vit import hooked_block_outputs, vit_tokens

PATCH_SIZE = 14
POSITION_OFFSET = 0.1
"""DINOv2 adds this to the target grid before turning it into a scale factor (against float error)."""
LAYER_SCALE_INIT = 1.0
"""The value Depth Anything builds DINOv2 with; it only matters for fresh weights."""


@dataclass(frozen=True)
class DinoSize:
    """Shape of a DINOv2 ViT/14. `img_size` is the pretraining size; it fixes the stored position grid."""

    img_size: int
    embed_dim: int
    depth: int
    num_heads: int


VIT_SMALL_14 = DinoSize(img_size=518, embed_dim=384, depth=12, num_heads=6)
VIT_BASE_14 = DinoSize(img_size=518, embed_dim=768, depth=12, num_heads=12)
VIT_LARGE_14 = DinoSize(img_size=518, embed_dim=1024, depth=24, num_heads=16)
DINO_TINY = DinoSize(img_size=70, embed_dim=64, depth=4, num_heads=2)


def patch_grid(x: torch.Tensor) -> tuple[int, int]:
    """Rows and columns of 14x14 patches in an input batch."""
    return x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE


def dinov2_position_embedding(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Position embedding (1, 1 + g*g, C) for a `grid` of patches, resized as DINOv2 does it.

    The scale factor, not the target size, drives the sampling positions, so even an axis that
    keeps its length is resampled slightly; only the stored grid itself is used as it is. The
    resize runs in float32 (bicubic has no half-precision CPU kernel) and returns the input's dtype.
    """
    stored = round((pos_embed.shape[1] - 1) ** 0.5)
    if grid == (stored, stored):
        return pos_embed
    class_part, grid_part = pos_embed[:, :1], pos_embed[:, 1:].float()
    grid_part = grid_part.reshape(1, stored, stored, -1).permute(0, 3, 1, 2)
    scale = ((grid[0] + POSITION_OFFSET) / stored, (grid[1] + POSITION_OFFSET) / stored)
    grid_part = F.interpolate(grid_part, scale_factor=scale, mode="bicubic", antialias=False)
    if tuple(grid_part.shape[-2:]) != grid:
        raise RuntimeError(f"DINOv2 position embedding resized to {tuple(grid_part.shape[-2:])}, expected {grid}")
    grid_part = grid_part.permute(0, 2, 3, 1).flatten(1, 2).to(pos_embed.dtype)
    return torch.cat((class_part, grid_part), dim=1)


def dinov2_features(vit: nn.Module, x: torch.Tensor, hooks: tuple[int, ...]) -> list[torch.Tensor]:
    """Patch tokens (B, h*w, C) after each hooked block, through the final norm, without the class token."""
    tokens = vit_tokens(vit, x, patch_grid(x), dinov2_position_embedding)
    return [vit.norm(tokens)[:, 1:] for tokens in hooked_block_outputs(vit.blocks, tokens, hooks)]


def build_dinov2(size: DinoSize) -> nn.Module:
    """DINOv2 as timm's `vit_*_patch14_dinov2` defines it (no registers, no classifier head)."""
    return timm_parts().VisionTransformer(
        img_size=size.img_size,
        patch_size=PATCH_SIZE,
        embed_dim=size.embed_dim,
        depth=size.depth,
        num_heads=size.num_heads,
        init_values=LAYER_SCALE_INIT,
        num_classes=0,
    )
