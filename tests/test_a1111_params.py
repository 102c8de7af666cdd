"""Reading an A1111 PNG's parameters for `generate --params-from`: what maps, what is named."""

from __future__ import annotations

import pytest

from lib_depth2img.cli.a1111_params import read_parameters
from lib_depth2img.errors import SettingsError
from lib_depth2img.settings import Depth2imgArgs

A1111_INFOTEXT = (
    "a room, at night\n"
    "Negative prompt: blurry\n"
    "Steps: 4, Sampler: DPM++ 2M SDE, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 256x192, "
    "Model hash: 0123456789, Model: 512-depth-ema, Variation seed: 99, Variation seed strength: 0.3, "
    "Denoising strength: 0.75, ENSD: 31337, RNG: CPU, Depth2img: True, Depth2img estimator: embedded, "
    "Depth2img gamma: 1.5, Depth2img invert: True, Version: v1.10.1"
)


def test_every_entry_the_engine_honours_is_read():
    params = read_parameters(A1111_INFOTEXT, checkpoint_hash="0123456789")
    assert params.not_honoured == []
    assert params.values == {
        "prompt": "a room, at night", "negative_prompt": "blurry", "steps": 4, "sampler": "DPM++ 2M SDE",
        "schedule_type": "Karras", "cfg_scale": 7.0, "seed": 1234, "width": 256, "height": 192,
        "variation_seed": 99, "variation_strength": 0.3, "denoising_strength": 0.75,
        "eta_noise_seed_delta": 31337, "rng": "CPU",
    }
    assert params.depth == Depth2imgArgs(enabled=True, gamma=1.5, invert=True)


def test_what_the_engine_cannot_honour_is_named():
    text = (
        "a (red:1.3) house <lora:film:0.8>\n"
        "Steps: 20, Sampler: UniPC, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: aaaaaaaaaa, "
        "Model: other, Hires upscale: 2, Hires steps: 10, Refiner: sdxl_refiner, Lora hashes: \"film: abc\", "
        "Clip skip: 2, Eta: 1, Face restoration: CodeFormer, RNG: NV"
    )
    params = read_parameters(text, checkpoint_hash="0123456789")
    named = "\n".join(params.not_honoured)
    for entry in ("Hires upscale: 2", "Hires steps: 10", "Refiner: sdxl_refiner", "Lora hashes: film: abc",
                  "Clip skip: 2", "Face restoration: CodeFormer", "RNG: NV", ("another model: the image was "
                  "made with other [aaaaaaaaaa]"), "the prompt uses A1111 prompt syntax"):
        assert entry in named
    assert "Eta: 1" not in named  # A1111's default, which the engine does
    assert "rng" not in params.values
    assert params.values["sampler"] == "UniPC"  # the request names an unknown sampler itself


def test_a_native_a1111_image_has_no_depth_settings_and_legacy_sampler_names_pass_through():
    params = read_parameters("a room\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 5, Size: 64x64")
    assert params.depth is None and params.not_honoured == []
    assert params.values["sampler"] == "DPM++ 2M Karras"


def test_escaped_parentheses_are_plain_text():
    assert read_parameters("a \\(house\\)\nSteps: 2, CFG scale: 7, Seed: 5").not_honoured == []


def test_a_malformed_number_says_which_entry():
    with pytest.raises(SettingsError, match="'Steps: many'"):
        read_parameters("a room\nSteps: many, CFG scale: 7, Seed: 5")
