"""A tiny UNet-like noise predictor, a pure function of stored weights.

Both sides of the sampler reference test run it: `a1111_sampler_refs.py` inside A1111's own
sampler code, and `test_engine_a1111_samplers.py` inside the engine's. It has what the real UNet
has that samplers react to: it mixes neighbouring latents and the depth channel, depends on the
(fractional) timestep and on the text context, and is nonlinear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LATENT, HIDDEN, CONTEXT = 4, 8, 16


def make_weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def draw(*shape: int, scale: float) -> torch.Tensor:
        return torch.randn(shape, generator=g) * scale

    return {
        "w1": draw(HIDDEN, LATENT + 1, 3, 3, scale=0.2),
        "b1": draw(HIDDEN, scale=0.1),
        "wt": draw(8, HIDDEN, scale=0.3),
        "wc": draw(CONTEXT, HIDDEN, scale=0.3),
        "w2": draw(LATENT, HIDDEN, 3, 3, scale=0.2),
        "b2": draw(LATENT, scale=0.1),
    }


def tiny_eps(
    weights: dict[str, torch.Tensor], x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, depth: torch.Tensor
) -> torch.Tensor:
    """eps for x [B,4,h,w] at timesteps t [B] (or one), context [B,77,16], depth [B,1,h,w]."""
    t = torch.as_tensor(t, dtype=torch.float32).expand(x.shape[0])
    frequencies = torch.exp(-torch.arange(4, dtype=torch.float32))
    angles = t[:, None] / 100 * frequencies
    embedding = torch.cat([angles.sin(), angles.cos()], dim=1) @ weights["wt"]
    hidden = F.conv2d(torch.cat([x, depth], dim=1), weights["w1"], weights["b1"], padding=1)
    hidden = hidden + embedding[..., None, None] + (context.mean(1) @ weights["wc"])[..., None, None]
    return F.conv2d(torch.tanh(hidden), weights["w2"], weights["b2"], padding=1)
