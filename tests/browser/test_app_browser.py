"""Tier 4: `python -m lib_depth2img serve --demo` driven in headless Chromium, as a user would.

The app runs in a subprocess exactly as the README starts it (the demo checkpoint is written by
the command itself into a models folder under tmp). The browser uploads an init image, shows the
depth map, uploads its own depth map, generates 64 x 64 in 2 steps, and reads back what it sees:
the pixels of the preview and of the result, the banner, and the result file's infotext.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib_depth2img.checkpoints.download import MODELS_DIR_ENV_VAR
from lib_depth2img.infotext import Infotext, read_infotext
from lib_depth2img.settings import Depth2imgArgs
from lib_depth2img.ui.app import DEMO_BANNER
from lib_depth2img.ui.engine_services import DEMO_CHECKPOINT_NAME

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync",
]
REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90  # torch and gradio imports on a busy 2-core machine
JOB_TIMEOUT_MS = 60_000
SIZE = 64

if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium to run the browser tests",
                allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def app_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    """(URL, outputs folder, models folder) of `serve --demo` running in a subprocess."""
    root = tmp_path_factory.mktemp("app")
    port = _free_port()
    env = {**os.environ, MODELS_DIR_ENV_VAR: str(root / "models"), "GRADIO_ANALYTICS_ENABLED": "False"}
    log_path = root / "serve.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "lib_depth2img", "serve", "--demo", "--port", str(port),
             "--device", "cpu", "-o", str(root / "outputs")],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"serve exited with {server.returncode}:\n{log_path.read_text()}")
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"serve did not answer in {START_TIMEOUT_S} s:\n{log_path.read_text()}")
                time.sleep(0.5)
        yield url, root / "outputs", root / "models"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def page(app_server: tuple[str, Path, Path]) -> Iterator[playwright.Page]:
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.set_default_timeout(JOB_TIMEOUT_MS)
            page.goto(app_server[0])
            yield page
        finally:
            browser.close()


def _picture(tmp_path: Path) -> Path:
    """A 64 x 64 photo stand-in: a bright disc (near) on a dark ramp (far)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    rgb = np.stack([xx * 2, yy * 2, np.full_like(xx, 60)], axis=-1).astype(np.uint8)
    rgb[(xx - 32) ** 2 + (yy - 32) ** 2 < 15**2] = (240, 220, 200)
    path = tmp_path / "init.png"
    Image.fromarray(rgb).save(path)
    return path


def _own_depth_map(tmp_path: Path) -> Path:
    """A 16-bit vertical ramp, white (near) at the bottom, as a Blender depth pass might be."""
    ramp = np.repeat(np.linspace(0, 65535, SIZE, dtype=np.uint16)[:, None], SIZE, axis=1)
    path = tmp_path / "depth16.png"
    Image.fromarray(ramp).save(path)
    return path


def _gray_stats(page: playwright.Page, selector: str) -> dict[str, float]:
    """The pixels of the <img> at `selector` as the browser decoded them: the spread of their
    gray levels (0 for a blank or uniform picture) and the mean gray of the top and bottom rows."""
    return page.eval_on_selector(
        selector,
        """img => {
            const canvas = document.createElement("canvas");
            const [width, height] = [img.naturalWidth, img.naturalHeight];
            canvas.width = width; canvas.height = height;
            const context = canvas.getContext("2d");
            context.drawImage(img, 0, 0);
            const data = context.getImageData(0, 0, width, height).data;
            const gray = (i) => (data[4 * i] + data[4 * i + 1] + data[4 * i + 2]) / 3;
            let sum = 0, squares = 0, top = 0, bottom = 0;
            for (let i = 0; i < width * height; i++) { sum += gray(i); squares += gray(i) ** 2; }
            for (let x = 0; x < width; x++) { top += gray(x); bottom += gray((height - 1) * width + x); }
            const mean = sum / (width * height);
            return {spread: Math.sqrt(Math.max(squares / (width * height) - mean * mean, 0)),
                    top: top / width, bottom: bottom / width};
        }""",
    )


def _element_shot(page: playwright.Page, selector: str, path: Path) -> float:
    """Screenshot the element, keep it beside the page's, and return the spread of its gray levels."""
    page.locator(selector).screenshot(path=str(path))
    return float(np.asarray(Image.open(path).convert("L"), dtype=np.float32).std())


def _set_number(page: playwright.Page, elem_id: str, value: int) -> None:
    field = page.locator(f"#{elem_id} input[type=number]")
    field.fill(str(value))
    field.press("Enter")


def _loaded_img(page: playwright.Page, container: str) -> str:
    selector = f"{container} img"
    page.wait_for_function(
        "s => { const img = document.querySelector(s); return img && img.complete && img.naturalWidth > 0; }",
        arg=selector,
    )
    return selector


def test_preview_own_depth_map_and_generate_in_the_browser(
    page: playwright.Page, app_server: tuple[str, Path, Path], tmp_path: Path
) -> None:
    url, outputs, models = app_server
    playwright.expect(page.get_by_text(DEMO_BANNER)).to_be_visible()
    assert (models / DEMO_CHECKPOINT_NAME).is_file()
    # no tooltips in plain gradio: a setting's hint is the info text under its label, or a caption
    playwright.expect(page.locator("#depth2img_panel_gamma")).to_contain_text(Depth2imgArgs.spec("gamma").hint)
    playwright.expect(page.get_by_text(Depth2imgArgs.spec("depth_image").hint)).to_be_visible()

    page.set_input_files("#depth2img_app_init_image input[type=file]", str(_picture(tmp_path)))
    _loaded_img(page, "#depth2img_app_init_image")
    page.click("#depth2img_panel_preview")
    preview = _loaded_img(page, "#depth2img_panel_preview_image")
    playwright.expect(page.locator("#depth2img_panel_status p")).to_contain_text(
        "estimated by the embedded estimator, 64 x 64"
    )
    assert _gray_stats(page, preview)["spread"] > 1, "the estimated depth preview is blank"
    assert _element_shot(page, "#depth2img_panel_preview_image", tmp_path / "estimated.png") > 1
    download = page.locator("#depth2img_panel_depth_file a").first  # the 16-bit PNG offered beside it
    playwright.expect(download).to_be_visible()
    with urllib.request.urlopen(urllib.parse.urljoin(url, download.get_attribute("href"))) as response:
        sixteen = Image.open(io.BytesIO(response.read()))
    assert sixteen.mode in ("I;16", "I") and sixteen.size == (SIZE, SIZE)

    page.set_input_files("#depth2img_panel_depth_image input[type=file]", str(_own_depth_map(tmp_path)))
    _loaded_img(page, "#depth2img_panel_depth_image")
    page.fill("#depth2img_app_prompt textarea", "a clay diorama")
    _set_number(page, "depth2img_app_steps", 2)
    _set_number(page, "depth2img_app_seed", 7)
    page.click("#depth2img_app_generate")
    result = _loaded_img(page, "#depth2img_app_gallery")
    playwright.expect(page.locator("#depth2img_app_status p")).to_contain_text("seed(s) 7; saved in")
    screenshot = tmp_path / "app.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"screenshot: {screenshot}")

    result_pixels, used_depth = _gray_stats(page, result), _gray_stats(page, preview)
    assert result_pixels["spread"] > 1, "the result in the gallery is blank"
    assert used_depth["top"] < 10 and used_depth["bottom"] > 245, "the preview is not the depth map used"
    assert _element_shot(page, "#depth2img_app_gallery", tmp_path / "gallery.png") > 1
    assert "Steps: 2" in page.input_value("#depth2img_app_infotext textarea")

    with urllib.request.urlopen(urllib.parse.urljoin(url, page.get_attribute(result, "src"))) as response:
        shown = Image.open(io.BytesIO(response.read()))
    params = Infotext.parse(read_infotext(shown)).params
    assert (shown.size, params["Seed"], params["Steps"]) == ((SIZE, SIZE), "7", "2")
    (saved,) = outputs.rglob("*-7.png")
    assert read_infotext(saved) == read_infotext(shown)
