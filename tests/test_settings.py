"""The settings model: positional UI args, API dicts, infotext, bounds and messages."""

from __future__ import annotations

import dataclasses

import pytest
from PIL import Image

from lib_depth2img.errors import SettingsError
from lib_depth2img.settings import EMBEDDED_ESTIMATOR, Depth2imgArgs, DepthAdjustments

FIELD_NAMES = [f.name for f in dataclasses.fields(Depth2imgArgs)]


def test_defaults_are_off_and_neutral():
    args = Depth2imgArgs.from_values(None)
    assert args == Depth2imgArgs()
    assert not args.enabled and args.estimator == EMBEDDED_ESTIMATOR and args.net_size == 0
    assert args.adjustments == DepthAdjustments()


def test_positional_args_follow_the_field_order():
    args = Depth2imgArgs.from_values([True, "512-depth-ema.ckpt", "dpt_large", 512])
    assert (args.enabled, args.checkpoint, args.estimator, args.net_size) == (
        True,
        "512-depth-ema.ckpt",
        "dpt_large",
        512,
    )
    assert args.gamma == 1.0  # the rest keep their defaults


def test_api_dicts_are_accepted_alone_or_as_the_only_positional_arg():
    values = {"enabled": True, "invert": "true", "gamma": "2"}
    assert Depth2imgArgs.from_values(values) == Depth2imgArgs.from_values([values])
    assert Depth2imgArgs.from_values(values).adjustments == DepthAdjustments(invert=True, gamma=2.0)


def test_too_many_positional_args_names_them():
    with pytest.raises(SettingsError, match=rf"at most {len(FIELD_NAMES)} args \(enabled, checkpoint"):
        Depth2imgArgs.from_values([False] * (len(FIELD_NAMES) + 1))


def test_unknown_settings_are_listed_with_the_known_ones():
    with pytest.raises(
        SettingsError, match=r"unknown setting\(s\) brightness, zoom; known: enabled, checkpoint"
    ):
        Depth2imgArgs.from_values({"zoom": 2, "brightness": 1})


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("gamma", 0.0, r"'gamma' \(Gamma\) must be a number between 0\.1 and 10, got 0\.$"),
        ("blur", 65, r"'blur' \(Blur radius\) must be a number between 0 and 64, got 65\.$"),
        ("net_size", 4096, r"'net_size' \(Estimator resolution\) must be a whole number between 0 and 1024"),
        ("far_clip", float("nan"), r"'far_clip' \(Far clip\) must be a number between 0 and 1, got nan"),
        ("net_size", 384.5, r"'net_size' \(Estimator resolution\) must be a whole number .*, got 384\.5"),
        ("gamma", "steep", r"'gamma' \(Gamma\) must be a number between 0\.1 and 10, got 'steep'"),
        ("invert", "maybe", r"'invert' \(Invert\) must be true or false, got 'maybe'"),
        ("checkpoint", 3, r"'checkpoint' \(Depth checkpoint\) must be text, got 3"),
    ],
)
def test_bad_values_say_which_setting_and_what_is_allowed(name, value, message):
    with pytest.raises(SettingsError, match=message):
        Depth2imgArgs.from_values({name: value})


@pytest.mark.parametrize(
    "text, expected", [("true", True), ("On", True), ("1", True), ("no", False), (0, False)]
)
def test_booleans_from_text_and_numbers(text, expected):
    assert Depth2imgArgs.from_values({"invert": text}).invert is expected


def test_whole_floats_are_accepted_for_integers():
    assert Depth2imgArgs.from_values({"net_size": "384.0"}).net_size == 384


def test_none_means_default():
    assert Depth2imgArgs.from_values({"gamma": None}).gamma == 1.0


def test_far_clip_must_stay_below_near_clip():
    with pytest.raises(SettingsError, match=r"far clip \(0\.6\) must be below near clip \(0\.4\)"):
        Depth2imgArgs.from_values({"far_clip": 0.6, "near_clip": 0.4})


def test_depth_image_takes_any_image_like_value_unchecked():
    image = Image.new("L", (2, 2))
    assert Depth2imgArgs.from_values({"depth_image": image}).depth_image is image
    assert Depth2imgArgs.from_values({"depth_image": "data:image/png;base64,AAAA"}).depth_image.startswith(
        "data:"
    )


def test_infotext_is_empty_when_disabled():
    assert Depth2imgArgs(invert=True).to_infotext() == {}


def test_infotext_round_trips():
    args = Depth2imgArgs(
        enabled=True,
        checkpoint="512-depth-ema.ckpt",
        net_size=512,
        invert=True,
        far_clip=0.2,
        near_clip=0.9,
        gamma=1.5,
        blur=2.5,
    )
    infotext = args.to_infotext()
    assert infotext["Depth2img"] == "True" and infotext["Depth2img gamma"] == "1.5"
    assert "Depth2img checkpoint" in infotext
    assert Depth2imgArgs.from_infotext(infotext) == args


def test_infotext_leaves_out_empty_text_and_ui_only_settings():
    infotext = Depth2imgArgs(enabled=True, save_depth=True).to_infotext()
    assert "Depth2img checkpoint" not in infotext
    assert not any("save" in key.lower() for key in infotext)


def test_images_without_depth2img_infotext_give_none():
    assert Depth2imgArgs.from_infotext({"Steps": "20", "Sampler": "Euler a"}) is None


def test_adjustments_view():
    args = Depth2imgArgs(gamma=2.0, invert=True, blur=3.0)
    assert args.adjustments == DepthAdjustments(invert=True, gamma=2.0, blur=3.0)


def test_the_spec_table_covers_every_field_in_order():
    assert [name for name, _ in Depth2imgArgs.specs()] == FIELD_NAMES
    assert Depth2imgArgs.spec("blur").maximum == 64.0 and Depth2imgArgs.spec("blur").label == "Blur radius"
    assert Depth2imgArgs.defaults()["near_clip"] == 1.0
