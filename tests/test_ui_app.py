"""The standalone app and `serve`, without a browser: layout, services, Generate, Stop, user errors.

Everything runs on a demo checkpoint written in tmp by the code `serve --demo` uses, at 64 x 64
in 2 steps. Jobs go through gradio's own `process_api` (preprocessing, the callback,
postprocessing), with inputs as the browser sends them (`support.gradio_events.sent`).
"""

from __future__ import annotations

import asyncio
import html
import io
import os
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from support.gradio_events import event_of, output_file, output_image, page_scripts, sent

from lib_depth2img.checkpoints.download import MODELS_DIR_ENV_VAR
from lib_depth2img.cli import build_parser
from lib_depth2img.cli import serve as serve_command
from lib_depth2img.depthmaps.source import DepthOrigin
from lib_depth2img.errors import Depth2imgError, SettingsError, WeightsError
from lib_depth2img.estimators import write_tiny_depth_weights
from lib_depth2img.estimators.files import OFFICIAL_DOWNLOADS
from lib_depth2img.infotext import Infotext, read_infotext
from lib_depth2img.settings import Depth2imgArgs
from lib_depth2img.ui import app as app_module
from lib_depth2img.ui import engine_services
from lib_depth2img.ui.app import DEMO_BANNER, JOB_CONTROLS, DepthApp, build_app
from lib_depth2img.ui.engine_services import DEMO_CHECKPOINT_NAME, EngineServices, ensure_demo_checkpoint

SIZE = 64


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    ensure_demo_checkpoint(folder)
    return folder


@pytest.fixture(scope="module")
def services(models_dir: Path) -> EngineServices:
    return EngineServices(models_dir)


@pytest.fixture(scope="module")
def app(services: EngineServices, tmp_path_factory: pytest.TempPathFactory) -> DepthApp:
    services.pipeline()  # as `serve` does before building: the notice knows it is the demo
    return build_app(services, tmp_path_factory.mktemp("outputs"))


def picture(size: tuple[int, int] = (SIZE, SIZE)) -> Image.Image:
    """A bright disc on a coloured ramp: an init image with something near and something far."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 60)], axis=-1).astype(np.uint8)
    rgb[(xx - width // 2) ** 2 + (yy - height // 2) ** 2 < (min(size) // 4) ** 2] = (240, 220, 200)
    return Image.fromarray(rgb)


def ramp_16bit() -> Image.Image:
    """A 16-bit depth pass: white (near) at the bottom."""
    return Image.fromarray(np.repeat(np.linspace(0, 65535, SIZE, dtype=np.uint16)[:, None], SIZE, axis=1))


def right_half_mask() -> Image.Image:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[:, SIZE // 2:] = 255
    return Image.fromarray(mask)


def as_sent(image: Image.Image) -> Any:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return sent(buffer.getvalue())


def browser_values(app: DepthApp, *, init: Any = None, mask: Any = None, **changes: Any) -> list[Any]:
    """Generate's inputs as the browser sends them: the components' values with `changes`
    (by `GenerationRequest` or `Depth2imgArgs` field name); images become uploads."""
    current = {name: control.value for name, control in app.job_controls.items()}
    current |= {name: control.value for name, control in app.panel.controls.items()}
    current |= {"steps": 2, "seed": 1, **changes}
    images = [init, mask, current["depth_image"]]
    init, mask, current["depth_image"] = (as_sent(i) if isinstance(i, Image.Image) else i for i in images)
    depth_settings = (current[name] for name, _ in Depth2imgArgs.specs())
    return [init, mask, *(current[name] for name in JOB_CONTROLS), *depth_settings]




def generate(app: DepthApp, **values: Any) -> dict[str, Any]:
    """One Generate click through gradio: {gallery, preview, status, infotext} as sent back."""
    inputs = browser_values(app, **values)
    output = asyncio.run(app.blocks.process_api(event_of(app.blocks, app.generate_button).key, inputs, state=None))
    return dict(zip(("gallery", "preview", "status", "infotext"), output["data"], strict=True))


def gallery_files(result: dict[str, Any]) -> list[Path]:
    return [output_file(item[0] if isinstance(item, (list, tuple)) else item) for item in result["gallery"]]


def params_of(path: Path) -> dict[str, str]:
    return Infotext.parse(read_infotext(path)).params


# -- layout ---------------------------------------------------------------------------------------

def test_app_builds_around_the_shared_panel_with_its_script_and_style(app: DepthApp) -> None:
    config = app.blocks.get_config_file()
    elem_ids = {component["props"].get("elem_id") for component in config["components"]}
    assert {
        "depth2img_app_init_image", "depth2img_app_mask", "depth2img_app_prompt", "depth2img_app_steps",
        "depth2img_app_generate", "depth2img_app_stop", "depth2img_app_gallery", "depth2img_app_status",
        "depth2img_panel_preview", "depth2img_panel_depth_image", "depth2img_panel_status",
    } <= elem_ids
    assert app.panel.controls["enabled"].visible is False and app.panel.controls["enabled"].value is True
    assert app.panel.controls["checkpoint"].value == DEMO_CHECKPOINT_NAME
    assert config["css"].startswith(app_module.PANEL_STYLE.read_text())
    scripts = page_scripts(app.blocks)
    assert any("function depth2imgPreviewInputs" in script and "createElement('script')" in script
               for script in scripts)


def test_the_demo_checkpoint_is_announced_on_the_page(app: DepthApp) -> None:
    assert DEMO_BANNER in app.notice.value


def test_without_a_checkpoint_the_app_says_where_to_put_one(tmp_path: Path) -> None:
    app = build_app(EngineServices(tmp_path / "models"), tmp_path / "outputs")
    assert str(tmp_path / "models") in app.notice.value and "Install depth model" in app.notice.value
    assert app.panel.install_button.visible is True
    result = generate(app, init=picture())
    assert "No depth checkpoint yet" in result["status"] and str(tmp_path / "models") in result["status"]


# -- services -------------------------------------------------------------------------------------

def test_services_list_the_startup_checkpoint_first_then_the_models_folder(
    models_dir: Path, tmp_path: Path
) -> None:
    elsewhere = ensure_demo_checkpoint(tmp_path)
    services = EngineServices(models_dir, startup_checkpoint=elsewhere)
    assert services.depth_checkpoint_titles() == [str(elsewhere), DEMO_CHECKPOINT_NAME]
    assert services.estimator_choices() == ["embedded", *OFFICIAL_DOWNLOADS]  # installable, none installed
    with pytest.raises(SettingsError, match=r"No depth checkpoint named 'nope\.safetensors'"):
        services.pipeline("nope.safetensors")


def test_the_app_estimates_with_depth_anything_weights_from_the_models_folder(tmp_path: Path) -> None:
    services = EngineServices(tmp_path / "models" / "Stable-diffusion", startup_checkpoint=ensure_demo_checkpoint(tmp_path))
    args = Depth2imgArgs(enabled=True, estimator="depth_anything_v2_vits")
    with pytest.raises(WeightsError, match="install-estimator depth_anything_v2_vits"):
        services.estimate_depth(picture(), args)
    folder = services.models_root / "depth_anything_v2"
    folder.mkdir(parents=True)
    write_tiny_depth_weights(folder / "depth_anything_v2_vits.safetensors", "depth_anything_v2_vits", prefix="")
    assert "depth_anything_v2_vits" in services.estimator_choices()
    assert "depth_anything_v2_vits" not in services.installable_estimators()
    result = services.estimate_depth(picture(), args)
    assert result.depth.shape == picture().size[::-1] and result.depth.std() > 0


def test_preview_fills_the_cache_that_generation_reads(services: EngineServices) -> None:
    args = Depth2imgArgs(enabled=True)
    image = picture()
    first = services.estimate_depth(image, args)
    again = services.estimate_depth(image, args)
    assert (first.origin, again.origin) == (DepthOrigin.ESTIMATOR, DepthOrigin.CACHE)
    assert first.depth.shape == (SIZE, SIZE) and first.depth.max() > first.depth.min()


def test_own_depth_map_previews_without_any_checkpoint(tmp_path: Path) -> None:
    args = Depth2imgArgs(enabled=True, depth_image=ramp_16bit())
    result = EngineServices(tmp_path).estimate_depth(None, args)
    assert result.origin == DepthOrigin.OWN_MAP and result.depth[-1, 0] == 1.0


def test_install_downloads_into_the_models_folder_with_the_shared_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def download(dest_dir: Path, *, fmt: str, progress: Any) -> Path:
        calls.append((dest_dir, fmt))
        return dest_dir / f"512-depth-ema.{fmt}"

    monkeypatch.setattr(engine_services, "download_depth_model", download)
    where = EngineServices(tmp_path).install_depth_model("ckpt")
    assert calls == [(tmp_path, "ckpt")] and where == str(tmp_path / "512-depth-ema.ckpt")


def test_demo_checkpoint_is_written_once_and_atomically(tmp_path: Path) -> None:
    path = ensure_demo_checkpoint(tmp_path)
    written = path.stat().st_mtime_ns
    assert ensure_demo_checkpoint(tmp_path) == path and path.stat().st_mtime_ns == written
    assert os.listdir(tmp_path) == [DEMO_CHECKPOINT_NAME]  # no staging folder left behind
    assert EngineServices(tmp_path).pipeline().model.is_demo


# -- Generate -------------------------------------------------------------------------------------

def test_img2img_saves_pngs_with_infotext_and_shows_them(app: DepthApp) -> None:
    result = generate(app, init=picture(), prompt="a clay diorama", seed=5, batch_size=2)
    files = gallery_files(result)
    assert len(files) == 2 and "saved in" in result["status"]
    for path, seed in zip(files, ("5", "6"), strict=True):
        params = params_of(path)  # the gallery's copy carries the infotext too
        shown = (params["Seed"], params["Steps"], params["Size"], params["Denoising strength"])
        assert shown == (seed, "2", "64x64", "0.75")
        assert params["Depth2img"] == "True" and params["Model"] == "DEMO-random-weights"
    saved = [next(app.runner.day_folder().glob(f"*-{seed}.png")) for seed in (5, 6)]
    assert [read_infotext(path) for path in saved] == [read_infotext(path) for path in files]
    assert result["infotext"].startswith("a clay diorama\n") and "Seed: 5" in result["infotext"]
    assert not list(app.runner.day_folder().glob(".*"))  # no temporary files left


def test_own_depth_map_alone_is_txt2img_from_depth(app: DepthApp) -> None:
    result = generate(
        app, depth_image=ramp_16bit(), denoising_strength=0.3, append_depth=True, save_depth=True
    )
    *images, depth_item = gallery_files(result)
    assert len(images) == 1 and params_of(images[0])["Denoising strength"] == "1"
    shown_depth = np.asarray(Image.open(depth_item))
    assert shown_depth[0].mean() < 10 and shown_depth[-1].mean() > 245  # the ramp: white (near) at the bottom
    saved_depth = next(app.runner.day_folder().glob("*-1-depth.png"))
    assert Image.open(saved_depth).mode.startswith("I")  # 16-bit


def test_inpaint_keeps_the_init_image_outside_the_mask(app: DepthApp) -> None:
    init = picture()
    result = generate(app, init=init, mask=right_half_mask(), mask_blur=0, depth_image=ramp_16bit())
    (path,) = gallery_files(result)
    output = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    original = np.asarray(init, dtype=np.int16)
    assert np.abs(output[:, :24] - original[:, :24]).max() <= 1
    assert np.abs(output[:, 40:] - original[:, 40:]).mean() > 5
    assert "Mask blur" not in params_of(path)  # blur 0 is not written, as A1111 does


def test_the_depth_map_used_replaces_the_preview(app: DepthApp) -> None:
    result = generate(app, init=picture(), depth_image=ramp_16bit())
    preview = output_image(result["preview"])
    assert np.asarray(preview.convert("L"))[-1].mean() > 245


# -- user errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "Give an init image, your own depth map, or both."),
        ({"init": sent(b"not an image")}, "the init image: not an image that can be"),
        ({"init": picture(), "far_clip": 0.8, "near_clip": 0.2}, "far clip (0.8) must be below near clip"),
        ({"init": picture(), "width": 100}, "Width must be a multiple of 8, got 100."),
        ({"init": picture(), "mask": right_half_mask().resize((32, 32))}, "use a mask of the same size"),
        ({"init": picture(), "checkpoint": "gone.ckpt"}, "No depth checkpoint named 'gone.ckpt'"),
    ],
    ids=["nothing-to-work-on", "bad-upload", "bad-clip", "bad-width", "mask-size", "unknown-checkpoint"],
)
def test_user_errors_come_back_as_a_message_and_the_next_job_runs(
    app: DepthApp, values: dict[str, Any], message: str
) -> None:
    failed = generate(app, **values)
    assert html.escape(message) in failed["status"] and "depth2img-app-error" in failed["status"]
    assert "Traceback" not in failed["status"]
    assert gallery_files(generate(app, init=picture()))


def job_settings(app: DepthApp, **changes: Any) -> list[Any]:
    """The callback's values after the two images, as gradio's preprocessing hands them over."""
    values = browser_values(app, **changes)[2:]
    values[list(JOB_CONTROLS).index("resize_mode")] = 0  # the dropdown's label becomes its index
    return values


def test_progress_reports_every_sampling_step(app: DepthApp) -> None:
    wired = event_of(app.blocks, app.generate_button)
    assert wired.tracks_progress  # gradio found the gr.Progress parameter, so the browser shows the steps
    reports = []
    settings = job_settings(app, steps=3)
    app.runner.generate(picture(), None, *settings, progress=lambda *a, **k: reports.append((a, k)))
    assert reports == [(((done, 3),), {"desc": "Sampling", "unit": "steps"}) for done in (1, 2, 3)]


def test_stop_ends_the_job_after_the_current_step(app: DepthApp) -> None:
    settings = job_settings(app, steps=5)

    def press_stop_during_the_first_step(*args: Any, **kwargs: Any) -> None:
        app.runner.stop()

    stop_at_once = press_stop_during_the_first_step
    _, _, status, _ = app.runner.generate(picture(), None, *settings, progress=stop_at_once)
    assert "Generation cancelled." in status
    _, _, status, _ = app.runner.generate(picture(), None, *settings, progress=lambda *a, **k: None)
    assert "saved in" in status  # Stop does not stick to the next job
    assert "No job is running." in app.runner.stop()


def test_a_bug_is_reported_as_a_message_and_logged(
    app: DepthApp, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(app.runner, "save", broken)
    result = generate(app, init=picture())
    assert "The job failed (ZeroDivisionError: division by zero); the console has the details." in (
        result["status"]
    )
    assert "Traceback" in caplog.text


# -- serve ----------------------------------------------------------------------------------------

def test_serve_defaults_to_this_machine_only() -> None:
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.demo, args.ckpt) == ("127.0.0.1", 7862, False, None)
    assert args.func is serve_command.run


def test_serve_demo_loads_the_demo_and_launches_on_localhost(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launched = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **options: launched.update(options, blocks=self))
    monkeypatch.setenv(MODELS_DIR_ENV_VAR, str(models_dir))
    args = build_parser().parse_args(["serve", "--demo", "--port", "7999", "-o", str(tmp_path)])
    assert args.func(args) == 0
    assert (launched["server_name"], launched["server_port"]) == ("127.0.0.1", 7999)
    assert any(DEMO_BANNER in (block.value or "") for block in launched["blocks"].blocks.values()
               if isinstance(block, gr.HTML))


def test_serve_explains_when_gradio_cannot_reach_the_started_app(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gradio's own check fails on a busy machine; the user gets a line, not a trace."""
    def unreachable(self, **options):
        raise ValueError("When localhost is not accessible, a shareable link must be created. Please set share=True")

    monkeypatch.setattr(gr.Blocks, "launch", unreachable)
    monkeypatch.setenv(MODELS_DIR_ENV_VAR, str(models_dir))
    args = build_parser().parse_args(["serve", "--demo", "--port", "7999", "-o", str(tmp_path)])
    with pytest.raises(Depth2imgError, match=r"could not reach it at http://127\.0\.0\.1:7999.*start it again"):
        args.func(args)


def test_serve_keeps_its_own_requests_away_from_a_proxy(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gradio requests the app's own page while starting; a proxy would make that fail."""
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **options: None)
    monkeypatch.setenv(MODELS_DIR_ENV_VAR, str(models_dir))
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "intranet.example")
    monkeypatch.delenv("no_proxy", raising=False)
    args = build_parser().parse_args(["serve", "--demo", "--host", "0.0.0.0", "-o", str(tmp_path)])
    assert args.func(args) == 0
    assert os.environ["NO_PROXY"] == "intranet.example,0.0.0.0,127.0.0.1,localhost"
    assert os.environ["no_proxy"] == "0.0.0.0,127.0.0.1,localhost"


def test_serve_refuses_a_missing_checkpoint_file(tmp_path: Path) -> None:
    args = build_parser().parse_args(["serve", "--ckpt", str(tmp_path / "nope.safetensors")])
    with pytest.raises(Depth2imgError, match="no such file"):
        args.func(args)


def test_a_damaged_checkpoint_fails_at_start_not_at_the_first_job(tmp_path: Path) -> None:
    damaged = tmp_path / "512-depth-ema.safetensors"
    damaged.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    args = build_parser().parse_args(["serve", "--ckpt", str(damaged), "--device", "cpu"])
    with pytest.raises(WeightsError):
        args.func(args)
