"""The shared declaration of settings: coercion, bounds, choices and the one message format."""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass
from typing import Any

import numpy as np
import pytest

from lib_depth2img.errors import SettingsError
from lib_depth2img.specs import Settings, setting, setting_from


@dataclass(frozen=True)
class Job(Settings):
    size: int = setting(MISSING, "Size", minimum=8)
    steps: int = setting(20, "Sampling steps", minimum=1, maximum=150, step=1, hint="More is slower.")
    strength: float = setting(0.75, "Strength", minimum=0.0, maximum=1.0)
    scale: float | None = setting(None, "Scale", maximum=4.0)
    rng: str = setting("CPU", "RNG source", choices=("CPU", "GPU"))
    mode: int = setting(0, "Mode", choices={0: "Stretch", 1: "Crop"})
    tiled: bool = setting(False, "Tiled")
    name: str = setting("", "Name")
    image: Any = setting(None, "Image")
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tiled and self.steps < 10:
            raise SettingsError("Tiled jobs need 10 steps or more.")


@dataclass(frozen=True)
class OtherJob(Settings):
    mode: int = setting_from(Job, "mode", hint="How the picture is fitted.")


@pytest.mark.parametrize(
    ("name", "given", "expected"),
    [
        ("steps", "20", 20), ("steps", 20.0, 20), ("steps", "1e2", 100), ("steps", np.int64(7), 7),
        ("steps", True, 1), ("strength", 1, 1.0), ("strength", "0.5", 0.5), ("strength", np.float32(0.25), 0.25),
        ("tiled", "yes", True), ("tiled", 0, False), ("rng", "GPU", "GPU"), ("mode", "1", 1), ("scale", 2, 2.0),
    ],
)
def test_values_become_the_field_type(name, given, expected):
    job = Job(size=8, **{name: given})
    value = getattr(job, name)
    assert value == expected and type(value) is type(expected)


def test_none_takes_the_default_and_unchecked_fields_keep_their_value():
    image = object()
    job = Job(size=64, steps=None, scale=None, image=image, notes=("kept",))
    assert (job.steps, job.scale, job.image, job.notes) == (20, None, image, ("kept",))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"steps": 0}, "Depth2img: 'steps' (Sampling steps) must be a whole number between 1 and 150, got 0."),
        ({"steps": 2.5}, "Depth2img: 'steps' (Sampling steps) must be a whole number between 1 and 150, got 2.5."),
        ({"steps": "many"}, ("Depth2img: 'steps' (Sampling steps) must be a whole number between 1 and 150, "
                             "got 'many'.")),
        ({"strength": float("nan")}, "Depth2img: 'strength' (Strength) must be a number between 0 and 1, got nan."),
        ({"scale": float("-inf")}, "Depth2img: 'scale' (Scale) must be a number of at most 4, got -inf."),
        ({"size": 4}, "Depth2img: 'size' (Size) must be a whole number of at least 8, got 4."),
        ({"size": None}, "Depth2img: 'size' (Size) must be a whole number of at least 8, got None."),
        ({"rng": "NV"}, "Depth2img: 'rng' (RNG source) must be one of CPU, GPU, got 'NV'."),
        ({"mode": 2}, "Depth2img: 'mode' (Mode) must be one of 0 (Stretch), 1 (Crop), got 2."),
        ({"tiled": "maybe"}, "Depth2img: 'tiled' (Tiled) must be true or false, got 'maybe'."),
        ({"name": 3}, "Depth2img: 'name' (Name) must be text, got 3."),
    ],
)
def test_a_bad_value_names_the_field_its_label_what_is_allowed_and_the_value(values, message):
    with pytest.raises(SettingsError) as error:
        Job(**{"size": 64, **values})
    assert str(error.value) == message


def test_a_subclass_rule_sees_the_coerced_values():
    with pytest.raises(SettingsError, match="Tiled jobs need 10 steps"):
        Job(size=64, steps="5", tiled="on")
    assert Job(size=64, steps="12", tiled="on").steps == 12


def test_replace_checks_again():
    with pytest.raises(SettingsError, match="'strength'"):
        dataclasses.replace(Job(size=64), strength=2)


def test_the_table_lists_declared_fields_their_defaults_and_types():
    assert [name for name, _ in Job.specs()] == ["size", "steps", "strength", "scale", "rng", "mode", "tiled", "name",
                                                 "image"]
    assert Job.spec("steps").hint == "More is slower." and Job.spec("steps").step == 1
    assert "size" not in Job.defaults() and "notes" not in Job.defaults() and Job.defaults()["steps"] == 20
    assert [Job.value_type(name) for name in ("steps", "scale", "tiled", "name", "image")] == [int, float, bool, str,
                                                                                               None]
    assert Job.spec("mode").choices == ((0, "Stretch"), (1, "Crop"))
    assert Job.spec("mode").choices_text == "0 (Stretch), 1 (Crop)" and Job.spec("rng").choices_text == "CPU, GPU"


def test_a_setting_declared_from_another_keeps_its_default_and_bounds():
    assert OtherJob().mode == 0 and OtherJob.spec("mode").choices == Job.spec("mode").choices
    assert OtherJob.spec("mode").hint == "How the picture is fitted." and Job.spec("mode").hint == ""
    with pytest.raises(SettingsError, match=r"'mode' \(Mode\) must be one of"):
        OtherJob(mode=5)
