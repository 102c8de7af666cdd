"""Every sampler and schedule type against what A1111 v1.10.1's own sampler code returns.

`tests/data/a1111_samplers.npz` was written by `tests/support/a1111_sampler_refs.py`, which runs
k-diffusion (ab527a9a), A1111's ImageRNG, Brownian-tree seeding, CFG combine and DDIM on the
tiny noise predictor of `tests/support/tiny_eps.py`. Here the engine's own plan, noise, denoiser
and samplers run on the same predictor, weights, prompts, depth, init latent and seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support.tiny_eps import tiny_eps

from lib_depth2img.engine.denoiser import GuidedDenoiser
from lib_depth2img.engine.samplers import ImageNoise, choose_sampler, plan_for, run_sampler
from lib_depth2img.engine.schedule import NoiseSchedule

REFERENCE = Path(__file__).parent / "data/a1111_samplers.npz"
DATA = np.load(REFERENCE)
CASES = json.loads(str(DATA["meta"]))
WEIGHTS = {key.removeprefix("weight_"): torch.from_numpy(DATA[key]) for key in DATA.files if key.startswith("weight_")}


class TinyModel:
    def predict_noise(self, latents, timesteps, context, depth):
        return tiny_eps(WEIGHTS, latents, timesteps, context, depth)


def engine_latents(case: dict) -> torch.Tensor:
    choice = choose_sampler(case["sampler"], case["schedule_type"])
    schedule = NoiseSchedule(torch.from_numpy(DATA["alphas_cumprod"]))
    seeds = case["seeds"]
    batch = len(seeds)
    init = torch.from_numpy(DATA["init_latent"]).expand(batch, -1, -1, -1)
    keep = 1 - torch.from_numpy(DATA["repaint"]) if case.get("mask") else None
    context = torch.cat([torch.from_numpy(DATA["cond"]), torch.from_numpy(DATA["uncond"])])
    depth = torch.from_numpy(DATA["depth"]).expand(batch, -1, -1, -1)
    txt2img = case["strength"] is None
    denoiser = GuidedDenoiser(
        TinyModel(), schedule, context, depth, float(DATA["cfg_scale"]),
        init_latent=None if txt2img else init, keep=keep, blend_model_input=choice.sampler.blends_model_input,
    )
    noise = ImageNoise(
        seeds, init.shape[1:], variation_seeds=case.get("subseeds"),
        variation_strength=case.get("subseed_strength", 0.0), eta_noise_seed_delta=case.get("ensd", 0),
    )
    plan = plan_for(choice, schedule, case["steps"], case["strength"])
    latents = run_sampler(choice.sampler, denoiser, plan, noise, None if txt2img else init)
    if keep is not None:
        latents = latents * (1 - keep) + init * keep
    return latents


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_engine_matches_a1111(case):
    """k-diffusion's samplers to the bit (same float32 operations, same noise); A1111's DDIM, which
    steps in DDPM variables where the engine steps in sigma form, to float32 rounding."""
    expected = torch.from_numpy(DATA[case["key"]])
    result = engine_latents(case)
    if choose_sampler(case["sampler"]).sampler.uses_timesteps:
        assert float((result - expected).abs().max()) <= 2e-6 * float(expected.abs().max())
    else:
        assert torch.equal(result, expected)


def test_references_cover_every_sampler_and_schedule_type():
    from lib_depth2img.engine.samplers import SAMPLER_NAMES, SCHEDULE_TYPES

    assert {case["sampler"] for case in CASES} == set(SAMPLER_NAMES)
    assert {case["schedule_type"] for case in CASES} == set(SCHEDULE_TYPES)
