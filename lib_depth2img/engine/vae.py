"""The KL autoencoder (VAE) that maps images to SD latents (8x smaller, 4 channels) and back.

Structure and names follow `ldm.models.autoencoder.AutoencoderKL` with the `ddconfig` of SD2
(`first_stage_model.*` in the checkpoint): no attention except the one in each middle block,
encoder output holding mean and log-variance (double_z), 1x1 quant_conv / post_quant_conv.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .layers import GroupNorm32, Upsample, attention


@dataclass(frozen=True)
class VAEConfig:
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)  # one level per entry; each level but the last halves H, W
    num_res_blocks: int = 2
    z_channels: int = 4
    image_channels: int = 3


def _norm(channels: int) -> GroupNorm32:
    return GroupNorm32(channels, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)
        else:
            self.nin_shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels, with 1x1 convolutions as projections."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, height, width = x.shape
        h = self.norm(x)
        q, k, v = (rearrange(proj(h), "b c h w -> b 1 (h w) c") for proj in (self.q, self.k, self.v))
        h = rearrange(attention(q, k, v), "b 1 (h w) c -> b c h w", h=height, w=width)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution, padded on the right and bottom only (as ldm does)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class MidBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Level(nn.Module):
    """One resolution of the encoder (`down.i`) or decoder (`up.i`): res blocks, then a resampler."""

    def __init__(self, channels: list[int], resample: nn.Module | None, resample_name: str) -> None:
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(i, o) for i, o in itertools.pairwise(channels))
        self.resample_name = resample_name
        if resample is not None:
            self.add_module(resample_name, resample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        resample = getattr(self, self.resample_name, None)
        return x if resample is None else resample(x)


class Encoder(nn.Module):
    """Image [B,3,H,W] -> mean and log-variance [B,2z,H/f,W/f], f = 2**(levels-1)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        c = config
        self.conv_in = nn.Conv2d(c.image_channels, c.ch, 3, padding=1)
        self.down = nn.ModuleList()
        ch = c.ch
        for i, mult in enumerate(c.ch_mult):
            out = c.ch * mult
            last = i == len(c.ch_mult) - 1
            self.down.append(
                Level([ch] + [out] * c.num_res_blocks, None if last else Downsample(out), "downsample")
            )
            ch = out
        self.mid = MidBlock(ch)
        self.norm_out = _norm(ch)
        self.conv_out = nn.Conv2d(ch, 2 * c.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent [B,z,h,w] -> image [B,3,h*f,w*f]; `up` is indexed like the encoder's `down`."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        c = config
        ch = c.ch * c.ch_mult[-1]
        self.conv_in = nn.Conv2d(c.z_channels, ch, 3, padding=1)
        self.mid = MidBlock(ch)
        levels = []
        for i, mult in reversed(list(enumerate(c.ch_mult))):
            out = c.ch * mult
            levels.append(
                Level([ch] + [out] * (c.num_res_blocks + 1), Upsample(out) if i else None, "upsample")
            )
            ch = out
        self.up = nn.ModuleList(reversed(levels))
        self.norm_out = _norm(ch)
        self.conv_out = nn.Conv2d(ch, c.image_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    """Encoder + decoder with the 1x1 convolutions to and from the (unscaled) latent space."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv2d(2 * config.z_channels, 2 * config.z_channels, 1)
        self.post_quant_conv = nn.Conv2d(config.z_channels, config.z_channels, 1)

    def encode(self, images: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """The latent posterior (unscaled): its mean, or with `noise` the sample ldm's
        `DiagonalGaussianDistribution.sample` draws, mean + std * noise (log-variance clamped to
        [-30, 20]), which is what A1111 encodes an init image to."""
        mean, logvar = self.quant_conv(self.encoder(images)).chunk(2, dim=1)
        if noise is None:
            return mean
        return mean + torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0)) * noise.to(mean)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(latents))
