"""The OpenCLIP ViT-H/14 text tower that turns prompts into the UNet's cross-attention context.

The tower itself (token embedding, transformer blocks, final LayerNorm) is open_clip's
`TextTransformer`, built without the vision tower and without downloading anything; the
tokenizer is open_clip's, whose BPE vocabulary ships inside the package. The output matches
Stability's `FrozenOpenCLIPEmbedder(layer="penultimate")`: run every block but the last under a
causal mask, then apply `ln_final` to all 77 token states (no pooling, no projection).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..compat import import_open_clip


@dataclass(frozen=True)
class TextConfig:
    width: int = 1024
    layers: int = 24
    heads: int = 16
    context_length: int = 77
    vocab_size: int = 49408
    output_dim: int = 1024  # text_projection, kept for the checkpoint but unused for conditioning


@functools.cache
def get_tokenizer(context_length: int = 77) -> Callable[[list[str]], torch.Tensor]:
    """open_clip's BPE tokenizer for ViT-H-14 (loaded once; reading the vocabulary takes a moment)."""
    return import_open_clip().get_tokenizer("ViT-H-14", context_length=context_length)


class OpenCLIPTextEncoder(nn.Module):
    """Prompts -> context [B, 77, width]: the penultimate block's token states after ln_final."""

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.config = config
        open_clip = import_open_clip()
        # no_causal_mask: the mask is built per call instead of held as a non-persistent buffer,
        # which a model built on the meta device and loaded with assign=True would leave empty.
        self.model = open_clip.transformer.TextTransformer(
            context_length=config.context_length,
            vocab_size=config.vocab_size,
            width=config.width,
            heads=config.heads,
            layers=config.layers,
            output_dim=config.output_dim,
            no_causal_mask=True,
        )
        # CLIP's contrastive temperature sits beside the tower in the checkpoint; unused here.
        self.model.logit_scale = nn.Parameter(torch.ones([]))

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Token ids [B, 77]: start token, BPE tokens, end token, zero padding; long prompts are cut."""
        return get_tokenizer(self.config.context_length)(prompts)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tower = self.model
        x = tower.token_embedding(tokens) + tower.positional_embedding
        length = tokens.shape[1]
        causal_mask = torch.full((length, length), float("-inf"), device=x.device, dtype=x.dtype).triu_(1)
        for block in tower.transformer.resblocks[:-1]:
            x = block(x, attn_mask=causal_mask)
        return tower.ln_final(x)
