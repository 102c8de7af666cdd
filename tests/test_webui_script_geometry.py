"""Depth follows A1111's geometry: resize modes, the "only masked" crop, own depth maps, the
batch tab's depth folder, and txt2img (with hires fix) from a depth map."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import webui_stub  # noqa: F401  (first: A1111's `modules` for the adapter)
from modules import images, img2img, processing, sd_models, shared
from PIL import Image
from webui_stub import harness
from webui_stub.harness import gradient

from lib_depth2img.depthmaps.geometry import Geometry, fit_map
from lib_depth2img.depthmaps.values import depth_conditioning, normalize_depth
from lib_depth2img.errors import ImageError, SettingsError
from lib_depth2img.webui import depth_service

webui, started = harness.webui, harness.started  # pytest fixtures


@pytest.fixture
def brightness_depth(started, counting_estimator, monkeypatch):
    """Depth = brightness (conftest's CountingEstimator), so the expected depth is the image itself."""
    monkeypatch.setattr(depth_service, "get_estimator", lambda args: counting_estimator)
    return counting_estimator


def conditioning_of(depth: np.ndarray, latent_size: tuple[int, int]) -> torch.Tensor:
    return depth_conditioning([normalize_depth(depth)], latent_size)[0, 0]


def brightness(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32).mean(axis=2)


def scene(width: int = 160, height: int = 120) -> Image.Image:
    """A horizontal ramp with a bright square: depth that tells any crop or shift apart."""
    pixels = np.repeat(np.linspace(0, 160, width, dtype=np.float32)[None, :], height, axis=0)
    pixels[70:100, 100:140] = 255
    return Image.fromarray(np.repeat(pixels[:, :, None], 3, axis=2).astype(np.uint8))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("resize_mode", [0, 1, 2])
def test_depth_is_fitted_like_the_image_for_each_resize_mode(started, brightness_depth, resize_mode):
    image = scene()
    started.img2img(image, depth2img={"enabled": True}, width=64, height=64, resize_mode=resize_mode)
    fed_image = images.resize_image(resize_mode, image, 64, 64)  # what A1111 gave the model
    assert brightness_depth.images[-1].tobytes() == fed_image.tobytes()  # MiDaS sees exactly those pixels
    expected = conditioning_of(brightness(fed_image), (8, 8))
    assert torch.allclose(started.model.unet_calls[0][0, 0], expected, atol=1e-5)


def test_inpaint_only_masked_takes_the_depth_of_the_crop(started, brightness_depth):
    image = scene()
    mask = Image.new("L", image.size, 0)
    mask.paste(255, (96, 64, 144, 104))
    p = started.img2img_p(
        [image],
        mask=mask,
        inpaint_full_res=True,
        inpaint_full_res_padding=8,
        depth2img={"enabled": True},
        width=64,
        height=64,
    )
    processing.process_images(p)

    x, y, w, h = p.paste_to
    fed_image = images.resize_image(2, image.crop((x, y, x + w, y + h)), 64, 64)
    expected = conditioning_of(brightness(fed_image), (8, 8))
    whole_image = conditioning_of(brightness(images.resize_image(0, image, 64, 64)), (8, 8))
    conditioning = started.model.unet_calls[0][0, 0]
    assert brightness_depth.images[-1].tobytes() == fed_image.tobytes()  # estimated on the crop A1111 feeds
    assert torch.allclose(conditioning, expected, atol=1e-5)
    assert not torch.allclose(conditioning, whole_image, atol=0.3)
    assert brightness_depth.calls == 1


def test_inpaint_whole_picture_uses_the_resize_mode(started, brightness_depth):
    image = scene()
    mask = Image.new("L", image.size, 0)
    mask.paste(255, (96, 64, 144, 104))
    started.img2img(
        image, mask=mask, inpaint_full_res=False, depth2img={"enabled": True}, width=64, height=64
    )
    expected = conditioning_of(brightness(images.resize_image(0, image, 64, 64)), (8, 8))
    assert torch.allclose(started.model.unet_calls[0][0, 0], expected, atol=1e-5)


def test_own_16_bit_depth_map_of_another_size_follows_the_image_geometry(started, brightness_depth):
    levels = np.repeat(np.linspace(0, 65535, 200)[None, :], 50, axis=0).astype(np.uint16)  # 200 x 50: wide
    own = Image.fromarray(levels)
    assert own.mode in ("I;16", "I")
    started.img2img(
        gradient(), depth2img={"enabled": True, "depth_image": own}, width=64, height=64, resize_mode=1
    )

    fitted = fit_map(levels.astype(np.float32) / 65535, Geometry(64, 64, 1), image_size=gradient().size)
    expected = depth_conditioning([fitted], (8, 8))[0, 0]  # an own map's levels are kept, not stretched
    assert torch.allclose(started.model.unet_calls[0][0, 0], expected, atol=1e-4)
    assert brightness_depth.calls == 0  # an own map never loads MiDaS


def test_own_8_bit_depth_map_as_base64_over_the_api(started, brightness_depth):
    import base64

    levels = np.repeat(np.linspace(0, 255, 64)[:, None], 64, axis=1).astype(np.uint8)  # near at the bottom
    encoded = base64.b64encode(png_bytes(Image.fromarray(levels))).decode()
    started.img2img(gradient(), values=[{"enabled": True, "depth_image": encoded}])
    conditioning = started.model.unet_calls[0][0, 0]
    assert torch.all(conditioning[-1] > conditioning[0])


def test_a_server_path_as_depth_image_over_the_api_is_refused(started, tmp_path):
    path = tmp_path / "secret.png"
    gradient().save(path)
    p = started.img2img_p([gradient()], values=[{"enabled": True, "depth_image": str(path)}])
    with pytest.raises(ImageError, match="base64"):
        processing.process_images(p)


def test_flat_own_depth_map_gives_finite_conditioning(started):
    started.img2img(gradient(), depth2img={"enabled": True, "depth_image": Image.new("L", (64, 64), 128)})
    conditioning = started.model.unet_calls[0]
    assert torch.isfinite(conditioning).all() and torch.all(conditioning == -1.0)


def test_batch_tab_pairs_each_input_with_its_depth_map(started, tmp_path):
    inputs, depths = tmp_path / "in", tmp_path / "depth"
    inputs.mkdir(), depths.mkdir()
    for name, vertical in (("frame_a", False), ("frame_b", True)):
        gradient(64, 64).save(inputs / f"{name}.png")
        gradient(64, 64, vertical=vertical).convert("L").save(depths / f"{name}.png")
    p = started.img2img_p([], depth2img={"enabled": True, "depth_folder": str(depths)})

    img2img.process_batch(p, str(inputs), "", "", p.script_args)

    first, second = (call[0, 0] for call in started.model.unet_calls)
    assert torch.all(first[:, -1] > first[:, 0])  # frame_a: nearer to the right
    assert torch.all(second[-1] > second[0])  # frame_b: nearer at the bottom
    assert "depth2img_job" not in vars(p)


def test_batch_tab_without_a_matching_depth_map_says_which(started, tmp_path):
    inputs, depths = tmp_path / "in", tmp_path / "depth"
    inputs.mkdir(), depths.mkdir()
    gradient(64, 64).save(inputs / "frame_c.png")
    p = started.img2img_p([], depth2img={"enabled": True, "depth_folder": str(depths)})
    with pytest.raises(ImageError, match="no depth map for frame_c.png"):
        img2img.process_batch(p, str(inputs), "", "", p.script_args)


def test_batch_tab_without_a_depth_folder_estimates_each_input(started, brightness_depth, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    gradient(64, 64).save(inputs / "a.png")
    gradient(64, 64, vertical=True).save(inputs / "b.png")
    p = started.img2img_p([], depth2img={"enabled": True}, batch_size=2)
    img2img.process_batch(p, str(inputs), "", "", p.script_args)
    assert brightness_depth.calls == 2  # one per file, none per batch item


# -- txt2img ----------------------------------------------------------------------------------------


def test_txt2img_with_the_depth_model_fails_in_a1111_alone(webui):
    webui.start(selected="512-depth-ema.safetensors")
    with pytest.raises(RuntimeError, match="UNet input mismatch"):
        webui.txt2img(depth2img={"enabled": False})


def test_txt2img_from_an_own_depth_map(started):
    own = gradient(64, 64, vertical=True).convert("L")
    processed = started.txt2img(depth2img={"enabled": True, "depth_image": own}, batch_size=2)
    conditioning = started.model.unet_calls[0]
    assert conditioning.shape == (2, 1, 8, 8) and torch.all(conditioning[0, 0, -1] > conditioning[0, 0, 0])
    assert len(processed.images) == 3  # the grid and two images
    assert sd_models.loads[-1].startswith("512-depth-ema")


def test_txt2img_without_a_depth_map_says_so_and_generates_nothing(started):
    p = started.txt2img_p(depth2img={"enabled": True})
    with pytest.raises(SettingsError, match="upload your own depth map"):
        processing.process_images(p)
    assert len(sd_models.loads) == 1 and started.model.unet_calls == []


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_txt2img_hires_pass_gets_the_depth_at_the_hires_size(started, upscaler):
    own = gradient(64, 64).convert("L")
    started.txt2img(
        depth2img={"enabled": True, "depth_image": own}, enable_hr=True, hr_scale=2, hr_upscaler=upscaler
    )
    first, second = started.model.unet_calls
    assert first.shape == (1, 1, 8, 8) and second.shape == (1, 1, 16, 16)
    assert torch.all(second[0, 0, :, -1] > second[0, 0, :, 0])


def test_txt2img_latent_hires_with_a_conditioning_mask_weight_below_1_takes_the_img2img_path(started):
    """A1111 asks `img2img_image_conditioning` of a Latent hires pass when the inpainting mask
    weight is below 1 (Settings); the depth comes from the own map at the hires size there too."""
    shared.opts.data["inpainting_mask_weight"] = 0.5
    own = gradient(64, 64).convert("L")
    started.txt2img(depth2img={"enabled": True, "depth_image": own}, enable_hr=True, hr_scale=2, hr_upscaler="Latent")
    _, second = started.model.unet_calls
    assert second.shape == (1, 1, 16, 16) and torch.all(second[0, 0, :, -1] > second[0, 0, :, 0])


def test_txt2img_hires_resize_to_another_aspect_crops_the_depth_like_the_latent(started):
    own = gradient(64, 64).convert("L")
    started.txt2img(
        depth2img={"enabled": True, "depth_image": own},
        enable_hr=True,
        hr_upscaler="Latent",
        hr_resize_x=128,
        hr_resize_y=96,
    )
    assert started.model.unet_calls[1].shape == (1, 1, 12, 16)
