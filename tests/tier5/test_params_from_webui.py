"""Tier 5: render a PNG in a real A1111 v1.10.1 with Depth2img, re-render it with `--params-from`.

Runs only with SD_WEBUI_DIR (see tests/support/webui.py). A1111 starts on the depth checkpoint
with this extension installed; each job runs twice, because A1111 encodes the init image to a VAE
posterior sample drawn from torch's global generator, which only a previous job with the same
seed leaves in a known state (see `pipeline.init_encoding_noise`). Slow: a start and ~20 s a job.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import test_real_webui
from PIL import Image
from support.webui import extension_installed, png_b64, running_server
from test_real_webui import WEBUI

pytestmark = [
    pytest.mark.webui,
    pytest.mark.skipif(WEBUI is None, reason="tier 5 needs a real A1111 v1.10.1 checkout: set SD_WEBUI_DIR"),
]

REPO = Path(__file__).resolve().parents[2]
DEPTH_CHECKPOINT = "512-depth-ema.safetensors"
MAX_MEAN_LEVELS = 0.25  # the issue's bar: the CLI's image within 0.25 mean abs levels of A1111's


@pytest.fixture(scope="module")
def depth_server(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(test_real_webui, "BASE_CHECKPOINT", DEPTH_CHECKPOINT)  # no checkpoint swap per job
        log = tmp_path_factory.mktemp("logs") / "webui-depth.log"
        with extension_installed(WEBUI), running_server(WEBUI, log) as server:
            yield server


def scene(size: int) -> Image.Image:
    ramp = np.repeat(np.linspace(30, 220, size, dtype=np.float32)[None, :], size, axis=0)
    pixels = np.stack([ramp, ramp[::-1], np.full_like(ramp, 120)], axis=2)
    pixels[size // 3: size * 2 // 3, size // 3: size * 3 // 4] = 250
    return Image.fromarray(pixels.astype(np.uint8))


@pytest.mark.parametrize("sampler", ["DPM++ 2M SDE", "DDIM"])
def test_params_from_an_a1111_png_renders_a1111s_image(depth_server, tmp_path, sampler):
    init = scene(128)
    init.save(tmp_path / "init.png")
    job = {"prompt": "a room", "negative_prompt": "blurry", "seed": 77, "steps": 4, "width": 128, "height": 128,
           "cfg_scale": 7, "denoising_strength": 0.75, "sampler_name": sampler, "init_images": [png_b64(init)],
           "alwayson_scripts": {"Depth2img": {"args": [{"enabled": True, "gamma": 1.2}]}}}
    for _ in range(2):
        status, answer = depth_server.post("/sdapi/v1/img2img", job)
        assert status == 200, answer
    png_bytes = base64.b64decode(answer["images"][0])
    (tmp_path / "a1111.png").write_bytes(png_bytes)
    infotext = json.loads(answer["info"])["infotexts"][0]
    assert f"Sampler: {sampler}" in infotext and "Depth2img gamma: 1.2" in infotext

    checkpoint = WEBUI / "models/Stable-diffusion" / DEPTH_CHECKPOINT
    command = [sys.executable, "-m", "lib_depth2img", "generate", "--ckpt", str(checkpoint), "--device", "cpu",
               "--params-from", str(tmp_path / "a1111.png"), "--init", str(tmp_path / "init.png"),
               "-o", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr
    engine = Image.open(tmp_path / "out/init-77.png")
    a1111 = Image.open(io.BytesIO(png_bytes)).convert("RGB")
    difference = np.abs(np.asarray(engine, np.int16) - np.asarray(a1111, np.int16))
    assert difference.mean() < MAX_MEAN_LEVELS, (difference.mean(), difference.max())
