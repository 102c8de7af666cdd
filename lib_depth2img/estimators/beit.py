"""BEiT-L/16 backbone of MiDaS 3.1 DPT-BEiT-L-512 (`beitl16_512`).

BEiT has no absolute position embedding; every attention layer adds a learned bias indexed by the
relative offset of two patches, stored as a table over the offsets of the pretraining window
(32x32 patches at 512 px) plus three entries for the class token. MiDaS runs other input sizes by
resizing the offset table bilinearly to the input's window and indexing it afresh; timm's own
forward only accepts the pretraining size, so the blocks are driven here with timm's weights.

timm < 0.9 stored the relative position index as a persistent buffer, so MiDaS files carry
`*.attn.relative_position_index`; it is derived data, recomputed here for each window and dropped
from the model and from loaded files (see `DERIVED_KEY_SUFFIXES`). timm's zero `k_bias` buffer
goes too: the attention here builds that zero itself, and without it every tensor of the network
is one that a weights file provides.
"""

import dataclasses
import functools

import torch
import torch.nn.functional as F
from torch import nn

from lib_depth2img.estimators.timm_parts import timm_parts
from lib_depth2img.estimators.vit import VIT_LARGE_384, VIT_TINY, VitBackbone, VitSize, hooked_block_outputs

BEIT_LARGE_512 = dataclasses.replace(VIT_LARGE_384, img_size=512)
"""BEiT-L/16 has ViT-L/16's widths, depth, hooks and DPT channels, at 512 px."""
BEIT_TINY = VIT_TINY
LAYER_SCALE_INIT = 1e-5
"""BEiT-L uses layer scale (`gamma_1`, `gamma_2` in every block); the value only matters for fresh weights."""
DERIVED_KEY_SUFFIXES = (".attn.relative_position_index",)
CLASS_TOKEN_ENTRIES = 3
"""The offset table ends with three entries: class->patch, patch->class, class->class."""


@functools.lru_cache(maxsize=8)
def relative_position_index(window: tuple[int, int]) -> torch.Tensor:
    """(N+1, N+1) indices into the offset table for a window of N = h*w patches plus the class token.

    Patch-to-patch offsets (dy, dx) map to row-major positions in a (2h-1) x (2w-1) grid; the
    class token uses the three entries after that grid.
    """
    height, width = window
    rows, cols = torch.meshgrid(
        torch.arange(height, device="cpu"), torch.arange(width, device="cpu"), indexing="ij"
    )
    rows, cols = rows.flatten(), cols.flatten()
    offset_rows = rows[:, None] - rows[None, :] + height - 1
    offset_cols = cols[:, None] - cols[None, :] + width - 1
    grid_entries = (2 * height - 1) * (2 * width - 1)
    index = torch.empty(height * width + 1, height * width + 1, dtype=torch.long, device="cpu")
    index[1:, 1:] = offset_rows * (2 * width - 1) + offset_cols
    index[0, :] = grid_entries
    index[:, 0] = grid_entries + 1
    index[0, 0] = grid_entries + 2
    return index


def relative_position_bias(
    table: torch.Tensor, stored_window: tuple[int, int], window: tuple[int, int], index: torch.Tensor
) -> torch.Tensor:
    """(1, heads, N+1, N+1) attention bias for `window`, the table's offset grid resized if needed."""
    heads = table.shape[-1]
    grid_part, class_part = table[:-CLASS_TOKEN_ENTRIES], table[-CLASS_TOKEN_ENTRIES:]
    if window != stored_window:
        stored_grid = (2 * stored_window[0] - 1, 2 * stored_window[1] - 1)
        grid = grid_part.reshape(1, *stored_grid, heads).permute(0, 3, 1, 2)
        grid = F.interpolate(
            grid, size=(2 * window[0] - 1, 2 * window[1] - 1), mode="bilinear", align_corners=False
        )
        grid_part = grid.permute(0, 2, 3, 1).reshape(-1, heads)
    entries = torch.cat((grid_part, class_part))
    tokens = index.shape[0]
    return entries[index.view(-1)].view(tokens, tokens, heads).permute(2, 0, 1).unsqueeze(0)


def beit_attention(
    attn: nn.Module, tokens: torch.Tensor, window: tuple[int, int], index: torch.Tensor
) -> torch.Tensor:
    """timm BEiT attention: separate q and v biases (k has none) and the relative position bias."""
    batch, length, _ = tokens.shape
    qkv_bias = torch.cat((attn.q_bias, torch.zeros_like(attn.v_bias), attn.v_bias))
    qkv = F.linear(tokens, attn.qkv.weight, qkv_bias)
    query, key, value = qkv.reshape(batch, length, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    bias = relative_position_bias(attn.relative_position_bias_table, tuple(attn.window_size), window, index)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias.to(query.dtype))
    return attn.proj(out.transpose(1, 2).reshape(batch, length, -1))


def beit_block(
    block: nn.Module, tokens: torch.Tensor, window: tuple[int, int], index: torch.Tensor
) -> torch.Tensor:
    """One timm BEiT block (pre-norm attention and MLP, each scaled by its layer-scale gamma) at any window."""
    tokens = tokens + block.gamma_1 * beit_attention(block.attn, block.norm1(tokens), window, index)
    return tokens + block.gamma_2 * block.mlp(block.norm2(tokens))


class BeitBackbone(VitBackbone):
    """timm BEiT (`model`) + four reassemble stages; the blocks run at the input's window."""

    def hooked_tokens(self, x: torch.Tensor, grid: tuple[int, int]) -> list[torch.Tensor]:
        patches = self.model.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat((self.model.cls_token.expand(patches.shape[0], -1, -1), patches), dim=1)
        run_block = functools.partial(
            beit_block, window=grid, index=relative_position_index(grid).to(x.device)
        )
        return hooked_block_outputs(self.model.blocks, tokens, self.hooks, run_block)


def build_beit_backbone(size: VitSize) -> BeitBackbone:
    """BEiT as timm's `beit_large_patch16_512` defines it (at `BEIT_LARGE_512`), minus the derived index buffers."""
    model = timm_parts().Beit(
        **size.transformer_args(),
        mlp_ratio=4,
        qkv_bias=True,
        use_abs_pos_emb=False,
        use_rel_pos_bias=True,
        init_values=LAYER_SCALE_INIT,
    )
    for block in model.blocks:
        del block.attn.relative_position_index, block.attn.k_bias
    return BeitBackbone(model, size)
