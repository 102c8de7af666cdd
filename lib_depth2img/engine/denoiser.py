"""The samplers' denoiser: an eps-prediction model -> estimate of x0, with CFG and the inpaint blend.

Follows k-diffusion's `CompVisDenoiser` and A1111's `CFGDenoiser` operation by operation: the model
sees `x / sqrt(sigma^2 + 1)` at the training timestep of sigma, each half of the batch gives
x0 = x - sigma * eps, and guidance mixes the two estimates as uncond + (cond - uncond) * scale from
one batched call (cond rows first). At scale 1 that is cond alone, so the uncond half is skipped.
Inpainting keeps the init latent outside the mask: in the estimate (k-diffusion samplers), or in
the model's input (A1111's DDIM, which blends before the model and steps from the unblended x).
"""

from __future__ import annotations

from typing import Protocol

import torch

from .schedule import NoiseSchedule


class NoisePredictor(Protocol):
    def predict_noise(
        self, latents: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, depth: torch.Tensor
    ) -> torch.Tensor: ...


class GuidedDenoiser:
    """`denoiser(x, sigma)` for `samplers.sample`: cond/uncond `context` [2,77,C] (one prompt pair
    for the batch), `depth` [B,1,h,w]; `keep` [1|B,1,h,w] is 1 where the init latent stays."""

    def __init__(
        self,
        model: NoisePredictor,
        schedule: NoiseSchedule,
        context: torch.Tensor,
        depth: torch.Tensor,
        cfg_scale: float,
        *,
        init_latent: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
        blend_model_input: bool = False,
    ) -> None:
        batch = depth.shape[0]
        self.model, self.schedule, self.cfg_scale = model, schedule, float(cfg_scale)
        self.init_latent, self.keep, self.blend_model_input = init_latent, keep, blend_model_input
        cond, uncond = (c.expand(batch, -1, -1) for c in context.split(1))
        if self.guided:
            self.context, self.depth = torch.cat([cond, uncond]), torch.cat([depth, depth])
        else:
            self.context, self.depth = cond, depth

    @property
    def guided(self) -> bool:
        return self.cfg_scale != 1.0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        model_x = x
        if self.keep is not None and self.blend_model_input:
            # the init latent at this level, as a DDPM latent: init / sqrt(a) in sigma form
            model_x = x * (1 - self.keep) + self.init_latent * (sigma**2 + 1) ** 0.5 * self.keep
        copies = 2 if self.guided else 1
        x_in = torch.cat([model_x] * copies)
        t = self.schedule.sigma_to_t(sigma).expand(x_in.shape[0]).to(x.device)
        c_in = 1 / (sigma**2 + 1.0) ** 0.5
        eps = self.model.predict_noise(x_in * c_in.to(x.device), t, self.context, self.depth).float()
        estimates = torch.cat([x] * copies) + eps * (-sigma).to(x.device)
        if self.guided:
            cond, uncond = estimates.chunk(2)
            denoised = uncond + (cond - uncond) * self.cfg_scale
        else:
            denoised = estimates
        if self.keep is not None and not self.blend_model_input:
            denoised = denoised * (1 - self.keep) + self.init_latent * self.keep
        return denoised
