"""The A1111 functions the extension reproduces or stands in for, run through the real A1111 v1.10.1.

The same cases go through A1111's own `images.resize_image`, `images.flatten`,
`processing.create_binary_mask`, `masking.get_crop_region_v2` and `masking.expand_crop_region`
(in A1111's venv, a subprocess), through the project's `geometry` (the pixels the model sees in
the standalone engine) and through the stand-in in `tests/webui_stub`; all must be equal. Runs
when SD_WEBUI_DIR points at an A1111 checkout with its venv; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess

import numpy as np
import pytest
from PIL import Image
from support.webui import OFFLINE_ENVIRONMENT, webui_checkout, webui_python

WEBUI = webui_checkout()
pytestmark = [
    pytest.mark.webui,
    pytest.mark.skipif(WEBUI is None, reason="needs a real A1111 v1.10.1 checkout: set SD_WEBUI_DIR"),
]

RUN_IN_A1111 = """
import pickle, sys
sys.argv = ["launch.py", "--skip-torch-cuda-test", "--use-cpu", "all", "--no-half"]
from modules import initialize
initialize.imports()
from modules import images, masking, processing
cases = pickle.load(sys.stdin.buffer)
answers = {}
for name, (function, args) in cases.items():
    target = {"resize_image": images.resize_image, "flatten": images.flatten,
              "create_binary_mask": processing.create_binary_mask,
              "get_crop_region_v2": masking.get_crop_region_v2,
              "expand_crop_region": masking.expand_crop_region}[function]
    answers[name] = target(*args)
sys.stdout.buffer.write(b"ANSWERS" + pickle.dumps(answers))
"""

SIZES = [((800, 600), (128, 96)), ((800, 600), (128, 128)), ((600, 800), (128, 128)), ((333, 517), (96, 64)),
         ((101, 37), (64, 72)), ((40, 30), (64, 64)), ((4000, 3000), (512, 384)), ((4000, 3000), (512, 512))]


def photo(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(size[0] * 7 + size[1])
    channels = {"RGB": 3, "RGBA": 4}.get(mode, 1)
    shape = (size[1], size[0], channels) if channels > 1 else (size[1], size[0])
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def mask(size: tuple[int, int], box: tuple[int, int, int, int], mode: str = "L") -> Image.Image:
    values = np.zeros((size[1], size[0]), np.uint8)
    values[box[1]:box[3], box[0]:box[2]] = 255
    if mode == "RGBA":
        rgba = np.zeros((size[1], size[0], 4), np.uint8)
        rgba[..., 3] = values
        return Image.fromarray(rgba, "RGBA")
    return Image.fromarray(values)


def cases() -> dict[str, tuple[str, tuple]]:
    found: dict[str, tuple[str, tuple]] = {}
    for source, target in SIZES:
        for mode in (0, 1, 2):
            found[f"resize {mode} {source}->{target}"] = ("resize_image", (mode, photo(source), *target))
        found[f"resize L 2 {source}->{target}"] = ("resize_image", (2, photo(source, "L"), *target))
    found["flatten rgba"] = ("flatten", (photo((64, 48), "RGBA"), "#ffffff"))
    found["flatten rgba black"] = ("flatten", (photo((64, 48), "RGBA"), "#000000"))
    for box in ((10, 20, 50, 30), (0, 0, 64, 48), (60, 40, 64, 48)):
        for mode in ("L", "RGBA"):
            found[f"binary {mode} {box}"] = ("create_binary_mask", (mask((64, 48), box, mode),))
        found[f"crop {box}"] = ("get_crop_region_v2", (mask((64, 48), box), 4))
        for processing_size in ((64, 64), (128, 32), (32, 96)):
            region = (box[0], box[1], box[2], box[3])
            found[f"expand {box} {processing_size}"] = ("expand_crop_region", (region, *processing_size, 64, 48))
    found["crop blank"] = ("get_crop_region_v2", (Image.new("L", (64, 48)), 8))
    return found


@pytest.fixture(scope="module")
def a1111_answers() -> dict:
    run = subprocess.run([str(webui_python(WEBUI)), "-c", RUN_IN_A1111], cwd=WEBUI, input=pickle.dumps(cases()),
                         capture_output=True, timeout=600, check=False,
                         env={**os.environ, **OFFLINE_ENVIRONMENT})
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    return pickle.loads(run.stdout.split(b"ANSWERS", 1)[1])


def comparable(value: object) -> object:
    if isinstance(value, Image.Image):
        return (value.mode, value.size, value.tobytes())
    return json.loads(json.dumps(value)) if value is not None else None


def stub_function(function: str):
    import webui_stub  # noqa: F401  (A1111's `modules`: the stand-in)
    from modules import images, masking, processing

    return {"resize_image": images.resize_image, "flatten": images.flatten,
            "create_binary_mask": processing.create_binary_mask,
            "get_crop_region_v2": masking.get_crop_region_v2,
            "expand_crop_region": masking.expand_crop_region}[function]


@pytest.mark.parametrize("name", list(cases()))
def test_the_stand_in_gives_what_a1111_gives(a1111_answers, name):
    function, args = cases()[name]
    assert comparable(stub_function(function)(*args)) == comparable(a1111_answers[name])


@pytest.mark.parametrize("name", [name for name, (function, _) in cases().items() if function == "resize_image"])
def test_the_engines_resize_gives_a1111s_pixels(a1111_answers, name):
    from lib_depth2img.depthmaps.geometry import resize_image

    _, args = cases()[name]
    assert comparable(resize_image(*args)) == comparable(a1111_answers[name])


def test_the_engines_flatten_gives_a1111s_pixels(a1111_answers):
    from lib_depth2img.depthmaps.geometry import flatten

    for name in ("flatten rgba", "flatten rgba black"):
        _, args = cases()[name]
        assert comparable(flatten(*args)) == comparable(a1111_answers[name])

