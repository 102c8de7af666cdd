"""Tier 5: the extension inside a real A1111 v1.10.1, driven over its HTTP API.

Runs only when SD_WEBUI_DIR points at an A1111 checkout (see tests/support/webui.py) with
`512-depth-ema.safetensors` and `sd2-base-random.safetensors` (random weights are fine) in
models/Stable-diffusion. The server is started twice, CPU-only and offline on 127.0.0.1: once
without the extension (the reference), once with it
installed as A1111 installs extensions (a folder in extensions/, its install.py run through
`launch_utils.run_extension_installer`). Slow: about a minute per start and ~12 s per job on a CPU.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image
from support.webui import (
    BASE_CHECKPOINT,
    DEPTH_CHECKPOINT,
    EXTENSION_NAME,
    Server,
    decoded,
    extension_installed,
    png_b64,
    running_server,
    show_depth_map_in_chromium,
    webui_checkout,
)

WEBUI = webui_checkout()
pytestmark = [
    pytest.mark.webui,
    pytest.mark.skipif(WEBUI is None, reason="tier 5 needs a real A1111 v1.10.1 checkout: set SD_WEBUI_DIR"),
]

MAX_RUN_TO_RUN_MEAN = 1.0  # levels of 255; two identical requests to one A1111 here: up to 3, in 44% of values
MAX_RUN_TO_RUN_LEVELS = 8
JOB = {"prompt": "a room", "seed": 1234, "steps": 2, "width": 128, "height": 128, "sampler_name": "Euler",
       "denoising_strength": 0.8, "cfg_scale": 5}


def init_image() -> Image.Image:
    ramp = np.repeat(np.linspace(30, 220, 128, dtype=np.float32)[None, :], 128, axis=0)
    pixels = np.stack([ramp, ramp[::-1], np.full_like(ramp, 120)], axis=2)
    pixels[40:90, 50:100] = 250
    return Image.fromarray(pixels.astype(np.uint8))


def img2img_body(**extra) -> dict:
    return {**JOB, "init_images": [png_b64(init_image())], **extra}


def native_depth_body(**extra) -> dict:
    """img2img on the depth model chosen the A1111 way (the random SD2 base model samples NaNs)."""
    return img2img_body(override_settings={"sd_model_checkpoint": DEPTH_CHECKPOINT}, **extra)


def photo_4x3() -> Image.Image:
    """A large non-square photo stand-in: smooth shapes plus fine texture that aliases when shrunk badly."""
    height, width = 600, 800
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    shapes = 60 + 120 * (x / width) + 70 * (((x - 520) ** 2 + (y - 330) ** 2) < 150**2)
    texture = 25 * np.sin(x * 2.9) * np.sin(y * 3.1)
    pixels = np.stack([shapes + texture, shapes[::-1] + texture, np.full_like(shapes, 110) + texture], axis=2)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def inpaint_mask() -> Image.Image:
    mask = Image.new("L", photo_4x3().size, 0)
    mask.paste(255, (470, 280, 590, 390))  # a face-sized region of the large photo
    return mask


NATIVE_JOBS = {
    "plain": {},
    "crop_and_resize_4x3": {"init_images": [png_b64(photo_4x3())], "resize_mode": 1, "width": 128, "height": 96},
    "only_masked": {"init_images": [png_b64(photo_4x3())], "mask": png_b64(inpaint_mask()), "inpaint_full_res": True,
                    "inpaint_full_res_padding": 32, "inpainting_fill": 1, "mask_blur": 4},
}
"""img2img jobs run on A1111's own depth path (no extension) and again with the extension on."""


@pytest.fixture(scope="module")
def reference_img2img(tmp_path_factory) -> dict[str, dict]:
    """Each of NATIVE_JOBS on A1111's own depth path, without the extension."""
    webui = WEBUI
    if (webui / "extensions" / EXTENSION_NAME).exists():
        pytest.skip(f"{EXTENSION_NAME} is already installed in {webui}; cannot run the reference without it")
    answers = {}
    with running_server(webui, tmp_path_factory.mktemp("logs") / "webui-without-extension.log") as server:
        for name, fields in NATIVE_JOBS.items():
            status, answer = server.post("/sdapi/v1/img2img", native_depth_body(**fields))
            assert status == 200, answer
            answers[name] = answer
    return answers


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """A1111 with the extension; a test that also wants `reference_img2img` must ask for it first."""
    webui = WEBUI
    log_path = tmp_path_factory.mktemp("logs") / "webui-with-extension.log"
    with extension_installed(webui), running_server(webui, log_path) as server:
        yield server


def test_extension_off_gives_the_same_image_as_no_extension(reference_img2img, server, record_property):
    """Same job, same seed, same infotext. The pixels are compared within A1111's own run-to-run
    spread: on this CPU two identical requests to one unmodified A1111 already differ by up to 3
    levels in some pixels (multi-threaded float sums), so equal bytes cannot be asked for here."""
    status, answer = server.post("/sdapi/v1/img2img", native_depth_body(
        alwayson_scripts={"Depth2img": {"args": [False]}}))
    assert status == 200, answer
    reference_answer = reference_img2img["plain"]
    assert json.loads(answer["info"])["infotexts"] == json.loads(reference_answer["info"])["infotexts"]
    off, reference = (np.asarray(decoded(a["images"][0]), dtype=np.int16) for a in (answer, reference_answer))
    difference = np.abs(off - reference)
    record_property("identical_bytes", bool((difference == 0).all()))
    record_property("max_level_difference", int(difference.max()))
    assert off.shape == reference.shape
    assert difference.mean() < MAX_RUN_TO_RUN_MEAN and difference.max() <= MAX_RUN_TO_RUN_LEVELS


@pytest.mark.parametrize("job", ["crop_and_resize_4x3", "only_masked"])
def test_extension_on_matches_a1111s_native_depth_on_a_large_photo(reference_img2img, server, job, record_property):
    """Depth from the pixels the model sees: with the embedded estimator the image is A1111's own
    within 1 level (mean abs), inside the repainted region too (where the depth matters most)."""
    enabled = {"Depth2img": {"args": [{"enabled": True, "checkpoint": DEPTH_CHECKPOINT}]}}
    status, answer = server.post("/sdapi/v1/img2img", native_depth_body(**NATIVE_JOBS[job], alwayson_scripts=enabled))
    assert status == 200, answer
    ours, native = (np.asarray(decoded(a["images"][0]), dtype=np.float32) for a in (answer, reference_img2img[job]))
    assert ours.shape == native.shape
    difference = np.abs(ours - native)
    record_property("mean_abs_difference", float(difference.mean()))
    assert difference.mean() < 1.0
    if job == "only_masked":
        inside = np.asarray(inpaint_mask(), dtype=bool)
        record_property("mean_abs_difference_inside_mask", float(difference[inside].mean()))
        assert difference[inside].mean() < 1.0


def test_preview_route_with_the_job_geometry_is_the_appended_map_and_a_cache_hit(server):
    photo = png_b64(photo_4x3())
    geometry = {"width": 128, "height": 96, "resize_mode": 1}
    args = {"enabled": True, "checkpoint": DEPTH_CHECKPOINT, "blur": 2.0, "gamma": 0.8}
    status, preview = server.post("/depth2img/v1/depth", {"image": photo, "args": args, **geometry})
    assert status == 200, preview
    assert (preview["width"], preview["height"]) == (128, 96)
    misses = server.get("/depth2img/v1/models")[1]["cache"]["misses"]
    job = {**JOB, **geometry, "init_images": [photo], "override_settings": {"sd_model_checkpoint": DEPTH_CHECKPOINT},
           "alwayson_scripts": {"Depth2img": {"args": [{**args, "append_depth": True}]}}}
    status, answer = server.post("/sdapi/v1/img2img", job)
    assert status == 200, answer
    appended = np.asarray(decoded(answer["images"][-1]).convert("L"))
    assert np.array_equal(appended, np.asarray(decoded(preview["depth"])))
    assert server.get("/depth2img/v1/models")[1]["cache"]["misses"] == misses  # the job estimated nothing


def test_extension_on_runs_on_the_depth_model_and_restores_the_base_model(server):
    base = server.selected_checkpoint()
    assert base.startswith(BASE_CHECKPOINT)
    status, answer = server.post("/sdapi/v1/img2img", img2img_body(
        alwayson_scripts={"Depth2img": {"args": [{"enabled": True, "append_depth": True}]}}))
    assert status == 200, answer
    info = json.loads(answer["info"])
    assert "Model: 512-depth-ema" in info["infotexts"][0] and "Depth2img: True" in info["infotexts"][0]
    result = np.asarray(decoded(answer["images"][0]).convert("RGB"), dtype=np.float32)
    assert np.isfinite(result).all() and result.std() > 0
    assert decoded(answer["images"][-1]).mode == "L"  # the depth map appended
    assert server.selected_checkpoint() == base


def test_txt2img_from_a_depth_map(server):
    depth = Image.fromarray(np.repeat(np.linspace(0, 255, 128, dtype=np.uint8)[:, None], 128, axis=1))
    status, answer = server.post("/sdapi/v1/txt2img", {**JOB, "alwayson_scripts": {
        "Depth2img": {"args": [{"enabled": True, "depth_image": png_b64(depth)}]}}})
    assert status == 200, answer
    assert "Model: 512-depth-ema" in json.loads(answer["info"])["infotexts"][0]


def test_txt2img_without_a_depth_map_is_a_422_with_the_message(server):
    status, answer = server.post("/sdapi/v1/txt2img", {**JOB, "alwayson_scripts": {"Depth2img": {"args": [True]}}})
    assert status == 422, answer
    assert answer["errors"].startswith("Depth2img: txt2img has no init image")


def test_bad_value_is_a_422_with_the_message(server):
    status, answer = server.post("/sdapi/v1/img2img", img2img_body(
        alwayson_scripts={"Depth2img": {"args": [{"enabled": True, "gamma": 99}]}}))
    assert status == 422, answer
    assert "gamma" in answer["errors"] and answer["errors"].startswith("Depth2img:")


def test_ui_has_the_panel_the_settings_section_and_the_xyz_axes(server):
    with urllib.request.urlopen(server.url("/config"), timeout=60) as answer:
        config = answer.read().decode()
    for text in ("depth2img_img2img", "depth2img_txt2img", "setting_depth2img_cache_mb", "Depth2img: Gamma"):
        assert text in config, text


def test_depth_preview_route_and_its_cache(server):
    body = {"image": png_b64(init_image()), "args": {"enabled": True}}
    status, first = server.post("/depth2img/v1/depth", body)
    assert status == 200, first
    assert (first["width"], first["height"]) == (128, 128) and first["source"] in ("estimator", "cache")
    status, again = server.post("/depth2img/v1/depth", body)
    assert (status, again["source"]) == (200, "cache")
    status, models = server.get("/depth2img/v1/models")
    assert status == 200 and models["checkpoints"][0].startswith(DEPTH_CHECKPOINT)



def test_show_depth_map_in_the_img2img_tab_in_chromium(server, tmp_path):
    """The panel in A1111's real page: upload an init image, open Depth2img, Show depth map.

    The preview must show a picture (not a blank) and the status line the estimator used; the
    page screenshot is kept in tmp_path for a person to look at."""
    show_depth_map_in_chromium(server, init_image(), tmp_path, "a1111-img2img")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
