"""The samplers: one loop, one small update rule each, all in k-diffusion's sigma form.

A sampler walks a descending list of noise levels (see `schedule.py`). At each level it asks a
denoiser for its estimate of the clean latent and moves `x` to the next level with its update
rule. The loop (`sample`) owns what every sampler shares: cancelling, progress, and the memory
of the previous estimate that multistep rules use.

Update rules (k-diffusion's `sampling.py` describes the same methods):
- Euler: one explicit Euler step of the probability-flow ODE dx/dsigma = (x - x0) / sigma.
- Euler a: an Euler step down to a level below the target, then fresh noise back up to the
  target ("ancestral" sampling: stochastic, does not converge to one image as steps grow).
- DPM++ 2M: DPM-Solver++ second-order multistep, exact for the linear part of the ODE in
  log-sigma time and second order in the estimate, using the previous step's estimate.
- DDIM (eta 0): the same update as Euler in sigma form (DDIM's deterministic step *is* an Euler
  step in x / sqrt(alpha_cumprod) space), taken on the DDIM timestep plan.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import Depth2imgError, SettingsError
from .schedule import SchedulePlan

Denoiser = Callable[[torch.Tensor, float], torch.Tensor]
"""(x [B,4,h,w] at noise level sigma, sigma) -> the estimate of the clean latent x0."""

NoiseDraw = Callable[[], torch.Tensor]
"""Returns fresh standard normal noise shaped like the latents (stochastic samplers only)."""

ProgressCallback = Callable[[int, int], None]
"""Called after each step with (steps done, steps in total)."""


class GenerationCancelled(Depth2imgError):
    """The cancel event was set; raised between two steps."""


@dataclass(frozen=True)
class StepInput:
    """What an update rule sees at step i: x at sigmas[i] and the denoiser's estimates."""

    x: torch.Tensor
    denoised: torch.Tensor
    previous_denoised: torch.Tensor | None  # the estimate of step i - 1, None at the first step
    sigmas: torch.Tensor
    i: int
    draw_noise: NoiseDraw | None

    @property
    def sigma(self) -> float:
        return float(self.sigmas[self.i])

    @property
    def sigma_next(self) -> float:
        return float(self.sigmas[self.i + 1])


UpdateRule = Callable[[StepInput], torch.Tensor]


def euler_step(s: StepInput) -> torch.Tensor:
    return _euler(s.x, s.denoised, s.sigma, s.sigma_next)


def euler_ancestral_step(s: StepInput) -> torch.Tensor:
    sigma, sigma_next = s.sigma, s.sigma_next
    # Split the target level into a deterministic part (down) and fresh noise (up) such that
    # down^2 + up^2 = next^2; up is the DDPM posterior's spread (eta = 1).
    sigma_up = min(sigma_next, (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
    x = _euler(s.x, s.denoised, sigma, sigma_down)
    if sigma_next > 0:
        if s.draw_noise is None:
            raise ValueError("Euler a needs a noise source")
        x = x + s.draw_noise().to(x) * sigma_up
    return x


def dpmpp_2m_step(s: StepInput) -> torch.Tensor:
    sigma, sigma_next = s.sigma, s.sigma_next
    if sigma_next == 0:  # the last step lands on the estimate itself
        return s.denoised
    # In log-sigma time lambda = -log(sigma) the solution is
    #   x_next = (sigma_next / sigma) x + (1 - sigma_next / sigma) * D,
    # exact when the estimate D is constant over the step. 2M replaces D by a linear
    # extrapolation through the previous estimate (second order), except at the first step.
    h = math.log(sigma / sigma_next)
    estimate = s.denoised
    if s.previous_denoised is not None:
        h_last = math.log(float(s.sigmas[s.i - 1]) / sigma)
        r = h_last / h
        estimate = (1 + 1 / (2 * r)) * s.denoised - (1 / (2 * r)) * s.previous_denoised
    ratio = sigma_next / sigma
    return ratio * s.x + (1 - ratio) * estimate


def _euler(x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    return x + (sigma_next - sigma) * (x - denoised) / sigma


@dataclass(frozen=True)
class Sampler:
    """A sampler as the user picks it: its A1111 name, its noise-level plan and its update rule."""

    name: str
    plan: SchedulePlan
    update: UpdateRule
    stochastic: bool = False  # draws fresh noise at each step (needs `draw_noise`)


SAMPLERS: dict[str, Sampler] = {
    sampler.name: sampler
    for sampler in (
        Sampler("DPM++ 2M Karras", "karras", dpmpp_2m_step),
        Sampler("Euler a", "uniform", euler_ancestral_step, stochastic=True),
        Sampler("Euler", "uniform", euler_step),
        Sampler("DDIM", "ddim", euler_step),
    )
}
SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)
DEFAULT_SAMPLER = "DPM++ 2M Karras"  # A1111 v1.10's default (DPM++ 2M with the Karras schedule)


def get_sampler(name: str) -> Sampler:
    """The sampler called `name` (A1111's spelling; case does not matter)."""
    wanted = name.strip().lower()
    found = next((sampler for sampler in SAMPLERS.values() if sampler.name.lower() == wanted), None)
    if found is None:
        raise SettingsError(f"Unknown sampler {name!r}; choose one of: {', '.join(SAMPLER_NAMES)}.")
    return found


def sample(
    sampler: Sampler,
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    draw_noise: NoiseDraw | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> torch.Tensor:
    """Walk `x` (noised to sigmas[0]) down the plan `sigmas` (descending, ends in 0)."""
    total = len(sigmas) - 1
    previous = None
    for i in range(total):
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled("Generation cancelled.")
        denoised = denoiser(x, float(sigmas[i]))
        x = sampler.update(StepInput(x, denoised, previous, sigmas, i, draw_noise))
        previous = denoised
        if progress is not None:
            progress(i + 1, total)
    return x


class SeededNoise:
    """Standard normal noise for a batch, one CPU `torch.Generator` per image, as A1111's ImageRNG.

    The first draw is the starting noise, later draws are the ancestral samplers' step noise;
    each image's stream depends only on its own seed, so image i of a batch is the same image as
    a single run with seed + i. Drawing on the CPU makes a seed give the same noise on any device.
    """

    def __init__(
        self, seeds: Sequence[int], shape: Sequence[int], *, device: torch.device | str = "cpu"
    ) -> None:
        self.generators = [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]
        self.shape = tuple(shape)
        self.device = torch.device(device)

    def __call__(self) -> torch.Tensor:
        draws = [torch.randn(self.shape, generator=g, dtype=torch.float32) for g in self.generators]
        return torch.stack(draws).to(self.device)
