"""Finding and starting the real WebUIs that tier-5 tests run against: A1111 v1.10.1 and Forge.

`SD_WEBUI_DIR` names the A1111 checkout (the folder holding `launch.py`), or a folder that holds
it as `webui/`; `FORGE_DIR` names a Forge checkout the same way. Their Python is
`SD_WEBUI_PYTHON` / `FORGE_PYTHON`, else a `venv` inside the checkout or beside it.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lib_depth2img.settings import Depth2imgArgs

LAUNCH_FLAGS = (
    "--skip-prepare-environment", "--skip-torch-cuda-test", "--skip-version-check",
    "--skip-python-version-check", "--use-cpu", "all", "--no-half", "--precision", "full",
    "--server-name", "127.0.0.1", "--no-download-sd-model", "--api",
)
"""Flags for a CPU-only, offline A1111 bound to this machine (see shared/WEBUI_ON_CPU.md)."""
FORGE_LAUNCH_FLAGS = (
    "--skip-prepare-environment", "--skip-install", "--skip-torch-cuda-test", "--skip-version-check",
    "--skip-python-version-check", "--always-cpu", "--all-in-fp32", "--clip-in-fp32", "--vae-in-fp32",
    "--no-half", "--no-half-vae", "--precision", "full", "--server-name", "127.0.0.1",
    "--no-download-sd-model", "--api",
)
"""Flags for a CPU-only, offline Forge bound to this machine (see shared/FORGE.md)."""


@dataclass(frozen=True)
class WebUIKind:
    """Which WebUI: where its checkout and Python are named, and how it starts on this CPU."""

    name: str
    directory_variable: str
    python_variable: str
    launch_flags: tuple[str, ...]


A1111 = WebUIKind("A1111", "SD_WEBUI_DIR", "SD_WEBUI_PYTHON", LAUNCH_FLAGS)
FORGE = WebUIKind("Forge", "FORGE_DIR", "FORGE_PYTHON", FORGE_LAUNCH_FLAGS)

OFFLINE_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DIFFUSERS_OFFLINE": "1"}
REPO = Path(__file__).resolve().parents[2]
EXTENSION_NAME = "sd-webui-depth2img"
START_TIMEOUT = 900
JOB_TIMEOUT = 900
BASE_CHECKPOINT = "sd2-base-random.safetensors"
DEPTH_CHECKPOINT = "512-depth-ema.safetensors"


def png_b64(image: Image.Image) -> str:
    """An image as the WebUI API takes it: PNG, base64."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def decoded(b64: str) -> Image.Image:
    """An image from the WebUI API's base64 answer."""
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def webui_checkout(kind: WebUIKind = A1111) -> Path | None:
    root = os.environ.get(kind.directory_variable)
    if not root:
        return None
    for candidate in (Path(root), Path(root) / "webui"):
        if (candidate / "launch.py").is_file():
            return candidate.resolve()
    return None


def webui_python(webui: Path, kind: WebUIKind = A1111) -> Path | None:
    candidates = [os.environ.get(kind.python_variable), webui / "venv/bin/python", webui.parent / "venv/bin/python"]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def launch_command(webui: Path, port: int, checkpoint: str, kind: WebUIKind = A1111,
                   extra_flags: tuple[str, ...] = ()) -> list[str]:
    """`python launch.py` with the kind's flags and `extra_flags`, listening on `port`, starting on `checkpoint`."""
    python = webui_python(webui, kind)
    if python is None:
        raise FileNotFoundError(f"no Python for {webui}: set {kind.python_variable} or create {webui}/venv")
    return [str(python), "launch.py", *kind.launch_flags, *extra_flags, "--port", str(port),
            "--ckpt", str(Path("models/Stable-diffusion") / checkpoint)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One WebUI process on 127.0.0.1, spoken to with the standard library; with `credentials`
    (user, password) it runs with `--api-auth` and every request sends them unless told not to."""

    def __init__(
        self, webui: Path, log_path: Path, checkpoint: str = BASE_CHECKPOINT,
        credentials: tuple[str, str] | None = None, kind: WebUIKind = A1111,
    ) -> None:
        self.webui = webui
        self.kind = kind
        self.port = free_port()
        self.log_path = log_path
        self.credentials = credentials
        extra_flags = ("--api-auth", ":".join(credentials)) if credentials else ()
        self.log = open(log_path, "wb")  # noqa: SIM115  (the server writes to it until stop())
        self.process = subprocess.Popen(
            launch_command(self.webui, self.port, checkpoint, kind, extra_flags), cwd=self.webui, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ, **OFFLINE_ENVIRONMENT),
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self) -> None:
        """Wait for the "Startup time" line (both WebUIs), printed once the API routes are added: a
        request that arrives earlier makes starlette refuse the API middleware and the start fails."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind.name} exited ({self.process.returncode}); see {self.log_path}")
            if b"Startup time:" in self.log_path.read_bytes():
                status, answer = self.get("/sdapi/v1/options")
                assert status == 200, answer
                return
            time.sleep(3)
        raise TimeoutError(f"{self.kind.name} did not start within {START_TIMEOUT} s; see {self.log_path}")

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        status, text = self.send(method, path, None if body is None else json.dumps(body).encode())
        return status, json.loads(text or "null")

    def send(
        self, method: str, path: str, content: bytes | None = None, credentials: tuple[str, str] | None = None,
        authenticated: bool = True,
    ) -> tuple[int, str]:
        """(status, response text) for raw `content`; `credentials` other than the server's, or
        none at all with `authenticated=False`."""
        headers = {"Content-Type": "application/json"}
        credentials = credentials or (self.credentials if authenticated else None)
        if credentials:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
        request = urllib.request.Request(self.url(path), data=content, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=JOB_TIMEOUT) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def get(self, path: str) -> tuple[int, dict]:
        return self.request("GET", path)

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        return self.request("POST", path, body)

    def selected_checkpoint(self) -> str:
        return self.get("/sdapi/v1/options")[1]["sd_model_checkpoint"]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the process group start_new_session made
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


@contextlib.contextmanager
def running_server(
    webui: Path, log_path: Path, credentials: tuple[str, str] | None = None, kind: WebUIKind = A1111
) -> Iterator[Server]:
    server = Server(webui, log_path, credentials=credentials, kind=kind)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def extension_installed(webui: Path, repo: Path = REPO, kind: WebUIKind = A1111) -> Iterator[Path]:
    """The repository as extensions/sd-webui-depth2img (a link), its install.py run by the WebUI's helper."""
    link = webui / "extensions" / EXTENSION_NAME
    created = not link.exists()
    if created:
        link.symlink_to(repo, target_is_directory=True)
    elif link.resolve() != repo.resolve():
        raise RuntimeError(f"{link} is another checkout ({link.resolve()}); the test would run its code, not {repo}")
    try:
        installer = (
            "import sys; sys.argv = ['launch.py']; from modules import launch_utils; "
            f"launch_utils.run_extension_installer({str(link)!r})"
        )
        result = subprocess.run([str(webui_python(webui, kind)), "-c", installer], cwd=webui,
                                capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, result.stderr
        assert "Error running install.py" not in result.stdout + result.stderr, result.stdout + result.stderr
        yield link
    finally:
        if created:
            link.unlink()


CHROMIUM = Path("/usr/bin/chromium")
TITLED_SETTINGS = ("gamma", "depth_image")
"""Settings (a slider, an image upload) whose hint the WebUI's hints.js must show as the title."""
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"]


def show_depth_map_in_chromium(server: Server, image: Image.Image, screenshots: Path, name: str) -> None:
    """In the WebUI's img2img tab (A1111 or Forge): upload `image`, open Depth2img, press Show
    depth map. Checks that the settings' hints are their titles (the panel's `tooltip=`, set by
    the WebUI's hints.js), that the preview shows a picture (not a blank) and the status line the
    estimator used, and that the preview ran as a WebUI task whose progress bar ends and gives
    Generate back. Keeps `<name>.png` (the page) and `preview.png` in `screenshots` for a person
    to look at."""
    import pytest

    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium")
    picture = screenshots / "init.png"
    image.save(picture)
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1400})
            page.goto(server.url("/"), timeout=START_TIMEOUT * 1000)
            page.locator("#tabs button", has_text="img2img").first.click()
            page.set_input_files("#img2img_image input[type=file]", str(picture))
            page.locator("#depth2img_img2img .label-wrap").first.click()
            for setting in TITLED_SETTINGS:
                sync_api.expect(page.locator(f"#depth2img_img2img_{setting}")).to_have_attribute(
                    "title", Depth2imgArgs.spec(setting).hint
                )
            page.click("#depth2img_img2img_preview")
            preview = page.locator("#depth2img_img2img_preview_image img")
            preview.or_(page.locator(".depth2img-status-error")).first.wait_for(timeout=JOB_TIMEOUT * 1000)
            status = page.locator("#depth2img_img2img_status").first.inner_text()
            assert preview.count() == 1, status
            page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)
            preview.screenshot(path=str(screenshots / "preview.png"))
            page.locator("#img2img_generate").wait_for(state="visible", timeout=30_000)
            page.locator("#img2img .progressDiv").wait_for(state="detached", timeout=30_000)
        finally:
            browser.close()
    assert "estimat" in status, status
    assert np.asarray(Image.open(screenshots / "preview.png").convert("L"), dtype=np.float32).std() > 1.0
