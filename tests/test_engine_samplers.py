"""Noise schedule and sampler math against closed forms and A1111's rules; no model involved."""

from __future__ import annotations

import math
import threading

import pytest
import torch

from lib_depth2img.engine import noise_schedule
from lib_depth2img.engine.model import FULL
from lib_depth2img.engine.samplers import (
    DEFAULT_SAMPLER,
    SAMPLER_NAMES,
    SAMPLERS,
    GenerationCancelled,
    SeededNoise,
    StepInput,
    get_sampler,
    sample,
)
from lib_depth2img.engine.schedule import NoiseSchedule, img2img_encode_steps, img2img_plan, karras_sigmas
from lib_depth2img.errors import SettingsError


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    return NoiseSchedule(noise_schedule(FULL)["alphas_cumprod"])


def plan_for(schedule: NoiseSchedule, name: str, steps: int) -> torch.Tensor:
    return schedule.plan(get_sampler(name).plan, steps)


# -- schedule ------------------------------------------------------------------------------------


def test_sd2_sigma_range(schedule):
    # the values A1111 / k-diffusion show for SD's scaled-linear schedule
    assert schedule.sigma_min == pytest.approx(0.0292, abs=1e-4)
    assert schedule.sigma_max == pytest.approx(14.6146, abs=1e-3)


def test_timestep_sigma_round_trip(schedule):
    t = torch.tensor([0.0, 0.5, 1.0, 123.25, 500.0, 998.5, 999.0])
    assert torch.allclose(schedule.sigma_to_t(schedule.t_to_sigma(t)), t, atol=1e-3)
    # sigmas outside the trained range clamp to its ends
    assert schedule.sigma_to_t(torch.tensor([1e-4, 100.0])).tolist() == [0.0, 999.0]


@pytest.mark.parametrize("name", SAMPLER_NAMES)
@pytest.mark.parametrize("steps", [1, 3, 20])
def test_every_plan_descends_to_zero(schedule, name, steps):
    sigmas = plan_for(schedule, name, steps)
    assert len(sigmas) == steps + 1
    assert sigmas[-1] == 0
    assert bool((sigmas[:-1] > sigmas[1:]).all())
    assert sigmas.dtype == torch.float32


def test_uniform_plan_is_k_diffusion_get_sigmas(schedule):
    # t evenly spaced from 999 down to 0, then a trailing 0
    sigmas = plan_for(schedule, "Euler", 4)
    t = schedule.sigma_to_t(sigmas[:-1])
    assert torch.allclose(t, torch.tensor([999.0, 666.0, 333.0, 0.0]), atol=1e-2)
    assert float(sigmas[0]) == pytest.approx(schedule.sigma_max, rel=1e-6)


def test_karras_sigmas_endpoints_and_rho_spacing(schedule):
    sigmas = plan_for(schedule, "DPM++ 2M Karras", 10)
    assert float(sigmas[0]) == pytest.approx(schedule.sigma_max, rel=1e-6)
    assert float(sigmas[-2]) == pytest.approx(schedule.sigma_min, rel=1e-5)
    roots = sigmas[:-1].double() ** (1 / 7)  # evenly spaced in sigma^(1/rho)
    assert torch.allclose(roots.diff(), roots.diff()[:1].expand(9), rtol=1e-4)
    assert karras_sigmas(1, 0.1, 10.0).tolist() == [pytest.approx(10.0)]


@pytest.mark.parametrize(
    ("steps", "timesteps"), [(20, list(range(951, 0, -50))), (3, [667, 334, 1]), (1, [1])]
)
def test_ddim_plan_uses_a1111_timesteps(schedule, steps, timesteps):
    sigmas = plan_for(schedule, "DDIM", steps)
    expected = torch.tensor(timesteps, dtype=torch.float32)
    assert torch.allclose(schedule.sigma_to_t(sigmas[:-1]), expected, atol=1e-2)


@pytest.mark.parametrize(
    ("steps", "strength", "t_enc"),
    [(20, 1.0, 19), (20, 0.75, 15), (20, 0.5, 10), (10, 0.3, 3), (10, 0.7, 7), (20, 0.0, 0), (1, 1.0, 0),
     (7, 0.999, 6)],
)
def test_img2img_steps_follow_a1111(schedule, steps, strength, t_enc):
    """A1111 `setup_img2img_steps` + `sample_img2img`: t_enc = int(min(s, 0.999) * n) and the
    sampler runs the tail sigmas[n - t_enc - 1:], i.e. t_enc + 1 steps from that noise level."""
    assert img2img_encode_steps(steps, strength) == t_enc
    full = plan_for(schedule, "Euler a", steps)
    tail = img2img_plan(full, strength)
    assert len(tail) - 1 == t_enc + 1
    assert float(tail[0]) == float(full[steps - t_enc - 1])
    assert torch.equal(tail, full[steps - t_enc - 1:])


def test_full_strength_starts_at_the_largest_sigma(schedule):
    for name in SAMPLER_NAMES:
        full = plan_for(schedule, name, 8)
        assert torch.equal(img2img_plan(full, 1.0), full)


# -- update rules against closed forms -------------------------------------------------------------


def constant_denoiser(x0: torch.Tensor):
    """A perfect denoiser for data that is always x0."""
    return lambda x, sigma: x0.clone()


def gaussian_denoiser(data_std: float):
    """The exact denoiser E[x0 | x] for data x0 ~ N(0, s^2): x * s^2 / (s^2 + sigma^2)."""
    return lambda x, sigma: x * data_std**2 / (data_std**2 + sigma**2)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_every_sampler_lands_on_a_known_x0(schedule, name):
    x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    sigmas = plan_for(schedule, name, 5)
    noise = SeededNoise([3, 4], (4, 8, 8))
    x = x0 + noise() * float(sigmas[0])
    result = sample(get_sampler(name), constant_denoiser(x0), x, sigmas, draw_noise=noise)
    assert torch.allclose(result, x0, atol=1e-5)


def ode_error(schedule: NoiseSchedule, name: str, steps: int, data_std: float = 0.5) -> float:
    """Largest relative error against the exact probability-flow ODE solution for Gaussian data:
    x(sigma) = x(sigma0) * sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma0^2)."""
    sigmas = plan_for(schedule, name, steps)
    x = torch.linspace(-30, 30, 100)
    exact = x * data_std / math.sqrt(data_std**2 + float(sigmas[0]) ** 2)
    result = sample(get_sampler(name), gaussian_denoiser(data_std), x, sigmas)
    return float(((result - exact) / exact).abs().max())


@pytest.mark.parametrize(("name", "order"), [("Euler", 1), ("DDIM", 1), ("DPM++ 2M Karras", 2)])
def test_deterministic_samplers_converge_with_their_order(schedule, name, order):
    """Doubling the steps divides the error by about 2 (first order) or 4 (DPM++ 2M, second order)."""
    coarse, fine = ode_error(schedule, name, 10), ode_error(schedule, name, 20)
    assert fine / coarse == pytest.approx(0.5**order, abs=0.1)
    assert ode_error(schedule, name, 80) < 0.04


def test_euler_ancestral_samples_the_data_distribution(schedule):
    """Ancestral steps draw fresh noise: from N(0, s^2 + sigma0^2) they end near N(0, s^2), closer
    with more steps (first order)."""
    data_std = 0.5

    def final_std(steps: int) -> float:
        sigmas = plan_for(schedule, "Euler a", steps)
        noise = SeededNoise([7], (20000,))
        x = noise() * math.sqrt(data_std**2 + float(sigmas[0]) ** 2)
        result = sample(get_sampler("Euler a"), gaussian_denoiser(data_std), x, sigmas, draw_noise=noise)
        return float(result.std())

    assert abs(final_std(300) - data_std) < 0.05 * data_std < abs(final_std(30) - data_std)


def test_euler_ancestral_draws_noise_at_every_step_but_the_last(schedule):
    draws = []
    noise = SeededNoise([1], (4,))

    def counting_noise():
        draws.append(1)
        return noise()

    sigmas = plan_for(schedule, "Euler a", 6)
    x = torch.zeros(1, 4)
    sample(get_sampler("Euler a"), constant_denoiser(x), x, sigmas, draw_noise=counting_noise)
    assert len(draws) == 5


def test_ddim_step_matches_the_ddim_formula(schedule):
    """One DDIM (eta 0) step in DDPM variables: x_prev = sqrt(a') x0 + sqrt(1 - a') eps."""
    alphas = noise_schedule(FULL)["alphas_cumprod"].double()
    t, t_prev = 901, 851
    x0, eps = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    x_t = alphas[t].sqrt() * x0 + (1 - alphas[t]).sqrt() * eps
    expected = alphas[t_prev].sqrt() * x0 + (1 - alphas[t_prev]).sqrt() * eps

    def sigma(step: int) -> float:
        return float(((1 - alphas[step]) / alphas[step]).sqrt())

    sigmas = torch.tensor([sigma(t), sigma(t_prev), 0.0], dtype=torch.float64)
    # sigma form: x = x_t / sqrt(a); the estimate of x0 from eps is exact here
    x = x_t / alphas[t].sqrt()
    stepped = get_sampler("DDIM").update(StepInput(x, x0, None, sigmas, 0, None))
    assert torch.allclose(stepped * alphas[t_prev].sqrt(), expected, atol=1e-10)


# -- the loop ------------------------------------------------------------------------------------


def test_progress_reports_each_step(schedule):
    calls = []
    sigmas = plan_for(schedule, "Euler", 4)
    sample(get_sampler("Euler"), constant_denoiser(torch.zeros(1)), torch.ones(1), sigmas,
           progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_cancel_stops_between_steps(schedule):
    cancel = threading.Event()
    evaluations = []

    def denoiser(x, sigma):
        evaluations.append(sigma)
        return torch.zeros_like(x)

    def progress(done, total):
        if done == 2:
            cancel.set()

    with pytest.raises(GenerationCancelled):
        sample(get_sampler("Euler"), denoiser, torch.ones(1), plan_for(schedule, "Euler", 10),
               progress=progress, cancel=cancel)
    assert len(evaluations) == 2


# -- names and noise -------------------------------------------------------------------------------


def test_sampler_names_are_a1111s():
    assert set(SAMPLERS) == {"DDIM", "Euler a", "Euler", "DPM++ 2M Karras"}
    assert DEFAULT_SAMPLER in SAMPLERS
    assert get_sampler("euler A").name == "Euler a"
    with pytest.raises(SettingsError, match="DPM\\+\\+ 2M Karras"):
        get_sampler("LMS")


def test_seeded_noise_is_per_image():
    """Image i of a batch gets the same noise, first draw and later ones, as a run with seed + i."""
    batch = SeededNoise([10, 11, 12], (4, 8, 8))
    single = SeededNoise([11], (4, 8, 8))
    for _ in range(3):
        assert torch.equal(batch()[1], single()[0])
    again, other = SeededNoise([10], (4, 8, 8)), SeededNoise([13], (4, 8, 8))
    first = again()
    assert torch.equal(first, SeededNoise([10], (4, 8, 8))())
    assert not torch.equal(first, other())
