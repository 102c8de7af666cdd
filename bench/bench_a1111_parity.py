"""The CLI's image against a real A1111 v1.10.1's, per sampler, and each side's seconds per step.

    SD_WEBUI_DIR=/path/to/stable-diffusion-webui python bench/bench_a1111_parity.py [--size 256] [--steps 4]

Starts A1111 (CPU, offline, with this extension installed, as tests/tier5 does) on the depth
checkpoint in its models/Stable-diffusion, and for each sampler runs one img2img job with
Depth2img on, twice: A1111 encodes the init image to a VAE posterior sample drawn from torch's
global generator, which only a previous job with the same seed leaves in a known state, so the
second run is the reproducible one. Then it renders the same PNG's parameters with the engine
(`--params-from`'s reading) in this process, and prints the mean and max absolute difference in
levels of 255 and the seconds per sampling step of each side (job time / steps run).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from support.webui import extension_installed, png_b64, running_server
from tier5 import test_real_webui as tier5
from tier5.test_real_webui import WEBUI

from lib_depth2img.cli.a1111_params import read_parameters
from lib_depth2img.engine.pipeline import Depth2ImgPipeline, GenerationRequest
from lib_depth2img.engine.samplers import SAMPLER_NAMES, choose_sampler
from lib_depth2img.engine.schedule import img2img_encode_steps
from lib_depth2img.infotext import model_hash

DEPTH_CHECKPOINT = "512-depth-ema.safetensors"


def scene(size: int) -> Image.Image:
    """A gradient room with a bright box: enough structure for depth and the VAE."""
    ramp = np.repeat(np.linspace(30, 220, size, dtype=np.float32)[None, :], size, axis=0)
    pixels = np.stack([ramp, ramp[::-1], np.full_like(ramp, 120)], axis=2)
    pixels[size // 3: size * 2 // 3, size // 3: size * 3 // 4] = 250
    return Image.fromarray(pixels.astype(np.uint8))


def steps_run(sampler: str, steps: int, strength: float) -> int:
    t_enc = img2img_encode_steps(steps, strength)
    return max(t_enc - 1, 0) if choose_sampler(sampler).sampler.uses_timesteps else t_enc + 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--strength", type=float, default=0.75)
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLER_NAMES))
    args = parser.parse_args()
    if WEBUI is None:
        raise SystemExit("set SD_WEBUI_DIR to an A1111 v1.10.1 checkout")
    torch.set_num_threads(2)
    tier5.BASE_CHECKPOINT = DEPTH_CHECKPOINT  # start on the depth model: no checkpoint swap per job
    checkpoint = WEBUI / "models/Stable-diffusion" / DEPTH_CHECKPOINT
    init = scene(args.size)
    job = {"prompt": "a room", "negative_prompt": "blurry", "seed": 1234, "steps": args.steps,
           "width": args.size, "height": args.size, "cfg_scale": 7, "denoising_strength": args.strength,
           "init_images": [png_b64(init)], "scheduler": "Automatic",
           "override_settings": {"randn_source": "CPU"},
           "alwayson_scripts": {"Depth2img": {"args": [{"enabled": True}]}}}
    rows = []
    with tempfile.TemporaryDirectory() as scratch, extension_installed(WEBUI), \
            running_server(Path(scratch) / "webui.log") as server:
        pipe = Depth2ImgPipeline.from_checkpoint(checkpoint)
        checkpoint_hash = model_hash(checkpoint)
        for sampler in args.samplers:
            seconds = []
            for _ in range(2):  # the second run is the reproducible one (see the docstring)
                started = time.perf_counter()
                status, answer = server.post("/sdapi/v1/img2img", {**job, "sampler_name": sampler})
                seconds.append(time.perf_counter() - started)
                assert status == 200, answer
            png = Image.open(io.BytesIO(base64.b64decode(answer["images"][0])))
            infotext = json.loads(answer["info"])["infotexts"][0]
            params = read_parameters(infotext, checkpoint_hash)
            assert not params.not_honoured, params.not_honoured
            request = GenerationRequest(**params.values, init_image=init, depth=params.depth)
            started = time.perf_counter()
            engine = pipe(request).images[0]
            engine_seconds = time.perf_counter() - started
            difference = np.abs(np.asarray(engine, np.int16) - np.asarray(png.convert("RGB"), np.int16))
            n = steps_run(sampler, args.steps, args.strength)
            rows.append((sampler, float(difference.mean()), int(difference.max()), seconds[1] / max(n, 1),
                         engine_seconds / max(n, 1), n, infotext.splitlines()[-1]))
            print(f"{sampler:14s} mean {rows[-1][1]:.3f} max {rows[-1][2]:3d}  s/step A1111 {rows[-1][3]:.2f} "
                  f"CLI {rows[-1][4]:.2f}  ({n} steps)", flush=True)
    print(f"\n{args.size}x{args.size}, {args.steps} steps, strength {args.strength}, CFG 7, seed 1234, CPU fp32")
    print("| sampler | mean abs (levels) | max | A1111 s/step | CLI s/step | steps run |")
    print("|---|---|---|---|---|---|")
    for sampler, mean, largest, a1111, cli, n, _ in rows:
        print(f"| {sampler} | {mean:.3f} | {largest} | {a1111:.2f} | {cli:.2f} | {n} |")
    print("\n" + "\n".join(f"{row[0]}: {row[6]}" for row in rows))


if __name__ == "__main__":
    main()
