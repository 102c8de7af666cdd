"""Noise levels: the model's training schedule seen as k-diffusion sigmas, the schedule types, and
the plan of one job.

Every sampler here works in k-diffusion's "sigma" form: a noisy latent is `x = x0 + sigma * eps`
and the model sees `x / sqrt(sigma^2 + 1)`, which is exactly the DDPM latent
`sqrt(a) * x0 + sqrt(1 - a) * eps` at the training timestep whose `alphas_cumprod` is `a`, with
`sigma = sqrt((1 - a) / a)`. Each pair of neighbours in a plan's sigmas is one step.

The levels follow A1111 v1.10.1 and k-diffusion (commit ab527a9a) to the float32 operation, so a
seed gives A1111's image: sigmas are computed in float32 from float32 `alphas_cumprod`, as
k-diffusion's `DiscreteSchedule` does. Schedule types (A1111's "Schedule type"):
- Uniform: k-diffusion's `get_sigmas(n)`: n timesteps evenly spaced from 999 to 0, sigma
  interpolated in log space between the training timesteps (what "Automatic" means for Euler,
  Euler a, Heun and LMS);
- Karras: Karras et al. (2022), rho 7, from the model's largest to smallest training sigma;
- Exponential: evenly spaced in log sigma between the same ends.
A1111's DDIM ignores the schedule type: it walks the timesteps 1, 1 + c, 1 + 2c, ... with
c = 1000 // n (one more than n when n does not divide 1000), see `ddim_plan`.

img2img: with strength s and n steps A1111 computes `t_enc = int(min(s, 0.999) * n)` and samples
the tail `sigmas[n - t_enc - 1:]`, t_enc + 1 steps from the level the init latent is noised to.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

KARRAS_RHO = 7.0
AUTOMATIC = "Automatic"


class NoiseSchedule:
    """The model's 1000 discrete training noise levels (k-diffusion's `DiscreteSchedule`)."""

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        self.alphas_cumprod = alphas_cumprod.detach().to("cpu", torch.float32)
        self.sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5  # ascending with t
        self.log_sigmas = self.sigmas.log()

    @property
    def num_timesteps(self) -> int:
        return len(self.sigmas)

    @property
    def sigma_min(self) -> float:
        return self.sigmas[0].item()

    @property
    def sigma_max(self) -> float:
        return self.sigmas[-1].item()

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """The (fractional) training timestep of each sigma: linear in log sigma between neighbours;
        a training sigma gives its timestep exactly."""
        log_sigma = sigma.detach().to("cpu", torch.float32).log()
        distances = log_sigma - self.log_sigmas[:, None]
        low = distances.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.num_timesteps - 2)
        low_log, high_log = self.log_sigmas[low], self.log_sigmas[low + 1]
        weight = ((low_log - log_sigma) / (low_log - high_log)).clamp(0, 1)
        return ((1 - weight) * low + weight * (low + 1)).view(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        low, high, weight = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - weight) * self.log_sigmas[low] + weight * self.log_sigmas[high]).exp()


def uniform_sigmas(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    t = torch.linspace(schedule.num_timesteps - 1, 0, steps)
    return _append_zero(schedule.t_to_sigma(t))


def karras_sigmas(schedule: NoiseSchedule, steps: int, rho: float = KARRAS_RHO) -> torch.Tensor:
    """Karras et al. (2022) eq. 5: evenly spaced in sigma^(1/rho), from sigma_max down to sigma_min."""
    ramp = torch.linspace(0, 1, steps)
    min_inv, max_inv = schedule.sigma_min ** (1 / rho), schedule.sigma_max ** (1 / rho)
    return _append_zero((max_inv + ramp * (min_inv - max_inv)) ** rho)


def exponential_sigmas(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    return _append_zero(torch.linspace(math.log(schedule.sigma_max), math.log(schedule.sigma_min), steps).exp())


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


SCHEDULES: dict[str, Callable[[NoiseSchedule, int], torch.Tensor]] = {
    "Uniform": uniform_sigmas,
    "Karras": karras_sigmas,
    "Exponential": exponential_sigmas,
}
"""A1111's schedule types by label (besides "Automatic": the sampler's own choice)."""


def img2img_encode_steps(steps: int, strength: float) -> int:
    """A1111's `t_enc`: how far into the plan the init latent is noised (`setup_img2img_steps`)."""
    return int(min(strength, 0.999) * steps)


@dataclass(frozen=True)
class SamplingPlan:
    """The levels one job walks, and how its latents enter and leave them.

    `sigmas`: the level of each model evaluation, then the level of the result (0 for the
    k-diffusion samplers). The starting latent is `init_scale * init + noise_scale * noise` and the
    result is `end_scale * x`; for k-diffusion that is `init + sigmas[0] * noise` and `x` itself.
    `brownian_range`: the (min, max) sigma of the whole schedule, for Brownian-tree noise.
    """

    sigmas: torch.Tensor
    init_scale: float
    noise_scale: float
    end_scale: float
    brownian_range: tuple[torch.Tensor, torch.Tensor]

    @property
    def model_steps(self) -> int:
        return len(self.sigmas) - 1

    def start(self, noise: torch.Tensor, init_latent: torch.Tensor | None) -> torch.Tensor:
        if init_latent is None:
            return noise * self.noise_scale
        return init_latent * self.init_scale + noise * self.noise_scale

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.end_scale == 1 else x * self.end_scale


def sigma_plan(sigmas: torch.Tensor, strength: float | None) -> SamplingPlan:
    """A k-diffusion plan from a whole schedule (len steps + 1); `strength` None: txt2img."""
    steps = len(sigmas) - 1
    tail = sigmas if strength is None else sigmas[steps - img2img_encode_steps(steps, strength) - 1:]
    positive = sigmas[sigmas > 0]
    return SamplingPlan(tail, 1.0, tail[0].item(), 1.0, (positive.min(), sigmas.max()))


def ddim_timesteps(steps: int, num_timesteps: int = 1000) -> torch.Tensor:
    """A1111's DDIM timesteps, ascending: 1, 1 + c, ... below 1000, c = 1000 // steps."""
    return (torch.arange(0, num_timesteps, num_timesteps // steps) + 1).clamp(0, num_timesteps - 1)


def ddim_plan(schedule: NoiseSchedule, steps: int, strength: float | None) -> SamplingPlan:
    """A1111's DDIM (`sd_samplers_timesteps`) as a plan in sigma form.

    txt2img walks every timestep from the last down to the first, starting from unit noise at
    the last. img2img noises the init latent to timestep `t_enc` but labels the first model call
    one DDIM step lower, then walks down to the first timestep (t_enc - 1 model calls); the result
    keeps the noise of the first timestep (about 4% at 1) because A1111 returns the DDPM latent
    there, not its estimate of x0.
    """
    timesteps = ddim_timesteps(steps, schedule.num_timesteps)
    alphas = schedule.alphas_cumprod
    if strength is None:
        walked, noised_alpha = timesteps, None
    else:
        t_enc = img2img_encode_steps(steps, strength)
        walked, noised_alpha = timesteps[: max(t_enc, 1)], alphas[timesteps[t_enc]].item()
    sigmas = schedule.sigmas[walked.flip(0)]
    first_alpha, last_alpha = alphas[walked[-1]].item(), alphas[walked[0]].item()
    if noised_alpha is None:
        init_scale, noise_scale = 0.0, 1 / math.sqrt(first_alpha)
    else:
        init_scale = math.sqrt(noised_alpha) / math.sqrt(first_alpha)
        noise_scale = math.sqrt(1 - noised_alpha) / math.sqrt(first_alpha)
    brownian_range = (schedule.sigmas[timesteps].min(), schedule.sigmas[timesteps].max())
    return SamplingPlan(sigmas, init_scale, noise_scale, math.sqrt(last_alpha), brownian_range)
