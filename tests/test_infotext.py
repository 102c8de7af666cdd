"""The A1111 parameters text: quoting, parsing by A1111's rules, round trips and the PNG chunk."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from lib_depth2img.infotext import (
    Infotext,
    build_infotext,
    format_value,
    model_hash,
    png_info,
    quote,
    read_infotext,
    unquote,
)
from lib_depth2img.settings import Depth2imgArgs

# The example in the docstring of A1111's `parse_generation_parameters`.
A1111_EXAMPLE = (
    "girl with an artist's beret, determined, blue eyes, desert scene, computer monitors, heavy makeup, "
    "by Alphonse Mucha and Charlie Bowater, ((eyeshadow)), (coquettish), detailed, intricate\n"
    "Negative prompt: ugly, fat, obese, chubby, (((deformed))), [blurry], bad anatomy, disfigured, "
    "poorly drawn face, mutation, mutated, (extra_limb), (ugly), (poorly drawn hands), messy drawing\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b"
)


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("Euler a", "Euler a"),
        ("a, b", '"a, b"'),
        ("key: value", '"key: value"'),
        ("two\nlines", '"two\\nlines"'),
        ('say "hi", ok', '"say \\"hi\\", ok"'),
        ("ünïcode, ok", '"ünïcode, ok"'),
        (7, "7"),
    ],
)
def test_quote_like_a1111(value, written):
    assert quote(value) == written
    assert unquote(written) == str(value)


def test_unquote_leaves_non_json_alone():
    assert unquote('"not json') == '"not json'
    assert unquote('"3"x') == '"3"x'
    assert unquote("plain") == "plain"


def test_numbers_are_shown_as_a1111_shows_them():
    shown = [format_value(value) for value in (7.0, 7.5, 0.75, 1.0, 20, True)]
    assert shown == ["7", "7.5", "0.75", "1", "20", "True"]


def test_parses_a1111s_own_example():
    info = Infotext.parse(A1111_EXAMPLE)
    assert info.prompt.startswith("girl with an artist's beret") and info.prompt.endswith("intricate")
    assert info.negative_prompt.startswith("ugly, fat") and info.negative_prompt.endswith("messy drawing")
    assert info.params == {
        "Steps": "20", "Sampler": "Euler a", "CFG scale": "7", "Seed": "965400086",
        "Size": "512x512", "Model hash": "45dee52b",
    }
    assert str(info) == A1111_EXAMPLE


def test_round_trip_with_awkward_values():
    params = {
        "Steps": 4,
        "Sampler": "DPM++ 2M Karras",
        "CFG scale": 7.5,
        "Seed": 12,
        "Size": "64x64",
        "Model": "my, model: v2",
        "Denoising strength": 1.0,
        "Depth2img": True,
        "Depth2img checkpoint": 'dir\\512-depth "ema"',
        "Skipped": None,
    }
    text = build_infotext("a cat,\nin the rain: 2 lines", "ugly\nNegative-ish: blurry", params)
    info = Infotext.parse(text)
    assert info.prompt == "a cat,\nin the rain: 2 lines"
    assert info.negative_prompt == "ugly\nNegative-ish: blurry"
    expected = {k: format_value(v) for k, v in params.items() if v is not None}
    assert info.params == expected
    assert list(info.params) == list(expected)  # order kept
    assert Infotext.parse(str(info)) == info


def test_without_negative_prompt_or_parameters():
    assert build_infotext("just a prompt", "", {"Steps": 20, "Sampler": "DDIM", "Seed": 1}) == (
        "just a prompt\nSteps: 20, Sampler: DDIM, Seed: 1"
    )
    # fewer than three parameters on the last line: A1111 reads it as part of the prompt
    info = Infotext.parse("a portrait\nlighting: soft")
    assert info.prompt == "a portrait\nlighting: soft" and info.params == {}
    assert Infotext.parse("").prompt == ""


def test_depth_settings_come_back_from_the_text():
    settings = Depth2imgArgs(
        enabled=True, invert=True, far_clip=0.1, near_clip=0.8, gamma=1.5, blur=2.0, net_size=512
    )
    text = build_infotext("p", "", {"Steps": 20, "Sampler": "Euler a", "Seed": 3, **settings.to_infotext()})
    assert Depth2imgArgs.from_infotext(Infotext.parse(text).params) == settings


def test_model_hash_is_a1111_short_sha256(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"not really a model" * 1000)
    assert model_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    path.write_bytes(b"changed")  # the cache notices a changed file
    assert model_hash(path) == hashlib.sha256(b"changed").hexdigest()[:10]


@pytest.mark.parametrize("text", [A1111_EXAMPLE, "日本語のプロンプト\nSteps: 20, Sampler: Euler a, Seed: 1"])
def test_png_parameters_chunk(tmp_path, text):
    path = tmp_path / "image.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=png_info(text))
    assert read_infotext(path) == text
    raw = path.read_bytes()
    chunk = b"tEXt" if text.isascii() else b"iTXt"  # Latin-1 text goes in tEXt, the rest in iTXt
    assert chunk + b"parameters\x00" in raw
    with Image.open(io.BytesIO(raw)) as image:
        assert read_infotext(image) == text
    Image.new("RGB", (8, 8)).save(path)
    assert read_infotext(path) is None
