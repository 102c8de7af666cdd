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
    SCHEDULE_TYPES,
    GenerationCancelled,
    ImageNoise,
    SamplerNoise,
    Step,
    choose_sampler,
    get_sampler,
    plan_for,
    sample,
)
from lib_depth2img.engine.schedule import (
    NoiseSchedule,
    ddim_timesteps,
    img2img_encode_steps,
    karras_sigmas,
    sigma_plan,
    uniform_sigmas,
)
from lib_depth2img.errors import SettingsError

K_SAMPLERS = [name for name in SAMPLER_NAMES if not get_sampler(name).uses_timesteps]


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    return NoiseSchedule(noise_schedule(FULL)["alphas_cumprod"])


def plan_for_name(schedule: NoiseSchedule, name: str, steps: int, strength: float | None = None):
    return plan_for(choose_sampler(name), schedule, steps, strength)


def noise_for(seeds, shape, sampler_name: str, plan) -> SamplerNoise:
    from lib_depth2img.engine.samplers import BrownianNoise

    images = ImageNoise(seeds, shape)
    brownian = BrownianNoise(seeds, shape, plan.brownian_range) if get_sampler(sampler_name).noise == "brownian" else None
    return SamplerNoise(images, brownian)


# -- schedule ------------------------------------------------------------------------------------


def test_sd2_sigma_range(schedule):
    # the values A1111 / k-diffusion show for SD's scaled-linear schedule
    assert schedule.sigma_min == pytest.approx(0.0292, abs=1e-4)
    assert schedule.sigma_max == pytest.approx(14.6146, abs=1e-3)


def test_timestep_sigma_round_trip(schedule):
    t = torch.tensor([0.0, 0.5, 1.0, 123.25, 500.0, 998.5, 999.0])
    assert torch.allclose(schedule.sigma_to_t(schedule.t_to_sigma(t)), t, atol=1e-3)
    # a training sigma gives its timestep exactly; sigmas outside the trained range clamp to its ends
    assert schedule.sigma_to_t(schedule.sigmas[[1, 251, 999]]).tolist() == [1.0, 251.0, 999.0]
    assert schedule.sigma_to_t(torch.tensor([1e-4, 100.0])).tolist() == [0.0, 999.0]


@pytest.mark.parametrize("name", SAMPLER_NAMES)
@pytest.mark.parametrize("schedule_type", SCHEDULE_TYPES)
@pytest.mark.parametrize("steps", [1, 3, 20])
def test_every_plan_descends(schedule, name, schedule_type, steps):
    plan = plan_for(choose_sampler(name, schedule_type), schedule, steps, None)
    sigmas = plan.sigmas
    assert sigmas.dtype == torch.float32
    assert bool((sigmas[:-1] > sigmas[1:]).all())
    if get_sampler(name).uses_timesteps:  # A1111's DDIM ends on its first timestep, not at 0
        assert len(sigmas) == len(ddim_timesteps(steps)) and float(sigmas[-1]) == float(schedule.sigmas[1])
    else:
        assert len(sigmas) == steps + 1 and sigmas[-1] == 0


def test_uniform_plan_is_k_diffusion_get_sigmas(schedule):
    # t evenly spaced from 999 down to 0, then a trailing 0
    sigmas = uniform_sigmas(schedule, 4)
    t = schedule.sigma_to_t(sigmas[:-1])
    assert torch.allclose(t, torch.tensor([999.0, 666.0, 333.0, 0.0]), atol=1e-2)
    assert float(sigmas[0]) == pytest.approx(schedule.sigma_max, rel=1e-6)


def test_karras_sigmas_endpoints_and_rho_spacing(schedule):
    sigmas = karras_sigmas(schedule, 10)
    assert float(sigmas[0]) == pytest.approx(schedule.sigma_max, rel=1e-6)
    assert float(sigmas[-2]) == pytest.approx(schedule.sigma_min, rel=1e-5)
    roots = sigmas[:-1].double() ** (1 / 7)  # evenly spaced in sigma^(1/rho)
    assert torch.allclose(roots.diff(), roots.diff()[:1].expand(9), rtol=1e-4)


def test_automatic_means_the_samplers_own_schedule():
    assert choose_sampler("DPM++ 2M").schedule == "Karras"
    assert choose_sampler("DPM++ SDE").schedule == "Karras"
    assert choose_sampler("DPM++ 2M SDE").schedule == "Exponential"
    assert choose_sampler("Euler a").schedule == "Uniform"
    assert choose_sampler("Euler", "Karras").schedule == "Karras"
    assert choose_sampler("DDIM", "Karras").schedule is None  # A1111's DDIM ignores it


@pytest.mark.parametrize(
    ("steps", "timesteps"), [(20, list(range(1, 1000, 50))), (3, [1, 334, 667, 999]), (1, [1])]
)
def test_ddim_timesteps_are_a1111s(steps, timesteps):
    assert ddim_timesteps(steps).tolist() == timesteps


def test_ddim_img2img_labels_the_first_call_one_step_below_the_noise(schedule):
    """A1111: 6 steps (1, 167, 333, 499, 665, 831) at 0.75 noise the init latent to 665 (t_enc 4),
    then call the model at 499, 333, 167 and return the DDPM latent at 1."""
    plan = plan_for_name(schedule, "DDIM", 6, 0.75)
    assert schedule.sigma_to_t(plan.sigmas).tolist() == [499.0, 333.0, 167.0, 1.0]
    alphas = schedule.alphas_cumprod.double()
    init, noise = torch.ones(1), torch.full((1,), 2.0)
    started = plan.start(noise, init).double() * alphas[499].sqrt()  # the DDPM latent at the label
    expected = alphas[665].sqrt() * init + (1 - alphas[665]).sqrt() * noise
    assert float(started) == pytest.approx(float(expected), rel=1e-6)
    assert plan.end_scale == pytest.approx(float(alphas[1].sqrt()), rel=1e-6)


@pytest.mark.parametrize(
    ("steps", "strength", "t_enc"),
    [(20, 1.0, 19), (20, 0.75, 15), (20, 0.5, 10), (10, 0.3, 3), (10, 0.7, 7), (20, 0.0, 0), (1, 1.0, 0),
     (7, 0.999, 6)],
)
def test_img2img_steps_follow_a1111(schedule, steps, strength, t_enc):
    """A1111 `setup_img2img_steps` + `sample_img2img`: t_enc = int(min(s, 0.999) * n) and the
    sampler runs the tail sigmas[n - t_enc - 1:], i.e. t_enc + 1 steps from that noise level."""
    assert img2img_encode_steps(steps, strength) == t_enc
    full = uniform_sigmas(schedule, steps)
    plan = sigma_plan(full, strength)
    assert plan.model_steps == t_enc + 1
    assert torch.equal(plan.sigmas, full[steps - t_enc - 1:])
    assert plan.noise_scale == float(full[steps - t_enc - 1])
    # Brownian noise spans the whole schedule, as A1111 builds its trees
    assert plan.brownian_range[1] == full[0] and plan.brownian_range[0] == full[-2]


def test_full_strength_starts_at_the_largest_sigma(schedule):
    for name in K_SAMPLERS:
        assert torch.equal(plan_for_name(schedule, name, 8, 1.0).sigmas, plan_for_name(schedule, name, 8).sigmas)


# -- update rules against closed forms -------------------------------------------------------------


def constant_denoiser(x0: torch.Tensor):
    """A perfect denoiser for data that is always x0."""
    return lambda x, sigma: x0.clone()


def gaussian_denoiser(data_std: float):
    """The exact denoiser E[x0 | x] for data x0 ~ N(0, s^2): x * s^2 / (s^2 + sigma^2)."""
    return lambda x, sigma: x * data_std**2 / (data_std**2 + sigma**2)


@pytest.mark.parametrize("name", K_SAMPLERS)
def test_every_sampler_lands_on_a_known_x0(schedule, name):
    x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    plan = plan_for_name(schedule, name, 5)
    noise = noise_for([3, 4], (4, 8, 8), name, plan)
    x = plan.start(noise.fresh(), x0)
    result = sample(get_sampler(name), constant_denoiser(x0), x, plan.sigmas, noise=noise)
    assert torch.allclose(result, x0, atol=1e-5)


def ode_error(schedule: NoiseSchedule, name: str, steps: int, data_std: float = 0.5) -> float:
    """Largest relative error against the exact probability-flow ODE solution for Gaussian data:
    x(sigma) = x(sigma0) * sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma0^2)."""
    sigmas = plan_for_name(schedule, name, steps).sigmas
    x = torch.linspace(-30, 30, 100)
    exact = x * data_std / math.sqrt(data_std**2 + float(sigmas[0]) ** 2)
    result = sample(get_sampler(name), gaussian_denoiser(data_std), x, sigmas)
    return float(((result - exact) / exact).abs().max())


@pytest.mark.parametrize(("name", "order"), [("Euler", 1), ("Heun", 2), ("DPM++ 2M", 2)])
def test_deterministic_samplers_converge_with_their_order(schedule, name, order):
    """Doubling the steps divides the error by about 2 (first order) or 4 (second order)."""
    coarse, fine = ode_error(schedule, name, 10), ode_error(schedule, name, 20)
    assert fine / coarse == pytest.approx(0.5**order, abs=0.1)
    assert ode_error(schedule, name, 80) < 0.04


def test_lms_beats_euler_at_the_same_steps(schedule):
    assert ode_error(schedule, "LMS", 20) < ode_error(schedule, "Euler", 20) / 4


@pytest.mark.parametrize("name", ["Euler a", "DPM++ SDE", "DPM++ 2M SDE"])
def test_stochastic_samplers_sample_the_data_distribution(schedule, name):
    """Fresh noise at each step: from N(0, s^2 + sigma0^2) they end near N(0, s^2)."""
    data_std = 0.5
    plan = plan_for_name(schedule, name, 60)
    noise = noise_for([7], (20000,), name, plan)
    x = noise.fresh() * math.sqrt(data_std**2 + float(plan.sigmas[0]) ** 2)
    result = sample(get_sampler(name), gaussian_denoiser(data_std), x, plan.sigmas, noise=noise)
    assert abs(float(result.std()) - data_std) < 0.1 * data_std


def test_euler_ancestral_draws_noise_at_every_step_but_the_last(schedule):
    plan = plan_for_name(schedule, "Euler a", 6)
    noise = noise_for([1], (4,), "Euler a", plan)
    draws = []
    fresh = noise.fresh
    noise.fresh = lambda: draws.append(1) or fresh()
    x = torch.zeros(1, 4)
    sample(get_sampler("Euler a"), constant_denoiser(x), x, plan.sigmas, noise=noise)
    assert len(draws) == 5


def test_ddim_step_matches_the_ddim_formula(schedule):
    """One DDIM (eta 0) step in DDPM variables: x_prev = sqrt(a') x0 + sqrt(1 - a') eps."""
    alphas = noise_schedule(FULL)["alphas_cumprod"].double()
    t, t_prev = 901, 851
    x0, eps = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    x_t = alphas[t].sqrt() * x0 + (1 - alphas[t]).sqrt() * eps
    expected = alphas[t_prev].sqrt() * x0 + (1 - alphas[t_prev]).sqrt() * eps
    sigmas = ((1 - alphas[[t, t_prev]]) / alphas[[t, t_prev]]).sqrt()
    # sigma form: x = x_t / sqrt(a); the estimate of x0 from eps is exact here
    x = x_t / alphas[t].sqrt()
    stepped = get_sampler("DDIM").update(Step(x, x0, sigmas, 0, constant_denoiser(x0), None))
    assert torch.allclose(stepped * alphas[t_prev].sqrt(), expected, atol=1e-10)


# -- the loop ------------------------------------------------------------------------------------


def test_progress_reports_each_step(schedule):
    calls = []
    sample(get_sampler("Euler"), constant_denoiser(torch.zeros(1)), torch.ones(1),
           plan_for_name(schedule, "Euler", 4).sigmas, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_heun_evaluates_twice_per_step_but_the_last(schedule):
    evaluations = []

    def denoiser(x, sigma):
        evaluations.append(float(sigma))
        return torch.zeros_like(x)

    sample(get_sampler("Heun"), denoiser, torch.ones(1), plan_for_name(schedule, "Heun", 4).sigmas)
    assert len(evaluations) == 2 * 4 - 1


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
        sample(get_sampler("Euler"), denoiser, torch.ones(1), plan_for_name(schedule, "Euler", 10).sigmas,
               progress=progress, cancel=cancel)
    assert len(evaluations) == 2


# -- names and noise -------------------------------------------------------------------------------


def test_sampler_names_are_a1111s():
    assert set(SAMPLERS) == {"DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "Euler a", "Euler", "LMS", "Heun", "DDIM"}
    assert SCHEDULE_TYPES == ("Automatic", "Uniform", "Karras", "Exponential")
    assert DEFAULT_SAMPLER == "DPM++ 2M"
    assert get_sampler("euler A").name == "Euler a"
    assert get_sampler("k_dpmpp_2m_sde").name == "DPM++ 2M SDE"
    with pytest.raises(SettingsError, match="Unknown sampler 'UniPC'"):
        get_sampler("UniPC")
    with pytest.raises(SettingsError, match="Unknown schedule type 'Beta'"):
        choose_sampler("Euler", "Beta")


@pytest.mark.parametrize(
    ("name", "sampler", "schedule_type"),
    [("DPM++ 2M Karras", "DPM++ 2M", "Karras"), ("DPM++ 2M SDE Exponential", "DPM++ 2M SDE", "Exponential"),
     ("Euler a", "Euler a", "Automatic"), ("euler karras", "Euler", "Karras")],
)
def test_legacy_names_with_a_schedule_keep_working(name, sampler, schedule_type):
    choice = choose_sampler(name)
    assert (choice.sampler.name, choice.schedule_type) == (sampler, schedule_type)


@pytest.mark.parametrize(
    ("sampler", "schedule_type", "written"),
    [("DPM++ 2M", "Automatic", "Karras"), ("DPM++ 2M SDE", "Automatic", "Exponential"),
     ("Euler", "Automatic", "Automatic"), ("Euler", "Uniform", "Uniform"), ("Euler a", "Karras", "Karras"),
     ("DDIM", "Automatic", "Automatic")],
)
def test_schedule_type_written_as_a1111_writes_it(sampler, schedule_type, written):
    assert choose_sampler(sampler, schedule_type).infotext_schedule_type == written


def test_image_noise_is_per_image():
    """Image i of a batch gets the same noise, first draw and later ones, as a run with seed + i."""
    batch = ImageNoise([10, 11, 12], (4, 8, 8))
    single = ImageNoise([11], (4, 8, 8))
    for _ in range(3):
        assert torch.equal(batch.fresh()[1], single.fresh()[0])
    first = ImageNoise([10], (4, 8, 8)).fresh()
    assert torch.equal(first, torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(10))[None])
    assert not torch.equal(first, ImageNoise([13], (4, 8, 8)).fresh())


def test_eta_noise_seed_delta_reseeds_only_the_step_noise():
    plain, delta = ImageNoise([5], (4, 8, 8)), ImageNoise([5], (4, 8, 8), eta_noise_seed_delta=31337)
    assert torch.equal(plain.fresh(), delta.fresh())
    step = delta.fresh()
    assert torch.equal(step, torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(5 + 31337))[None])


def test_variation_strength_moves_from_the_seed_to_the_variation_seed():
    shape = (4, 64, 64)

    def first(strength: float) -> torch.Tensor:
        return ImageNoise([1], shape, variation_seeds=[2], variation_strength=strength).fresh()

    seed_noise, variation_noise = first(0.0), ImageNoise([2], shape).fresh()
    assert torch.equal(seed_noise, ImageNoise([1], shape).fresh())
    assert torch.allclose(first(1.0), variation_noise, atol=1e-5)
    halfway = first(0.5)
    assert not torch.allclose(halfway, seed_noise) and not torch.allclose(halfway, variation_noise)
    # slerp keeps unit variance, where a linear mix of two independent noises would shrink it to 0.71
    assert abs(float(halfway.std()) - 1) < 0.05
