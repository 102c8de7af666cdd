"""Tier 5: the extension inside a real Forge (`lllyasviel/stable-diffusion-webui-forge`), over its
HTTP API and in its page.

Runs only when FORGE_DIR points at a Forge checkout (see tests/support/webui.py) with
`512-depth-ema.safetensors` and `sd2-base-random.safetensors` (random weights are fine) in
models/Stable-diffusion. Forge is started twice, CPU-only and offline on 127.0.0.1: once without
the extension (the reference: Forge alone cannot run the depth model), once with it installed
as extensions are (a folder in extensions/, its install.py run by Forge's helper). Random-weight
text encoders give NaN images under Forge's default emphasis, so every job sets it to "None".
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from support.webui import (
    BASE_CHECKPOINT,
    DEPTH_CHECKPOINT,
    EXTENSION_NAME,
    FORGE,
    Server,
    decoded,
    extension_installed,
    png_b64,
    running_server,
    show_depth_map_in_chromium,
    webui_checkout,
)

FORGE_DIR = webui_checkout(FORGE)
pytestmark = [
    pytest.mark.webui,
    pytest.mark.skipif(FORGE_DIR is None, reason="needs a real Forge checkout: set FORGE_DIR"),
]

SIZE = 128
JOB = {"prompt": "a room", "seed": 1234, "steps": 2, "width": SIZE, "height": SIZE, "sampler_name": "Euler",
       "scheduler": "Automatic", "denoising_strength": 0.8, "cfg_scale": 5,
       "override_settings": {"emphasis": "None"}}
UNFIT_CONDITIONING = "to have 5 channels, but got 9"  # Forge's inpainting conditioning on the depth UNet
MAX_RUN_TO_RUN_MEAN = 1.0  # levels of 255, as for A1111: multi-threaded float sums differ run to run
MAX_RUN_TO_RUN_LEVELS = 8
EXTRA_VAE = "depth2img-test-vae.safetensors"
"""A VAE file in Forge's models/VAE for its "VAE / Text Encoder" choice; its one tensor would
break any model it were merged into."""


def pixels(b64: str) -> np.ndarray:
    return np.asarray(decoded(b64).convert("RGB"), dtype=np.float32)


def init_image() -> Image.Image:
    ramp = np.repeat(np.linspace(30, 220, SIZE, dtype=np.float32)[None, :], SIZE, axis=0)
    values = np.stack([ramp, ramp[::-1], np.full_like(ramp, 120)], axis=2)
    values[40:90, 50:100] = 250
    return Image.fromarray(values.astype(np.uint8))


def depth_ramp(vertical: bool) -> Image.Image:
    ramp = np.linspace(0, 255, SIZE, dtype=np.uint8)
    return Image.fromarray(np.tile(ramp[:, None], (1, SIZE)) if vertical else np.tile(ramp, (SIZE, 1)))


def right_half_mask() -> Image.Image:
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (SIZE // 2, 0, SIZE, SIZE))
    return mask


def job(depth2img: dict | None = None, *, depth_model: bool = False, **fields) -> dict:
    """An img2img body; `depth_model` selects 512-depth-ema the native way (override_settings)."""
    body = {**JOB, "init_images": [png_b64(init_image())], **fields}
    if depth_model:
        body["override_settings"] = {**JOB["override_settings"], "sd_model_checkpoint": DEPTH_CHECKPOINT}
    if depth2img is not None:
        body["alwayson_scripts"] = {"Depth2img": {"args": [depth2img]}}
    return body


def infotext(answer: dict) -> str:
    return json.loads(answer["info"])["infotexts"][0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, tuple[int, dict]]:
    """Forge without the extension: an img2img on the SD2 base model, and one on the depth model."""
    if (FORGE_DIR / "extensions" / EXTENSION_NAME).exists():
        pytest.skip(f"{EXTENSION_NAME} is already installed in {FORGE_DIR}; cannot run the reference without it")
    log_path = tmp_path_factory.mktemp("logs") / "forge-without-extension.log"
    with running_server(FORGE_DIR, log_path, kind=FORGE) as server:
        return {"base": server.post("/sdapi/v1/img2img", job()),
                "depth": server.post("/sdapi/v1/img2img", job(depth_model=True))}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """Forge with the extension (and EXTRA_VAE offered, as Forge lists modules at start-up); a test
    that also wants `reference` must ask for it first."""
    log_path = tmp_path_factory.mktemp("logs") / "forge-with-extension.log"
    vae = FORGE_DIR / "models" / "VAE" / EXTRA_VAE
    vae.parent.mkdir(parents=True, exist_ok=True)
    save_file({"decoder.conv_in.weight": torch.zeros(512, 4, 3, 3)}, str(vae))
    try:
        with extension_installed(FORGE_DIR, kind=FORGE), running_server(FORGE_DIR, log_path, kind=FORGE) as server:
            yield server
    finally:
        vae.unlink()


def selected_model_name(server: Server) -> str:
    """The selected checkpoint's file stem (Forge adds the hash to the title once it has loaded it)."""
    return Path(server.selected_checkpoint().split(" [")[0]).stem


# -- extension off: Forge as it is ------------------------------------------------------------------

def test_forge_alone_cannot_run_the_depth_model(reference):
    status, answer = reference["depth"]
    assert status == 500 and UNFIT_CONDITIONING in json.dumps(answer), answer


def test_extension_off_leaves_both_jobs_as_forge_does_them(reference, server, record_property):
    status, answer = server.post("/sdapi/v1/img2img", job(depth_model=True, alwayson_scripts={
        "Depth2img": {"args": [False]}}))
    assert status == 500 and UNFIT_CONDITIONING in json.dumps(answer), answer

    status, answer = server.post("/sdapi/v1/img2img", job({"enabled": False}))
    reference_status, reference_answer = reference["base"]
    assert (status, reference_status) == (200, 200), answer
    assert infotext(answer) == infotext(reference_answer)
    difference = np.abs(pixels(answer["images"][0]) - pixels(reference_answer["images"][0]))
    record_property("max_level_difference", int(difference.max()))
    assert difference.mean() < MAX_RUN_TO_RUN_MEAN and difference.max() <= MAX_RUN_TO_RUN_LEVELS


# -- extension on ----------------------------------------------------------------------------------

def test_img2img_runs_on_the_depth_model_and_restores_the_base_model(server):
    assert selected_model_name(server) == Path(BASE_CHECKPOINT).stem
    status, answer = server.post("/sdapi/v1/img2img", job({"enabled": True, "append_depth": True}))
    assert status == 200, answer
    text = infotext(answer)
    assert "Model: 512-depth-ema" in text and "Depth2img: True" in text
    result = pixels(answer["images"][0])
    assert np.isfinite(result).all() and result.std() > 1.0
    assert decoded(answer["images"][-1]).mode == "L"  # the depth map appended
    assert selected_model_name(server) == Path(BASE_CHECKPOINT).stem


def test_the_depth_map_steers_the_result(server):
    """Same seed, two own depth maps: if the conditioning reached the UNet, the images differ."""
    results = []
    for vertical in (False, True):
        status, answer = server.post("/sdapi/v1/img2img", job(
            {"enabled": True, "depth_image": png_b64(depth_ramp(vertical))}, denoising_strength=1.0))
        assert status == 200, answer
        results.append(pixels(answer["images"][0]))
    assert np.isfinite(results[0]).all() and np.abs(results[0] - results[1]).mean() > 2.0


def test_inpaint_repaints_inside_the_mask_only(server):
    status, answer = server.post("/sdapi/v1/img2img", job(
        {"enabled": True}, mask=png_b64(right_half_mask()), inpainting_fill=1, mask_blur=0, denoising_strength=1.0))
    assert status == 200, answer
    result, original = pixels(answer["images"][0]), np.asarray(init_image(), dtype=np.float32)
    assert np.isfinite(result).all()
    outside = np.abs(result[:, : SIZE // 2 - 8] - original[:, : SIZE // 2 - 8]).mean()
    inside = np.abs(result[:, SIZE // 2 + 8:] - original[:, SIZE // 2 + 8:]).mean()
    assert outside < 3.0 < inside


def test_txt2img_from_a_depth_map(server):
    status, answer = server.post("/sdapi/v1/txt2img", {**JOB, "alwayson_scripts": {
        "Depth2img": {"args": [{"enabled": True, "depth_image": png_b64(depth_ramp(vertical=True))}]}}})
    assert status == 200, answer
    assert "Model: 512-depth-ema" in infotext(answer)
    assert np.isfinite(pixels(answer["images"][0])).all()
    assert selected_model_name(server) == Path(BASE_CHECKPOINT).stem


def test_txt2img_hires_fix_conditions_both_passes(server):
    """Forge's API fails any hires job that leaves out `hr_additional_modules` (it tests membership
    in None), so the body names Forge's UI default."""
    status, answer = server.post("/sdapi/v1/txt2img", {
        **JOB, "enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent", "hr_second_pass_steps": 2,
        "hr_additional_modules": ["Use same choices"], "denoising_strength": 0.6, "alwayson_scripts": {
            "Depth2img": {"args": [{"enabled": True, "depth_image": png_b64(depth_ramp(vertical=True))}]}}})
    assert status == 200, answer
    result = pixels(answer["images"][0])
    assert result.shape == (2 * SIZE, 2 * SIZE, 3) and np.isfinite(result).all()
    assert "Model: 512-depth-ema" in infotext(answer)


def test_forges_extra_modules_are_left_out_of_the_depth_job_and_kept(server):
    status, answer = server.post("/sdapi/v1/options", {"forge_additional_modules": [EXTRA_VAE]})
    assert status == 200, answer
    try:
        status, answer = server.post("/sdapi/v1/img2img", job({"enabled": True}))
        assert status == 200, answer
        assert "Model: 512-depth-ema" in infotext(answer) and "Module 1" not in infotext(answer)
        result = pixels(answer["images"][0])
        assert np.isfinite(result).all() and result.std() > 1.0
        chosen = server.get("/sdapi/v1/options")[1]["forge_additional_modules"]
        assert [Path(module).name for module in chosen] == [EXTRA_VAE]
    finally:
        server.post("/sdapi/v1/options", {"forge_additional_modules": []})


def test_txt2img_without_a_depth_map_is_a_422_with_the_message(server):
    status, answer = server.post("/sdapi/v1/txt2img", {**JOB, "alwayson_scripts": {"Depth2img": {"args": [True]}}})
    assert status == 422, answer
    assert "Depth2img: txt2img has no init image" in json.dumps(answer)


def test_depth_route_models_route_and_the_cache(server):
    body = {"image": png_b64(init_image()), "args": {"enabled": True}, "width": SIZE, "height": SIZE}
    status, first = server.post("/depth2img/v1/depth", body)
    assert status == 200, first
    assert (first["width"], first["height"]) == (SIZE, SIZE)
    status, again = server.post("/depth2img/v1/depth", body)
    assert (status, again["source"]) == (200, "cache")
    status, models = server.get("/depth2img/v1/models")
    assert status == 200 and models["checkpoints"][0].startswith(DEPTH_CHECKPOINT)


def test_ui_has_the_panel_the_settings_section_and_the_xyz_axes(server):
    with urllib.request.urlopen(server.url("/config"), timeout=60) as answer:
        config = answer.read().decode()
    for text in ("depth2img_img2img", "depth2img_txt2img", "setting_depth2img_cache_mb", "Depth2img: Gamma"):
        assert text in config, text


def test_show_depth_map_in_the_img2img_tab_in_chromium(server, tmp_path):
    """The panel in Forge's page: upload an init image onto its canvas, open Depth2img, Show depth
    map. The preview must show a picture and the status line the estimator used; the page
    screenshot is kept in tmp_path for a person to look at."""
    show_depth_map_in_chromium(server, init_image(), tmp_path, "forge-img2img")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
