"""Noise levels: the model's training schedule seen as k-diffusion sigmas, and the step plans.

Every sampler here works in k-diffusion's "sigma" form: a noisy latent is `x = x0 + sigma * eps`
and the model sees `x / sqrt(sigma^2 + 1)`, which is exactly the DDPM latent
`sqrt(a) * x0 + sqrt(1 - a) * eps` at the training timestep whose `alphas_cumprod` is `a`, with
`sigma = sqrt((1 - a) / a)`. A sampling plan is a descending tensor of sigmas ending in 0; each
pair of neighbours is one step (one UNet evaluation).

The plans follow A1111 v1.10.1:
- "uniform" (Euler, Euler a): k-diffusion's `DiscreteSchedule.get_sigmas(n)`: n timesteps evenly
  spaced from 999 to 0, sigma interpolated in log space between the training timesteps;
- "karras" (DPM++ 2M Karras): Karras et al. (2022), rho 7, from the model's largest to smallest
  training sigma;
- "ddim" (DDIM): the timesteps 1, 1 + c, 1 + 2c, ... with c = 1000 // n ("leading" spacing plus
  one, as CompVis and A1111), n of them. A1111 takes one extra timestep when n does not divide
  1000 (3 steps -> 1, 334, 667, 999); we keep exactly n, as diffusers does.

img2img (`img2img_plan`): with strength s and n steps A1111 computes `t_enc = int(min(s, 0.999) * n)`
and samples the tail `sigmas[n - t_enc - 1:]`, i.e. t_enc + 1 steps starting at the noise level
where the init latent is noised to. Strength 1.0 starts at the largest sigma (the init image is
1/14.6 of the start and the depth conditioning carries the composition); strength 0 is one step
at the smallest sigma. A1111's DDIM path noises to the same level but then runs t_enc - 1 model
calls labelled one DDIM step lower than the latent's noise (CompVis's img2img did the same); we
run the same t_enc + 1 steps as the other samplers, each at the level the latent really has.
"""

from __future__ import annotations

from typing import Literal

import torch

SchedulePlan = Literal["uniform", "karras", "ddim"]
KARRAS_RHO = 7.0


class NoiseSchedule:
    """The model's 1000 discrete training noise levels, and sampling plans built on them.

    All plans are computed in float64 on the CPU and returned as float32 CPU tensors, so the same
    request gives the same sigmas on every device.
    """

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        alphas_cumprod = alphas_cumprod.detach().to("cpu", torch.float64)
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()  # ascending with t
        self.log_sigmas = self.sigmas.log()

    @property
    def num_timesteps(self) -> int:
        return len(self.sigmas)

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """The (fractional) training timestep of each sigma: linear in log sigma between neighbours."""
        log_sigma = sigma.detach().to("cpu", torch.float64).log()
        log_sigmas = self.log_sigmas
        low = (torch.searchsorted(log_sigmas, log_sigma, right=True) - 1).clamp(0, len(log_sigmas) - 2)
        weight = ((log_sigma - log_sigmas[low]) / (log_sigmas[low + 1] - log_sigmas[low])).clamp(0, 1)
        return (low + weight).to(torch.float32)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(torch.float64)
        low, high, weight = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - weight) * self.log_sigmas[low] + weight * self.log_sigmas[high]).exp()

    def plan(self, kind: SchedulePlan, steps: int) -> torch.Tensor:
        """Descending sigmas for `steps` steps (length steps + 1, ending in 0)."""
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        if kind == "uniform":
            sigmas = self.t_to_sigma(torch.linspace(self.num_timesteps - 1, 0, steps, dtype=torch.float64))
        elif kind == "karras":
            sigmas = karras_sigmas(steps, self.sigma_min, self.sigma_max)
        elif kind == "ddim":
            stride = max(self.num_timesteps // steps, 1)
            timesteps = (torch.arange(steps) * stride + 1).clamp(max=self.num_timesteps - 1)
            sigmas = self.sigmas[timesteps.flip(0)]
        else:
            raise ValueError(f"unknown schedule plan {kind!r}")
        return torch.cat([sigmas, sigmas.new_zeros(1)]).to(torch.float32)


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = KARRAS_RHO) -> torch.Tensor:
    """Karras et al. (2022) eq. 5: evenly spaced in sigma^(1/rho), from sigma_max down to sigma_min."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    max_inv, min_inv = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (max_inv + ramp * (min_inv - max_inv)) ** rho


def img2img_encode_steps(steps: int, strength: float) -> int:
    """A1111's `t_enc`: how far into the plan the init latent is noised (`setup_img2img_steps`)."""
    return int(min(strength, 0.999) * steps)


def img2img_plan(sigmas: torch.Tensor, strength: float) -> torch.Tensor:
    """The tail of a full plan (len steps + 1) that img2img samples at `strength`: t_enc + 1 steps."""
    steps = len(sigmas) - 1
    return sigmas[steps - img2img_encode_steps(steps, strength) - 1:]

