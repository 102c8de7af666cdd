"""What the adapter does differently in Forge, on the stub WebUI with Forge's differences put in:
the depth model told without ldm, Forge's extra modules cleared for the job and restored, and the
preview reading Forge's canvases (tier 5 runs the real Forge)."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
import webui_stub  # noqa: F401  (first: A1111's `modules` for the adapter)
from modules import processing, shared
from PIL import Image
from webui_stub import harness
from webui_stub.harness import gradient

from lib_depth2img.webui import host, preview

webui, started = harness.webui, harness.started  # pytest fixtures
EXTRA_MODULES = ["/models/VAE/sd15-vae.safetensors"]


def forge_model(in_channels: int, is_sd2: bool = True) -> SimpleNamespace:
    """A Forge engine object as far as `is_depth_model` looks: no `depth_model`, a patched UNet."""
    unet = SimpleNamespace(model=SimpleNamespace(diffusion_model=SimpleNamespace(in_channels=in_channels)))
    return SimpleNamespace(is_sd2=is_sd2, forge_objects=SimpleNamespace(unet=unet))


@pytest.mark.parametrize(
    ("model", "expected"),
    [(forge_model(5), True), (forge_model(9), False), (forge_model(4), False),
     (forge_model(5, is_sd2=False), False), (None, False)],
    ids=["sd2-depth", "sd2-inpaint", "sd2-base", "not-sd2", "none"],
)
def test_forge_depth_model_is_the_sd2_unet_with_five_channels(model, expected):
    assert host.is_depth_model(model) is expected


def test_a1111_depth_model_is_the_one_with_midas(started):
    assert not host.is_depth_model(started.model)  # SD2 base is selected
    started.img2img(gradient(), depth2img={"enabled": True})
    assert host.is_depth_model(started.model)


def test_forges_extra_modules_are_cleared_for_the_job_and_restored(started, monkeypatch):
    monkeypatch.setattr(host, "IS_FORGE", True)
    shared.opts.add_option(host.ADDITIONAL_MODULES_OPTION, shared.OptionInfo([], "VAE / Text Encoder"))  # as Forge
    shared.opts.data[host.ADDITIONAL_MODULES_OPTION] = list(EXTRA_MODULES)
    seen = {}

    def record(p, *args, **kwargs):
        seen["modules"] = shared.opts.data[host.ADDITIONAL_MODULES_OPTION]
        return original(p, *args, **kwargs)

    original = processing.StableDiffusionProcessingImg2Img.init
    monkeypatch.setattr(processing.StableDiffusionProcessingImg2Img, "init", record)
    p = started.img2img_p([gradient()], depth2img={"enabled": True})
    processing.process_images(p)
    assert seen["modules"] == []
    assert shared.opts.data[host.ADDITIONAL_MODULES_OPTION] == EXTRA_MODULES and p.override_settings == {}


def test_in_a1111_the_option_is_left_alone(started):
    shared.opts.data[host.ADDITIONAL_MODULES_OPTION] = list(EXTRA_MODULES)
    p = started.img2img_p([gradient()], depth2img={"enabled": True})
    processing.process_images(p)
    assert shared.opts.data[host.ADDITIONAL_MODULES_OPTION] == EXTRA_MODULES


# -- Forge's canvases in the preview -----------------------------------------------------------------

def forge_page() -> tuple[preview.PreviewWiring, dict[str, dict[str, object]]]:
    """Forge's img2img controls in its order: per canvas an HTML block, then its foreground and
    background fields; Inpaint upload's plain images; the size and inpaint controls."""
    wiring = preview.PreviewWiring(is_img2img=True, forge_canvases=True)
    canvases: dict[str, dict[str, object]] = {}
    with gr.Blocks():
        for elem_id in preview.INIT_IMAGE_ELEM_IDS[:preview.INPAINT_UPLOAD_TAB]:
            wiring.capture(gr.HTML(elem_id=elem_id))
            canvases[elem_id] = {
                layer: gr.Textbox(visible=False, elem_id="uuid_canvas", elem_classes=[css_class])
                for css_class, layer in preview.FORGE_CANVAS_LAYERS.items()
            }
            for component in canvases[elem_id].values():
                wiring.capture(component)
        for elem_id in ("img_inpaint_base", *preview.FIELD_ELEM_IDS[True].values()):
            wiring.capture(gr.Textbox(elem_id=elem_id))
    return wiring, canvases


def test_forge_canvases_are_captured_by_the_html_block_before_them():
    wiring, canvases = forge_page()
    assert not set(wiring.wanted) - set(wiring.components)
    assert wiring.components["img2maskimg:background"] is canvases["img2maskimg"]["background"]
    assert wiring.components["img2maskimg:foreground"] is canvases["img2maskimg"]["foreground"]


def test_forge_inpaint_mask_comes_from_the_drawing_and_the_sketch_is_composited():
    background = gradient(64, 64).convert("RGBA")
    drawing = np.zeros((64, 64, 4), np.uint8)
    drawing[10:20, 30:40] = (255, 0, 0, 255)
    foreground = Image.fromarray(drawing)
    sources = [None, background, background, None, None]
    fields = {"width": 64, "height": 64, "foreground_1": foreground, "foreground_2": foreground}

    sketched, _ = preview.read_geometry([1], sources, fields)
    assert sketched.getpixel((35, 15))[:3] == (255, 0, 0)
    image, geometry = preview.read_geometry([2], sources, fields)
    assert image.getpixel((35, 15)) == background.getpixel((35, 15))
    mask = np.asarray(geometry.mask.convert("L"))
    assert mask[15, 35] == 255 and mask[40, 10] == 0
