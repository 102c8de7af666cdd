"""Building blocks shared by the UNet and the VAE: normalisation, attention, upsampling.

Both follow the numerics of Stability's `ldm` so that half-precision runs stay stable:
group norms and the attention softmax are computed in float32 and cast back.

Attention goes through `torch.nn.functional.scaled_dot_product_attention` (fused, memory-lean
kernels). The plain `softmax(Q K^T / sqrt(d)) V` formula is kept as a switch for benchmarks
and for checking one against the other; pick it with `set_attention_backend("plain")` or,
for a block of code, `with attention_backend("plain"): ...`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

AttentionBackend = Literal["sdpa", "plain"]
_backend: AttentionBackend = "sdpa"


def set_attention_backend(name: AttentionBackend) -> None:
    """Choose how every UNet/VAE attention layer computes attention from now on."""
    global _backend
    if name not in ("sdpa", "plain"):
        raise ValueError(f"attention backend must be 'sdpa' or 'plain', not {name!r}")
    _backend = name


def get_attention_backend() -> AttentionBackend:
    return _backend


@contextlib.contextmanager
def attention_backend(name: AttentionBackend) -> Iterator[None]:
    """Use attention backend `name` inside a `with` block, then restore the previous one."""
    previous = _backend
    set_attention_backend(name)
    try:
        yield
    finally:
        set_attention_backend(previous)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Multi-head attention on [batch, heads, tokens, head_dim] tensors, with the current backend."""
    if _backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v)
    # Scores and softmax in float32, as ldm does (ATTN_PRECISION=fp32): fp16 logits overflow.
    scores = q.float() @ k.float().transpose(-1, -2) / math.sqrt(q.shape[-1])
    return (scores.softmax(dim=-1) @ v.float()).to(v.dtype)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups computed in float32 (and cast back), so fp16/bf16 stay finite."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__(num_groups=32, num_channels=channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps).to(
            x.dtype
        )


class Upsample(nn.Module):
    """Nearest-neighbour doubling then a 3x3 conv, as both SD decoders grow their maps."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
