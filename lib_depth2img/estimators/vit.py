"""ViT-L/16 backbone of DPT-Large (`vitl16_384`), plus the token plumbing the hybrid shares.

The timm VisionTransformer holds the weights (`pretrained.model.*`). Its own forward only accepts
the pretraining size, so the tokens are computed here: patch embedding, class token, and the
position embedding resized bilinearly to the input's patch grid, as MiDaS does. Tokens are taken
after the hooked blocks and reassembled into the four decoder maps.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lib_depth2img.estimators.dpt import PATCH_SIZE, make_reassemble
from lib_depth2img.estimators.timm_parts import timm_parts


@dataclass(frozen=True)
class VitSize:
    """Shape of a plain ViT backbone. `img_size` is the pretraining size; it fixes the stored position grid."""

    img_size: int
    embed_dim: int
    depth: int
    num_heads: int
    hooks: tuple[int, int, int, int]
    out_channels: tuple[int, int, int, int]

    def transformer_args(self) -> dict[str, int]:
        """The arguments timm's ViT and BEiT constructors take for this shape (16 px patches)."""
        return {"img_size": self.img_size, "patch_size": PATCH_SIZE, "embed_dim": self.embed_dim,
                "depth": self.depth, "num_heads": self.num_heads}


VIT_LARGE_384 = VitSize(
    img_size=384,
    embed_dim=1024,
    depth=24,
    num_heads=16,
    hooks=(5, 11, 17, 23),
    out_channels=(256, 512, 1024, 1024),
)
VIT_TINY = VitSize(
    img_size=64, embed_dim=64, depth=4, num_heads=2, hooks=(0, 1, 2, 3), out_channels=(16, 32, 64, 64)
)


def patch_grid(x: torch.Tensor) -> tuple[int, int]:
    """Rows and columns of 16x16 patches in an input batch."""
    return x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE


def resize_position_embedding(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Position embedding (1, 1 + g*g, C) with its square patch part resized bilinearly to `grid`."""
    class_part, grid_part = pos_embed[:, :1], pos_embed[0, 1:]
    stored = round(grid_part.shape[0] ** 0.5)
    if (stored, stored) == grid:
        return pos_embed
    grid_part = grid_part.reshape(1, stored, stored, -1).permute(0, 3, 1, 2)
    grid_part = F.interpolate(grid_part, size=grid, mode="bilinear", align_corners=False)
    return torch.cat((class_part, grid_part.permute(0, 2, 3, 1).flatten(1, 2)), dim=1)


def vit_tokens(
    vit: nn.Module,
    embed_input: torch.Tensor,
    grid: tuple[int, int],
    resize_positions: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor] = resize_position_embedding,
) -> torch.Tensor:
    """What the patch projection reads (pixels, or the hybrid's ResNet features) -> tokens with class token and positions.

    `resize_positions` fits the stored position embedding to `grid`: bilinear as MiDaS does by default.
    """
    patches = vit.patch_embed.proj(embed_input).flatten(2).transpose(1, 2)
    class_token = vit.cls_token.expand(patches.shape[0], -1, -1)
    return torch.cat((class_token, patches), dim=1) + resize_positions(vit.pos_embed, grid)


def hooked_block_outputs(
    blocks: nn.Sequential,
    tokens: torch.Tensor,
    hooks: tuple[int, ...],
    run_block: Callable[[nn.Module, torch.Tensor], torch.Tensor] = nn.Module.__call__,
) -> list[torch.Tensor]:
    """Runs the blocks up to the last hook and returns the tokens after each hooked block."""
    outputs = []
    for index, block in enumerate(blocks[: max(hooks) + 1]):
        tokens = run_block(block, tokens)
        if index in hooks:
            outputs.append(tokens)
    return outputs


class VitBackbone(nn.Module):
    """timm ViT (`model`) + four reassemble stages (`act_postprocess1..4`) fed by the hooked blocks."""

    def __init__(self, model: nn.Module, size: VitSize) -> None:
        super().__init__()
        self.model = model
        self.hooks = size.hooks
        self.out_channels = size.out_channels
        for stage, channels in enumerate(size.out_channels):
            self.add_module(f"act_postprocess{stage + 1}", make_reassemble(stage, size.embed_dim, channels))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        grid = patch_grid(x)
        stages = (self.act_postprocess1, self.act_postprocess2, self.act_postprocess3, self.act_postprocess4)
        return [reassemble(tokens, grid) for reassemble, tokens in zip(stages, self.hooked_tokens(x, grid))]

    def hooked_tokens(self, x: torch.Tensor, grid: tuple[int, int]) -> list[torch.Tensor]:
        """Tokens after each hooked block for an input whose patch grid is `grid`."""
        return hooked_block_outputs(self.model.blocks, vit_tokens(self.model, x, grid), self.hooks)


def build_vit_backbone(size: VitSize) -> VitBackbone:
    """ViT as timm's `vit_large_patch16_384` defines it (at `VIT_LARGE_384`), classifier head included."""
    model = timm_parts().VisionTransformer(**size.transformer_args())
    return VitBackbone(model, size)
