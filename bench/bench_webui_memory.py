"""Benchmark: A1111's resident memory after depth jobs, its own depth path against the extension's.

    SD_WEBUI_DIR=/path/to/stable-diffusion-webui .venv/bin/python bench/bench_webui_memory.py [--jobs 3]

Starts the real A1111 v1.10.1 twice, one after the other, CPU-only on 127.0.0.1 (the same start as
the tier-5 tests: `tests/support/webui.py`), on SD2 base with `512-depth-ema` beside it:
- native: `--jobs` img2img jobs on the depth model chosen A1111's way (override_settings), so A1111's
  own MiDaS runs;
- extension: the extension installed; a Show-depth-map request first (while SD2 base is loaded, so
  the extension loads its own MiDaS from the depth file), then the same jobs with Depth2img on.
Each side's resident memory (VmRSS of the server process) is read after its last job, and the
difference is printed with the target: within 64 MiB, i.e. no second MiDaS left in memory.
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.webui import DEPTH_CHECKPOINT, Server, extension_installed, running_server, webui_checkout

TARGET_MIB = 64
JOB = {"prompt": "a room", "seed": 7, "steps": 2, "width": 128, "height": 128, "sampler_name": "Euler",
       "denoising_strength": 0.8, "cfg_scale": 5, "override_settings": {"sd_model_checkpoint": DEPTH_CHECKPOINT}}


def photo(seed: int) -> str:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(40, 210, 320, dtype=np.float32)[None, :, None]
    pixels = np.clip(ramp + rng.normal(0, 20, (240, 320, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def resident_mib(server: Server) -> float:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS for the server process")


def run_jobs(server: Server, jobs: int, extension: bool) -> float:
    for number in range(jobs):
        body = {**JOB, "init_images": [photo(number)]}
        if extension:
            body["alwayson_scripts"] = {"Depth2img": {"args": [{"enabled": True, "checkpoint": DEPTH_CHECKPOINT}]}}
        status, answer = server.post("/sdapi/v1/img2img", body)
        if status != 200:
            raise RuntimeError(f"job {number} failed: {status} {answer}")
    return resident_mib(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3)
    options = parser.parse_args()
    webui = webui_checkout()
    if webui is None:
        sys.exit("set SD_WEBUI_DIR to an A1111 v1.10.1 checkout (see tests/support/webui.py)")
    logs = Path(tempfile.mkdtemp(prefix="bench-webui-memory-"))
    with running_server(webui, logs / "native.log") as server:
        native = run_jobs(server, options.jobs, extension=False)
    with extension_installed(webui), running_server(webui, logs / "extension.log") as server:
        status, answer = server.post("/depth2img/v1/depth", {"image": photo(99), "width": 128, "height": 128,
                                                             "args": {"checkpoint": DEPTH_CHECKPOINT}})
        if status != 200:
            raise RuntimeError(f"preview failed: {status} {answer}")
        after_preview = resident_mib(server)
        ours = run_jobs(server, options.jobs, extension=True)
    print(f"A1111 resident memory after {options.jobs} depth jobs (img2img 128x128, 2 Euler steps, CPU fp32)")
    print(f"{'native depth path':34}{native:10.0f} MiB")
    print(f"{'extension, after its preview':34}{after_preview:10.0f} MiB")
    print(f"{'extension, after the jobs':34}{ours:10.0f} MiB")
    print(f"{'difference (extension - native)':34}{ours - native:+10.0f} MiB   (target: within {TARGET_MIB} MiB)")
    print(f"{'ratio (extension / native)':34}{ours / native:10.3f}")
    print(f"server logs: {logs}")


if __name__ == "__main__":
    main()
