"""Depth2ImgPipeline end to end on a tiny random-weight checkpoint: 64x64 images, 2-4 steps."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lib_depth2img.depthmaps.values import normalize_depth
from lib_depth2img.engine import pipeline, write_demo_checkpoint
from lib_depth2img.engine.pipeline import Depth2ImgPipeline, GenerationRequest, _to_pil
from lib_depth2img.engine.samplers import SAMPLER_NAMES, GenerationCancelled, choose_sampler
from lib_depth2img.errors import SettingsError
from lib_depth2img.infotext import Infotext
from lib_depth2img.settings import Depth2imgArgs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_demo_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-depth.safetensors")


@pytest.fixture(scope="module")
def pipe(checkpoint) -> Depth2ImgPipeline:
    return Depth2ImgPipeline.from_checkpoint(checkpoint)


def noise_image(seed: int, size=(64, 64)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def init_image() -> Image.Image:
    return noise_image(0)


def request(init_image=None, **values) -> GenerationRequest:
    values.setdefault("steps", 3)
    values.setdefault("seed", 1)
    return GenerationRequest(prompt="a house", negative_prompt="blurry", init_image=init_image, **values)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"steps": 0}, r"'steps' \(Sampling steps\) must be a whole number between 1 and 150, got 0\."),
        ({"steps": 2.5}, r"'steps' \(Sampling steps\) must be a whole number between 1 and 150, got 2\.5"),
        ({"denoising_strength": 1.5}, r"'denoising_strength' \(Denoising strength\) .* between 0 and 1, got 1\.5"),
        ({"denoising_strength": -0.1}, r"'denoising_strength' .* between 0 and 1, got -0\.1"),
        ({"width": 100, "height": 64}, "Width must be a multiple of 8, got 100"),
        ({"width": 4096, "height": 64}, r"'width' \(Width\) must be a whole number between 64 and 2048, got 4096"),
        ({"batch_size": 0}, r"'batch_size' \(Batch size\) must be a whole number between 1 and 16, got 0"),
        ({"batch_size": 17}, r"'batch_size' \(Batch size\) .* got 17"),
        ({"cfg_scale": float("nan")}, r"'cfg_scale' \(CFG scale\) must be a number between 0 and 30, got nan"),
        ({"seed": -2}, r"'seed' \(Seed\) must be a whole number between -1 and 4294967295, got -2"),
        ({"sampler": "UniPC"}, "Unknown sampler"),
        ({"schedule_type": "Beta"}, "Unknown schedule type"),
        ({"rng": "NV"}, r"'rng' \(RNG source\) must be one of CPU, GPU, got 'NV'"),
        ({"variation_strength": 2.0}, r"'variation_strength' \(Variation strength\) .* between 0 and 1, got 2"),
        ({"resize_mode": 7}, r"'resize_mode' \(Resize mode\) must be one of 0 \(Just resize\), .* got 7"),
        ({"mask_blur": 65}, r"'mask_blur' \(Mask blur\) must be a whole number between 0 and 64, got 65"),
        ({"sampler": 5}, r"'sampler' \(Sampling method\) must be text, got 5"),
        ({"mask": Image.new("L", (32, 64))}, "mask is 32x64 but the init image is 64x64"),
    ],
)
def test_bad_requests_say_what_is_wrong(init_image, values, message):
    with pytest.raises(SettingsError, match=message):
        request(init_image, **values)


def test_request_values_from_text_or_whole_floats_take_the_field_type(init_image):
    job = request(init_image, steps="4", cfg_scale=5, seed=7.0, width=np.int64(64), height="64", resize_mode="1")
    assert (job.steps, job.cfg_scale, job.seed, job.width, job.height, job.resize_mode) == (4, 5.0, 7, 64, 64, 1)
    assert all(type(value) is int for value in (job.steps, job.seed, job.width, job.height, job.resize_mode))


def test_requests_without_inputs_or_with_a_tiny_image():
    with pytest.raises(SettingsError, match="init image, your own depth map"):
        GenerationRequest(prompt="x")
    with pytest.raises(SettingsError, match="A mask needs an init image"):
        GenerationRequest(depth=Depth2imgArgs(depth_image=noise_image(1)), mask=Image.new("L", (64, 64)))
    with pytest.raises(SettingsError, match="init image is 40x40, which gives a 40x40 result"):
        request(noise_image(1, (40, 40)))


def test_size_defaults_to_the_input_rounded_down_to_8():
    photo = noise_image(1, (203, 150))
    assert request(photo).size == (200, 144)
    assert request(photo, width=400).size == (400, 296)  # aspect kept, rounded to 8
    assert request(photo, height=64).size == (88, 64)
    assert request(photo, width=128, height=64).size == (128, 64)
    txt2img = GenerationRequest(depth=Depth2imgArgs(depth_image=Image.new("L", (96, 71))))
    assert txt2img.size == (96, 64) and txt2img.strength == 1.0


# -- generation ------------------------------------------------------------------------------------


def test_img2img_is_reproducible_and_seed_dependent(pipe, init_image):
    first = pipe(request(init_image, seed=7))
    again = pipe(request(init_image, seed=7))
    other = pipe(request(init_image, seed=8))
    assert first.seeds == [7] and other.seeds == [8]
    assert first.images[0].size == (64, 64) and first.images[0].mode == "RGB"
    assert np.array_equal(pixels(first.images[0]), pixels(again.images[0]))
    assert not np.array_equal(pixels(first.images[0]), pixels(other.images[0]))


@pytest.mark.parametrize("sampler", ["Euler a", "DDIM", "DPM++ SDE"])
def test_batch_image_equals_a_single_run_with_seed_plus_index(pipe, init_image, sampler, monkeypatch):
    """The sampling noise is per image; only A1111's init-image encoding draws from one generator
    for the batch (see the next test), so it is taken as the posterior mean here."""
    monkeypatch.setattr(pipeline, "init_encoding_noise", lambda seeds, size: None)
    batch = pipe(request(init_image, seed=20, batch_size=2, sampler=sampler))
    single = pipe(request(init_image, seed=21, sampler=sampler))
    assert batch.seeds == [20, 21]
    assert np.abs(pixels(batch.images[1]) - pixels(single.images[0])).max() <= 1  # batched float rounding
    assert not np.array_equal(pixels(batch.images[0]), pixels(batch.images[1]))


def test_init_image_is_encoded_to_a1111s_posterior_sample(pipe, init_image, monkeypatch):
    """A1111 draws the posterior noise from torch's global generator, left seeded with the previous
    job's last seed: a re-run of the same batch draws from its own last seed, one draw per image."""
    noise = pipeline.init_encoding_noise([20, 21], (8, 8))
    generator = torch.Generator().manual_seed(21)
    assert torch.equal(noise, torch.cat([torch.randn((1, 4, 8, 8), generator=generator) for _ in range(2)]))
    sampled = pipe(request(init_image, seed=21, steps=1, denoising_strength=0.0))
    monkeypatch.setattr(pipeline, "init_encoding_noise", lambda seeds, size: None)
    from_mean = pipe(request(init_image, seed=21, steps=1, denoising_strength=0.0))
    assert not np.array_equal(pixels(sampled.images[0]), pixels(from_mean.images[0]))


@pytest.mark.parametrize(("cfg_scale", "unet_batch"), [(7.0, 4), (1.0, 2)])
def test_guidance_runs_cond_and_uncond_in_one_unet_call(pipe, init_image, monkeypatch, cfg_scale, unet_batch):
    calls = []
    predict = pipe.model.predict_noise

    def spy(latents, timesteps, context, depth):
        calls.append((latents.shape[0], context.shape[0], depth.shape))
        return predict(latents, timesteps, context, depth)

    monkeypatch.setattr(pipe.model, "predict_noise", spy)
    pipe(request(init_image, batch_size=2, cfg_scale=cfg_scale, steps=4, denoising_strength=0.5))
    # A1111: t_enc = int(0.5 * 4) = 2, so 3 steps, one UNet call each
    assert calls == [(unet_batch, unet_batch, (unet_batch, 1, 8, 8))] * 3


def test_strength_decides_how_many_steps_run(pipe, init_image):
    progress = []
    pipe(request(init_image, steps=4, denoising_strength=0.5), progress=lambda *step: progress.append(step))
    assert progress == [(1, 3), (2, 3), (3, 3)]


def test_inpaint_keeps_the_init_image_outside_the_mask(pipe, init_image):
    mask = Image.new("L", init_image.size, 0)
    mask.paste(255, (24, 24, 40, 40))
    result = pipe(request(init_image, mask=mask, mask_blur=2, denoising_strength=1.0, batch_size=2))
    outside = np.ones((64, 64), dtype=bool)
    outside[16:48, 16:48] = False  # the mask, its blur and A1111's overlay dilation stay inside this
    for image in result.images:
        assert np.array_equal(pixels(image)[outside], pixels(init_image)[outside])
        assert (pixels(image)[28:36, 28:36] != pixels(init_image)[28:36, 28:36]).any()
    assert "Mask blur: 2" in result.infotexts[0]


def test_empty_mask_gives_back_the_init_image(pipe, init_image):
    result = pipe(request(init_image, mask=Image.new("L", init_image.size, 0), denoising_strength=1.0))
    assert np.array_equal(pixels(result.images[0]), pixels(init_image))


def test_transparent_mask_uses_its_alpha(pipe, init_image):
    mask = Image.new("RGBA", init_image.size, (0, 0, 0, 0))
    mask.paste((255, 255, 255, 255), (0, 0, 16, 64))  # opaque strip on the left = repaint
    result = pipe(request(init_image, mask=mask, mask_blur=0, denoising_strength=1.0))
    assert np.array_equal(pixels(result.images[0])[:, 24:], pixels(init_image)[:, 24:])
    assert not np.array_equal(pixels(result.images[0])[:, :16], pixels(init_image)[:, :16])


class NoEstimator:
    """Fails when asked for depth: proves that an own depth map is used as it is."""

    name, net_size, weights_id = "none", 384, "none"

    def to(self, device):
        return self

    def estimate(self, image, net_size=None):
        raise AssertionError("the estimator must not run when a depth map is given")


def gradient_depth(size=(64, 64)) -> Image.Image:
    return Image.fromarray(np.tile(np.linspace(0, 255, size[0]).astype(np.uint8), (size[1], 1)))


def test_own_depth_map_replaces_the_estimate(pipe, init_image):
    own = gradient_depth()
    own_pipe = Depth2ImgPipeline(pipe.model, NoEstimator())
    result = own_pipe(request(init_image, depth=Depth2imgArgs(enabled=True, depth_image=own)))
    assert np.allclose(result.depth, np.asarray(own) / 255, atol=1e-6)
    assert result.depth_preview.mode == "L"
    assert np.array_equal(np.asarray(result.depth_preview), np.asarray(own))


def test_txt2img_from_a_depth_map_alone(pipe):
    own_pipe = Depth2ImgPipeline(pipe.model, NoEstimator(), checkpoint_path=pipe.checkpoint_path)
    depth = Depth2imgArgs(enabled=True, depth_image=gradient_depth((64, 71)), invert=True)
    result = own_pipe(GenerationRequest(prompt="room", depth=depth, steps=2, seed=3, denoising_strength=0.3))
    assert result.images[0].size == (64, 64)  # the depth map's size rounded down to 8
    assert np.allclose(result.depth[:, 0], 1.0) and np.allclose(result.depth[:, -1], 0.0)  # inverted
    params = Infotext.parse(result.infotexts[0]).params
    assert params["Denoising strength"] == "1" and params["Depth2img invert"] == "True"


def test_one_depth_range_for_a_sequence(pipe):
    frames = [noise_image(10), noise_image(11)]
    settings = Depth2imgArgs(enabled=True, net_size=64)
    raws = [pipe.estimators["embedded"].estimate(frame, net_size=64) for frame in frames]
    low, high = pipe.depth_range(request(frame, depth=settings) for frame in frames)
    assert (low, high) == (min(float(r.min()) for r in raws), max(float(r.max()) for r in raws))
    per_image = pipe(request(frames[1], steps=1, depth=settings)).depth
    in_sequence = pipe(request(frames[1], steps=1, depth=settings, depth_range=(low, high))).depth
    assert np.allclose(per_image, normalize_depth(raws[1]), atol=1e-6)
    assert np.allclose(in_sequence, (raws[1] - low) / (high - low), atol=1e-6)
    assert np.ptp(in_sequence) < np.ptp(per_image)


def test_cancel_stops_the_job(pipe, init_image):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(GenerationCancelled):
        pipe(request(init_image), cancel=cancel)


def test_estimator_visits_the_device_only_to_estimate(pipe, init_image, monkeypatch):
    events = []

    class Recording:
        name, net_size, weights_id = "recording", 384, "recording"

        def to(self, device):
            events.append(("to", str(device)))
            return self

        def checked_net_size(self, net_size):
            return net_size or self.net_size

        def estimate(self, image, net_size=None, progress=None):
            events.append(("estimate",))
            return np.asarray(image.convert("L"), dtype=np.float32)

    monkeypatch.setattr(Depth2ImgPipeline, "offloads_estimators", property(lambda self: True))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: events.append(("empty_cache",)))
    offloading = Depth2ImgPipeline(pipe.model, Recording())
    assert events == [("to", "cpu")]  # waits on the CPU from the start
    offloading(request(init_image, steps=1))
    assert events[1:] == [("to", "cpu"), ("estimate",), ("to", "cpu"), ("empty_cache",)]


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_every_sampler_makes_an_image_and_says_so(pipe, init_image, sampler):
    result = pipe(request(init_image, sampler=sampler, steps=2, denoising_strength=0.9))
    params = Infotext.parse(result.infotexts[0]).params
    assert params["Sampler"] == sampler and params["RNG"] == "CPU"
    assert params["Schedule type"] == choose_sampler(sampler).infotext_schedule_type
    assert np.ptp(pixels(result.images[0])) > 0


def test_legacy_sampler_name_sets_the_schedule(pipe, init_image):
    legacy = pipe(request(init_image, sampler="DPM++ 2M Exponential"))
    named = pipe(request(init_image, sampler="DPM++ 2M", schedule_type="Exponential"))
    karras = pipe(request(init_image, sampler="DPM++ 2M"))
    assert np.array_equal(pixels(legacy.images[0]), pixels(named.images[0]))
    assert not np.array_equal(pixels(legacy.images[0]), pixels(karras.images[0]))
    assert "Sampler: DPM++ 2M, Schedule type: Exponential" in legacy.infotexts[0]


def test_variation_seed_keeps_the_seed_and_counts_the_variation_seed(pipe, init_image, monkeypatch):
    monkeypatch.setattr(pipeline, "init_encoding_noise", lambda seeds, size: None)  # per image, as above
    job = request(init_image, seed=3, variation_seed=50, variation_strength=0.4, batch_size=2)
    result = pipe(job)
    assert result.seeds == [3, 3]
    params = [Infotext.parse(text).params for text in result.infotexts]
    assert [(p["Seed"], p["Variation seed"], p["Variation seed strength"]) for p in params] == [
        ("3", "50", "0.4"), ("3", "51", "0.4")]
    single = pipe(request(init_image, seed=3, variation_seed=51, variation_strength=0.4))
    assert np.abs(pixels(result.images[1]) - pixels(single.images[0])).max() <= 1
    plain = pipe(request(init_image, seed=3))
    assert not np.array_equal(pixels(result.images[0]), pixels(plain.images[0]))


def test_eta_noise_seed_delta_changes_only_ancestral_samplers(pipe, init_image):
    for sampler, changes in (("Euler a", True), ("Euler", False)):
        plain = pipe(request(init_image, sampler=sampler, seed=9))
        delta = pipe(request(init_image, sampler=sampler, seed=9, eta_noise_seed_delta=31337))
        assert (not np.array_equal(pixels(plain.images[0]), pixels(delta.images[0]))) == changes
        assert ("ENSD: 31337" in delta.infotexts[0]) == changes


def test_pixels_are_truncated_as_a1111_makes_them():
    """A1111: clamp((x + 1) / 2, 0, 1) * 255, then astype(uint8): 254.9 becomes 254, not 255."""
    values = torch.tensor([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    (image,) = _to_pil(values * 1.0)
    assert np.asarray(image)[0, :, 0].tolist() == [0, 0, 127, 254, 255, 255]


def test_infotext_of_each_image(pipe, init_image, checkpoint):
    job = request(init_image, seed=40, batch_size=2, sampler="Euler a", cfg_scale=5.5, denoising_strength=0.6)
    result = pipe(job)
    first, second = (Infotext.parse(text) for text in result.infotexts)
    assert first.prompt == "a house" and first.negative_prompt == "blurry"
    assert first.params["Seed"] == "40" and second.params["Seed"] == "41"
    expected = {"Steps": "3", "Sampler": "Euler a", "CFG scale": "5.5", "Size": "64x64",
                "Denoising strength": "0.6"}
    assert {key: first.params[key] for key in expected} == expected
    assert first.params["Model hash"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:10]
    assert first.params["Model"] == "tiny-depth"
    assert Depth2imgArgs.from_infotext(first.params) == Depth2imgArgs(enabled=True)
