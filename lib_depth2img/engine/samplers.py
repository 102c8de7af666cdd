"""A1111's samplers: one table, one loop, one small update rule each, in k-diffusion's sigma form.

A sampler walks the levels of a `SamplingPlan` (see `schedule.py`). At each level it asks a
denoiser for its estimate of the clean latent and moves `x` to the next level with its update
rule. The loop (`sample`) owns what every sampler shares: cancelling, progress, and the memory of
earlier evaluations that multistep rules use. The rules follow k-diffusion at commit ab527a9a (the
one A1111 v1.10.1 runs) operation by operation, in float32 0-d tensors as it computes them, so a
seed gives A1111's image; `tests/data/a1111_samplers.npz` holds what A1111's own code returns.

- Euler: one explicit Euler step of the probability-flow ODE dx/dsigma = (x - x0) / sigma.
- Euler a: an Euler step down to a level below the target, then fresh noise back up to it.
- Heun: Euler, then the slope at the target averaged in (second order; two evaluations a step).
- LMS: linear multistep, order 4, on the slopes of the last four steps.
- DPM++ 2M: DPM-Solver++ second-order multistep, exact for the linear part in log-sigma time.
- DPM++ SDE: DPM-Solver++ stochastic, a midpoint evaluation, Brownian-tree noise.
- DPM++ 2M SDE: the 2M update of the SDE (midpoint variant), Brownian-tree noise.
- DDIM (eta 0): an Euler step in sigma form (DDIM's deterministic step *is* one), on A1111's
  own timestep plan, with its input blended before the model when inpainting.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch

from ..errors import Depth2imgError, SettingsError
from .schedule import AUTOMATIC, SCHEDULES, NoiseSchedule, SamplingPlan, ddim_plan, sigma_plan

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(x [B,4,h,w] at noise level sigma, sigma as a 0-d float32 tensor) -> the estimate of x0."""

ProgressCallback = Callable[[int, int], None]
"""Called after each step with (steps done, steps in total)."""

NoiseKind = Literal["none", "ancestral", "brownian"]


class StepNoise(Protocol):
    """Noise a stochastic rule adds during a step."""

    def fresh(self) -> torch.Tensor:
        """The next draw of each image's own stream (A1111's `rng.next()`)."""

    def between(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        """Unit-variance Brownian increment from sigma to sigma_next (A1111's Brownian tree)."""


class GenerationCancelled(Depth2imgError):
    """The cancel event was set; raised between two steps."""


@dataclass(frozen=True)
class Evaluation:
    """An earlier step's x, the estimate at it, and its level."""

    x: torch.Tensor
    denoised: torch.Tensor
    sigma: torch.Tensor


@dataclass(frozen=True)
class Step:
    """What an update rule sees at step i: x at sigmas[i], the estimate there, the way to ask for
    more estimates, the noise sources and the earlier evaluations (latest first)."""

    x: torch.Tensor
    denoised: torch.Tensor
    sigmas: torch.Tensor
    i: int
    denoise: Denoiser
    noise: StepNoise | None
    earlier: Sequence[Evaluation] = ()

    @property
    def sigma(self) -> torch.Tensor:
        return self.sigmas[self.i]

    @property
    def sigma_next(self) -> torch.Tensor:
        return self.sigmas[self.i + 1]

    @property
    def is_last(self) -> bool:
        return bool(self.sigma_next == 0)


UpdateRule = Callable[[Step], torch.Tensor]


def slope(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """dx/dsigma of the probability-flow ODE (k-diffusion's `to_d`)."""
    return (x - denoised) / sigma


def ancestral_levels(sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float = 1.0):
    """(sigma_down, sigma_up): the level to step down to and the noise to add back, such that
    down^2 + up^2 = next^2; up is the DDPM posterior's spread at eta 1."""
    sigma_up = min(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def _log_time(sigma: torch.Tensor) -> torch.Tensor:
    return sigma.log().neg()


def _sigma_at(t: torch.Tensor) -> torch.Tensor:
    return t.neg().exp()


def euler_step(s: Step) -> torch.Tensor:
    return s.x + slope(s.x, s.sigma, s.denoised) * (s.sigma_next - s.sigma)


def euler_ancestral_step(s: Step) -> torch.Tensor:
    sigma_down, sigma_up = ancestral_levels(s.sigma, s.sigma_next)
    x = s.x + slope(s.x, s.sigma, s.denoised) * (sigma_down - s.sigma)
    if s.sigma_next > 0:
        x = x + s.noise.fresh() * sigma_up
    return x


def heun_step(s: Step) -> torch.Tensor:
    d = slope(s.x, s.sigma, s.denoised)
    dt = s.sigma_next - s.sigma
    if s.is_last:
        return s.x + d * dt
    x_2 = s.x + d * dt
    d_2 = slope(x_2, s.sigma_next, s.denoise(x_2, s.sigma_next))
    return s.x + (d + d_2) / 2 * dt


LMS_ORDER = 4


def lms_step(s: Step) -> torch.Tensor:
    slopes = [slope(s.x, s.sigma, s.denoised)]
    slopes += [slope(e.x, e.sigma, e.denoised) for e in s.earlier[: LMS_ORDER - 1]]
    order = min(s.i + 1, LMS_ORDER)
    levels = s.sigmas.numpy()
    step = 0
    for j, d in enumerate(slopes[:order]):
        step = step + lms_coefficient(levels, s.i, j, order) * d
    return s.x + step


def lms_coefficient(levels: np.ndarray, i: int, j: int, order: int) -> float:
    """The integral over [levels[i], levels[i+1]] of the Lagrange basis polynomial through the
    last `order` levels that is 1 at levels[i - j], integrated exactly (k-diffusion integrates it
    numerically; the float32 differences of levels are kept as it computes them)."""
    basis = np.poly1d([1.0])
    for k in range(order):
        if k != j:
            spread = float(levels[i - j] - levels[i - k])  # float32 subtraction, as in k-diffusion
            basis = basis * np.poly1d([1.0, -float(levels[i - k])]) / spread
    antiderivative = basis.integ()
    return float(antiderivative(float(levels[i + 1])) - antiderivative(float(levels[i])))


def dpmpp_2m_step(s: Step) -> torch.Tensor:
    t, t_next = _log_time(s.sigma), _log_time(s.sigma_next)
    h = t_next - t
    estimate = s.denoised
    if s.earlier and not s.is_last:
        # replace the estimate by a linear extrapolation through the previous one (second order)
        r = (t - _log_time(s.sigmas[s.i - 1])) / h
        estimate = (1 + 1 / (2 * r)) * s.denoised - (1 / (2 * r)) * s.earlier[0].denoised
    return (_sigma_at(t_next) / _sigma_at(t)) * s.x - (-h).expm1() * estimate


def dpmpp_sde_step(s: Step, eta: float = 1.0, r: float = 0.5) -> torch.Tensor:
    if s.is_last:
        return euler_step(s)
    t, t_next = _log_time(s.sigma), _log_time(s.sigma_next)
    h = t_next - t
    t_mid = t + h * r
    # to the midpoint (with its share of fresh noise), then the whole step with the mixed estimate
    down, up = ancestral_levels(_sigma_at(t), _sigma_at(t_mid), eta)
    t_down = _log_time(down)
    x_2 = (_sigma_at(t_down) / _sigma_at(t)) * s.x - (t - t_down).expm1() * s.denoised
    x_2 = x_2 + s.noise.between(_sigma_at(t), _sigma_at(t_mid)) * up
    denoised_2 = s.denoise(x_2, _sigma_at(t_mid))
    down, up = ancestral_levels(_sigma_at(t), _sigma_at(t_next), eta)
    t_down = _log_time(down)
    mix = 1 / (2 * r)
    estimate = (1 - mix) * s.denoised + mix * denoised_2
    x = (_sigma_at(t_down) / _sigma_at(t)) * s.x - (t - t_down).expm1() * estimate
    return x + s.noise.between(_sigma_at(t), _sigma_at(t_next)) * up


def dpmpp_2m_sde_step(s: Step, eta: float = 1.0) -> torch.Tensor:
    if s.is_last:
        return s.denoised
    t, t_next = -s.sigma.log(), -s.sigma_next.log()
    h = t_next - t
    eta_h = eta * h
    x = s.sigma_next / s.sigma * (-eta_h).exp() * s.x + (-h - eta_h).expm1().neg() * s.denoised
    if s.earlier:
        h_last = t - (-s.sigmas[s.i - 1].log())
        r = h_last / h
        x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (s.denoised - s.earlier[0].denoised)
    return x + s.noise.between(s.sigma, s.sigma_next) * s.sigma_next * (-2 * eta_h).expm1().neg().sqrt()


@dataclass(frozen=True)
class Sampler:
    """A sampler as A1111 v1.10 lists it: its name and aliases, its update rule, the schedule
    "Automatic" means for it, and the noise it draws while stepping."""

    name: str
    update: UpdateRule
    automatic_schedule: str | None  # None: A1111's DDIM timesteps (ignores the schedule type)
    noise: NoiseKind = "none"
    aliases: tuple[str, ...] = ()
    blends_model_input: bool = False  # inpainting: init latent blended into the model input

    @property
    def uses_timesteps(self) -> bool:
        return self.automatic_schedule is None

    def schedule_for(self, schedule_type: str) -> str | None:
        """The schedule this sampler walks for a schedule type; None: its own timesteps."""
        if self.uses_timesteps:
            return None
        return self.automatic_schedule if schedule_type == AUTOMATIC else schedule_type


SAMPLERS: dict[str, Sampler] = {
    sampler.name: sampler
    for sampler in (
        Sampler("DPM++ 2M", dpmpp_2m_step, "Karras", aliases=("k_dpmpp_2m",)),
        Sampler("DPM++ SDE", dpmpp_sde_step, "Karras", "brownian", aliases=("k_dpmpp_sde",)),
        Sampler("DPM++ 2M SDE", dpmpp_2m_sde_step, "Exponential", "brownian", aliases=("k_dpmpp_2m_sde",)),
        Sampler("Euler a", euler_ancestral_step, "Uniform", "ancestral", aliases=("k_euler_a", "k_euler_ancestral")),
        Sampler("Euler", euler_step, "Uniform", aliases=("k_euler",)),
        Sampler("LMS", lms_step, "Uniform", aliases=("k_lms",)),
        Sampler("Heun", heun_step, "Uniform", aliases=("k_heun",)),
        Sampler("DDIM", euler_step, None, aliases=("ddim",), blends_model_input=True),
    )
}
SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)
SCHEDULE_TYPES: tuple[str, ...] = (AUTOMATIC, *SCHEDULES)
DEFAULT_SAMPLER = "DPM++ 2M"  # A1111 v1.10's default, with the Karras schedule ("Automatic")


@dataclass(frozen=True)
class SamplerChoice:
    """A sampler and a schedule type, as A1111 v1.10 names them."""

    sampler: Sampler
    schedule_type: str = AUTOMATIC

    @property
    def schedule(self) -> str | None:
        return self.sampler.schedule_for(self.schedule_type)

    @property
    def infotext_schedule_type(self) -> str:
        """What A1111 writes as "Schedule type": the schedule walked, or the choice for DDIM and
        for samplers whose Automatic is Uniform."""
        if self.schedule_type == AUTOMATIC and self.sampler.automatic_schedule in (None, "Uniform"):
            return AUTOMATIC
        return self.schedule or self.schedule_type


def choose_sampler(name: str, schedule_type: str | None = None) -> SamplerChoice:
    """A sampler by A1111's name or alias (any case) and a schedule type; a name ending in a
    schedule type ("DPM++ 2M Karras", as A1111 before v1.9 wrote it) sets the schedule, as A1111's
    `get_sampler_and_scheduler` reads it."""
    wanted = name.strip().lower()
    schedule = _schedule_type(schedule_type) if schedule_type else AUTOMATIC
    for label in SCHEDULE_TYPES[1:]:
        if wanted.endswith(" " + label.lower()) and _find(wanted[: -len(label) - 1]) is not None:
            wanted, schedule = wanted[: -len(label) - 1], label
            break
    found = _find(wanted)
    if found is None:
        raise SettingsError(f"Unknown sampler {name!r}; choose one of: {', '.join(SAMPLER_NAMES)}.")
    return SamplerChoice(found, schedule)


def get_sampler(name: str) -> Sampler:
    """The sampler called `name` (A1111's name, alias or legacy "<sampler> <schedule>" spelling)."""
    return choose_sampler(name).sampler


def _find(wanted: str) -> Sampler | None:
    return next(
        (s for s in SAMPLERS.values() if wanted in (s.name.lower(), *(a.lower() for a in s.aliases))), None
    )


def _schedule_type(name: str) -> str:
    found = next((label for label in SCHEDULE_TYPES if label.lower() == name.strip().lower()), None)
    if found is None:
        raise SettingsError(f"Unknown schedule type {name!r}; choose one of: {', '.join(SCHEDULE_TYPES)}.")
    return found


def sample(
    sampler: Sampler,
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: StepNoise | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> torch.Tensor:
    """Walk `x` (at level sigmas[0]) down to the last level of `sigmas` (float32, descending)."""
    if sampler.noise != "none" and noise is None:
        raise ValueError(f"{sampler.name} needs a noise source")
    total = len(sigmas) - 1
    earlier: list[Evaluation] = []
    for i in range(total):
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled("Generation cancelled.")
        denoised = denoiser(x, sigmas[i])
        step = Step(x, denoised, sigmas, i, denoiser, noise, tuple(earlier))
        earlier = [Evaluation(x, denoised, sigmas[i]), *earlier[: LMS_ORDER - 2]]
        x = sampler.update(step)
        if progress is not None:
            progress(i + 1, total)
    return x


@dataclass
class ImageNoise:
    """A1111's `ImageRNG`: standard normal noise for a batch, one `torch.Generator` per image.

    The first draw is the starting noise: each image's seed, slerped toward its variation seed's
    noise by `variation_strength` exactly as A1111 does (over the height axis of each channel).
    Later draws (ancestral steps) continue each image's generator, or a fresh one seeded
    seed + `eta_noise_seed_delta` when that is set. Image i of a batch is therefore the same as a
    single run with its seed. `draw_device` "cpu" is A1111's "RNG: CPU"; a CUDA device draws there,
    as A1111's default "GPU" source does.
    """

    seeds: Sequence[int]
    shape: Sequence[int]
    device: torch.device | str = "cpu"
    draw_device: torch.device | str = "cpu"
    variation_seeds: Sequence[int] | None = None
    variation_strength: float = 0.0
    eta_noise_seed_delta: int = 0
    _generators: list[torch.Generator] = field(init=False)
    _drawn: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.shape = tuple(self.shape)
        self._generators = [self._generator(seed) for seed in self.seeds]

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(self.draw_device).manual_seed(int(seed))

    def _draw(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(self.shape, generator=generator, device=self.draw_device)

    def fresh(self) -> torch.Tensor:
        if not self._drawn:
            self._drawn = True
            return self._first()
        return torch.stack([self._draw(g) for g in self._generators]).to(self.device)

    def _first(self) -> torch.Tensor:
        draws = []
        for index, generator in enumerate(self._generators):
            noise = self._draw(generator)
            if self.variation_seeds is not None and self.variation_strength != 0:
                variation_seed = self.variation_seeds[index] if index < len(self.variation_seeds) else 0
                noise = slerp(self.variation_strength, noise, self._draw(self._generator(variation_seed)))
            draws.append(noise)
        if self.eta_noise_seed_delta:
            self._generators = [self._generator(seed + self.eta_noise_seed_delta) for seed in self.seeds]
        return torch.stack(draws).to(self.device)


def slerp(strength: float, noise: torch.Tensor, variation: torch.Tensor) -> torch.Tensor:
    """A1111's variation-seed mix of two [C,H,W] noises: spherical interpolation along dim 1 (the
    height), noise weighted by 1 - strength; nearly parallel columns mix linearly, with A1111's
    weights as they are (strength on the seed's noise)."""
    noise_unit = noise / torch.norm(noise, dim=1, keepdim=True)
    variation_unit = variation / torch.norm(variation, dim=1, keepdim=True)
    dot = (noise_unit * variation_unit).sum(1)
    if dot.mean() > 0.9995:
        return noise * strength + variation * (1 - strength)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    return (torch.sin((1.0 - strength) * omega) / sin_omega).unsqueeze(1) * noise + (
        torch.sin(strength * omega) / sin_omega
    ).unsqueeze(1) * variation


class BrownianNoise:
    """A1111's Brownian-tree noise for the SDE samplers: one `torchsde.BrownianTree` per image,
    seeded with the image's seed over the whole schedule's sigma range, drawn on `draw_device`
    (torchsde seeds a fresh generator for every node, as A1111's CPU `randn_local` does).

    Each image's increments depend only on its seed and the levels asked for, so batches and
    single runs agree, and the noise does not depend on the step count's rounding.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        shape: Sequence[int],
        sigma_range: tuple[torch.Tensor, torch.Tensor],
        *,
        device: torch.device | str = "cpu",
        draw_device: torch.device | str = "cpu",
    ) -> None:
        try:
            import torchsde
        except ImportError:
            raise SettingsError(
                "The DPM++ SDE samplers need torchsde (pip install torchsde==0.2.6, A1111's version)."
            ) from None
        # torchsde warns when a float32 level rounds just outside [low, high]; A1111 shows the
        # same warnings for the same (harmless) queries
        warnings.filterwarnings("ignore", message="Should have (ta|tb)", module="torchsde")
        low, high = sigma_range
        start = torch.zeros(tuple(shape), device=draw_device)
        self.device = torch.device(device)
        self.trees = [torchsde.BrownianTree(low, start, high, entropy=int(seed)) for seed in seeds]

    def between(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        sigma, sigma_next = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        low, high, sign = (sigma, sigma_next, 1) if sigma < sigma_next else (sigma_next, sigma, -1)
        increments = torch.stack([tree(low, high) for tree in self.trees]) * sign
        return (increments / (sigma_next - sigma).abs().sqrt()).to(self.device)


@dataclass
class SamplerNoise:
    """Both noise sources of a job: the images' streams and, for the SDE samplers, the trees."""

    images: ImageNoise
    brownian: BrownianNoise | None = None

    def fresh(self) -> torch.Tensor:
        return self.images.fresh()

    def between(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        if self.brownian is None:
            raise ValueError("no Brownian-tree noise in this job")
        return self.brownian.between(sigma, sigma_next)


def plan_for(choice: SamplerChoice, schedule: NoiseSchedule, steps: int, strength: float | None) -> SamplingPlan:
    """The levels a job walks: A1111's img2img tail at `strength`, or all of them (None: txt2img)."""
    if choice.schedule is None:
        return ddim_plan(schedule, steps, strength)
    return sigma_plan(SCHEDULES[choice.schedule](schedule, steps), strength)


def run_sampler(
    sampler: Sampler,
    denoiser: Denoiser,
    plan: SamplingPlan,
    noise: ImageNoise,
    init_latent: torch.Tensor | None,
    *,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> torch.Tensor:
    """A job's latents, as A1111's `sample_img2img` (or txt2img `sample`) makes them: the first
    draw of `noise` starts the plan, later draws or the images' Brownian trees feed the steps."""
    x = plan.start(noise.fresh(), init_latent)
    brownian = None
    if sampler.noise == "brownian":
        brownian = BrownianNoise(
            noise.seeds, noise.shape, plan.brownian_range, device=noise.device, draw_device=noise.draw_device
        )
    latents = sample(
        sampler, denoiser, x, plan.sigmas, noise=SamplerNoise(noise, brownian), progress=progress, cancel=cancel
    )
    return plan.finish(latents)
