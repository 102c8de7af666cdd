"""A WebUI made of the stub: checkpoints on disk, the Depth2img script loaded from scripts/, and
both tabs' UI built, so tests drive the adapter the way A1111 does.

    def test_something(webui):
        processed = webui.img2img(image, enabled=True)
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from modules import (
    call_queue,
    errors,
    gradio_extensons,
    images,
    processing,
    script_callbacks,
    script_loading,
    scripts,
    sd_models,
    shared,
)
from modules.api.api import Api
from PIL import Image
from safetensors.torch import save_file

import webui_stub
from lib_depth2img.depthmaps.cache import DepthCache
from lib_depth2img.estimators import write_tiny_depth_weights
from lib_depth2img.settings import Depth2imgArgs
from lib_depth2img.webui import depth_service

REPO = Path(__file__).resolve().parents[2]
SCRIPT_FILE = REPO / "scripts" / "depth2img.py"
XYZ_FILE = Path(webui_stub.STUB_DIR) / "scripts" / "xyz_grid.py"
INIT_IMAGE_ELEM_IDS = ("img2img_image", "img2img_sketch", "img2maskimg", "inpaint_sketch", "img_inpaint_base")
FIELDS = [name for name, _ in Depth2imgArgs.specs()]


def _image(elem_id: str) -> gr.Image:
    return gr.Image(elem_id=elem_id, type="pil")


def _index_radio(*choices: str) -> Any:
    return lambda elem_id: gr.Radio(list(choices), value=choices[0], type="index", elem_id=elem_id)


def _slider(value: float, maximum: float, step: float = 1) -> Any:
    return lambda elem_id: gr.Slider(minimum=0, maximum=maximum, step=step, value=value, elem_id=elem_id)


A1111_CONTROLS = {
    "img2img": {
        **{elem_id: _image for elem_id in INIT_IMAGE_ELEM_IDS},
        "img_inpaint_mask": _image,
        "resize_mode": _index_radio("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)"),
        "img2img_width": _slider(512, 2048, 8),
        "img2img_height": _slider(512, 2048, 8),
        "img2img_scale": _slider(1.0, 4.0, 0.05),
        "img2img_mask_blur": _slider(4, 64),
        "img2img_mask_mode": _index_radio("Inpaint masked", "Inpaint not masked"),
        "img2img_inpaint_full_res": _index_radio("Whole picture", "Only masked"),
        "img2img_inpaint_full_res_padding": _slider(32, 256, 4),
    },
    "txt2img": {"txt2img_width": _slider(512, 2048, 8), "txt2img_height": _slider(512, 2048, 8)},
}
"""A1111 v1.10.1's img2img and txt2img controls that the panel's preview reads, by elem_id, with
their A1111 kinds, value types and defaults (`modules/ui.py`)."""


@functools.cache
def _tiny_depth_checkpoint_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "depth.safetensors"
        write_tiny_depth_weights(path)
        return path.read_bytes()


def write_depth_checkpoint(path: Path) -> Path:
    """A tiny SD depth checkpoint: random MiDaS weights under `depth_model.model.` (the marker key
    included); built once per session, it takes seconds."""
    path.write_bytes(_tiny_depth_checkpoint_bytes())
    return path


def write_plain_checkpoint(path: Path, unet_in_channels: int = 4) -> Path:
    """A tiny non-depth checkpoint (4 UNet input channels: SD2 base; 9: an inpainting model)."""
    save_file(
        {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, unet_in_channels, 3, 3)}, str(path)
    )
    return path


class WebUI:
    """The stub WebUI of one test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.models = root / "models"
        self.outputs = root / "outputs"
        self.runners = {False: scripts.ScriptRunner(), True: scripts.ScriptRunner()}
        self.init_image_components: dict[str, Any] = {}
        self.components: dict[str, Any] = {}
        self.controls_before_scripts = True
        """A1111's default page order; False: the user moved the scripts above the controls."""

    # -- set-up --------------------------------------------------------------------------------

    def start(
        self,
        checkpoints: Sequence[str] = ("sd2-base.safetensors", "512-depth-ema.safetensors"),
        selected: str | None = "sd2-base.safetensors",
    ) -> WebUI:
        """Write the checkpoints, list them, select one (as config.json would) and build both tabs."""
        for name in checkpoints:
            self.add_checkpoint(name)
        sd_models.list_models()
        if selected is not None:
            shared.opts.data["sd_model_checkpoint"] = sd_models.get_closet_checkpoint_match(selected).title
        scripts.scripts_data[:] = [
            scripts.ScriptClassData(cls, str(path), str(path.parent.parent), module)
            for path in (SCRIPT_FILE, XYZ_FILE)
            for module in [script_loading.load_module(str(path))]
            for cls in module.__dict__.values()
            if isinstance(cls, type) and issubclass(cls, scripts.Script) and cls is not scripts.Script
        ]
        scripts.scripts_txt2img, scripts.scripts_img2img = self.runners[False], self.runners[True]
        script_callbacks.before_ui_callback()
        with gr.Blocks() as self.demo:
            for is_img2img, runner in self.runners.items():
                runner.initialize_scripts(is_img2img)
                tab = "img2img" if is_img2img else "txt2img"
                for elem_id, make in (A1111_CONTROLS[tab] if self.controls_before_scripts else {}).items():
                    self.add_control(runner, elem_id, make)
                runner.setup_ui()
                for elem_id, make in (A1111_CONTROLS[tab] if not self.controls_before_scripts else {}).items():
                    self.add_control(runner, elem_id, make)
        return self

    def add_control(self, runner: scripts.ScriptRunner, elem_id: str, make: Any) -> None:
        component = make(elem_id)
        self.components[elem_id] = component
        if elem_id in INIT_IMAGE_ELEM_IDS:
            self.init_image_components[elem_id] = component
        runner.after_component(component, elem_id=elem_id)

    def add_checkpoint(self, name: str) -> Path:
        path = self.models / "Stable-diffusion" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if "depth" in name:
            return write_depth_checkpoint(path)
        return write_plain_checkpoint(path, 9 if "inpaint" in name else 4)

    # -- the script ----------------------------------------------------------------------------

    def script(self, is_img2img: bool = True) -> Any:
        return self.runners[is_img2img].script("Depth2img")

    def script_args(
        self, is_img2img: bool = True, values: Sequence[Any] | None = None, **fields: Any
    ) -> tuple:
        """The whole `p.script_args`: the selectable-script index, then Depth2img's values; positions
        `values` leaves out keep the UI's defaults, as A1111's API fills them."""
        script = self.script(is_img2img)
        if values is None:
            chosen = {**Depth2imgArgs.defaults(), **fields}
            values = [chosen[name] for name in FIELDS]
        args = [0] + [control.value for control in script.controls]
        args[script.args_from : script.args_from + len(values)] = list(values)
        return tuple(args)

    # -- jobs ----------------------------------------------------------------------------------

    def img2img_p(
        self,
        init_images: Sequence[Image.Image],
        *,
        values: Sequence[Any] | None = None,
        depth2img: dict[str, Any] | None = None,
        **p_fields: Any,
    ) -> processing.StableDiffusionProcessingImg2Img:
        p_fields = {
            "width": 64,
            "height": 64,
            "seed": 1,
            "steps": 2,
            "outpath_samples": str(self.outputs),
            **p_fields,
        }
        p = processing.StableDiffusionProcessingImg2Img(init_images=list(init_images), **p_fields)
        p.scripts = self.runners[True]
        p.script_args = self.script_args(True, values, **(depth2img or {}))
        return p

    def txt2img_p(
        self, *, values: Sequence[Any] | None = None, depth2img: dict[str, Any] | None = None, **p_fields: Any
    ) -> processing.StableDiffusionProcessingTxt2Img:
        p_fields = {
            "width": 64,
            "height": 64,
            "seed": 1,
            "steps": 2,
            "outpath_samples": str(self.outputs),
            **p_fields,
        }
        p = processing.StableDiffusionProcessingTxt2Img(**p_fields)
        p.scripts = self.runners[False]
        p.script_args = self.script_args(False, values, **(depth2img or {}))
        return p

    def img2img(self, *init_images: Image.Image, **kwargs: Any) -> processing.Processed:
        return processing.process_images(self.img2img_p(init_images, **kwargs))

    def txt2img(self, **kwargs: Any) -> processing.Processed:
        return processing.process_images(self.txt2img_p(**kwargs))

    # -- the HTTP API ----------------------------------------------------------------------------

    def serve(self, **flags: Any) -> TestClient:
        """A client of the app `webui.py` builds under these command-line flags (`api=True` for
        `--api`): A1111's API where it is on, then the `app_started` callbacks, which mount ours."""
        shared.cmd_opts = shared.parse_command_line(**flags)
        shared.opts.outdir_samples = str(self.outputs)
        app = FastAPI()
        if shared.cmd_opts.api or shared.cmd_opts.nowebui:
            Api(app, call_queue.queue_lock)
        script_callbacks.app_started_callback(None if shared.cmd_opts.nowebui else self.demo, app)
        return TestClient(app)

    @property
    def model(self) -> Any:
        return sd_models.model_data.sd_model


@pytest.fixture
def webui(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WebUI:
    """A fresh stub WebUI (nothing started yet: call `.start()`); depth2img's caches emptied, gradio
    patched as A1111 patches it (components take `tooltip=`)."""
    gradio_extensons.patch(monkeypatch)
    shared.reset()
    sd_models.reset(str(tmp_path / "models"))
    script_callbacks.clear_callbacks()
    errors.reported.clear()
    images.saved.clear()
    monkeypatch.setattr(depth_service, "_cache", DepthCache(256 * 2**20))
    monkeypatch.setattr(depth_service, "_estimator", None)
    return WebUI(tmp_path)


@pytest.fixture
def started(webui: WebUI) -> WebUI:
    """The stub WebUI with SD2 base selected and 512-depth-ema available."""
    return webui.start()


def gradient(width: int = 96, height: int = 64, vertical: bool = False) -> Image.Image:
    """Dark (far) to bright (near), left to right (or top to bottom)."""
    if vertical:
        ramp = np.repeat(np.linspace(0, 255, height, dtype=np.float32)[:, None], width, axis=1)
    else:
        ramp = np.repeat(np.linspace(0, 255, width, dtype=np.float32)[None, :], height, axis=0)
    return Image.fromarray(np.repeat(ramp[:, :, None], 3, axis=2).astype(np.uint8))
