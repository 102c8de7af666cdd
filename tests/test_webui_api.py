"""The HTTP routes (`lib_depth2img.webui.api`) through FastAPI's TestClient, over tiny random MiDaS weights."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from test_panel import CHECKPOINT_TITLE, StandInServices

from lib_depth2img.depth.estimator import DepthEstimator
from lib_depth2img.depth.weights import write_tiny_depth_weights
from lib_depth2img.errors import WeightsError
from lib_depth2img.model_download import DownloadError
from lib_depth2img.webui.api import mount

DEPTH = "/depth2img/v1/depth"


@pytest.fixture(scope="module")
def tiny_estimator(tmp_path_factory) -> DepthEstimator:
    weights = tmp_path_factory.mktemp("weights") / "512-depth-ema.safetensors"
    write_tiny_depth_weights(weights)
    return DepthEstimator.from_file(weights)


class ApiServices(StandInServices):
    """Like the A1111 adapter: estimating without a depth checkpoint is a `WeightsError`."""

    def estimate_depth(self, image, args, geometry=None, task_id=None):
        if not self.checkpoints and args.depth_image is None:
            raise WeightsError("No depth checkpoint found: put 512-depth-ema.safetensors in models/Stable-diffusion.")
        return super().estimate_depth(image, args, geometry, task_id)


@pytest.fixture
def services(tiny_estimator) -> ApiServices:
    return ApiServices(tiny_estimator)


@pytest.fixture
def client(services) -> TestClient:
    app = FastAPI()
    mount(app, services)
    return TestClient(app)


def b64_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def decoded(answer: dict) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(answer["depth"])))


@pytest.fixture
def photo() -> str:
    rng = np.random.default_rng(0)
    return b64_png(Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)))


def test_depth_of_an_image_as_8_bit_then_16_bit_from_the_cache(client, photo):
    first = client.post(DEPTH, json={"image": photo, "args": {"net_size": 64}})
    assert first.status_code == 200, first.text
    assert first.json()["source"] == "estimator" and first.json()["bit_depth"] == 8
    assert (first.json()["width"], first.json()["height"]) == (56, 40)
    with decoded(first.json()) as image:
        assert image.mode == "L" and image.size == (56, 40)

    with_prefix = {"image": "data:image/png;base64," + photo, "args": {"net_size": 64}, "bit_depth": 16}
    again = client.post(DEPTH, json=with_prefix)
    assert again.status_code == 200, again.text
    assert again.json()["source"] == "cache"
    with decoded(again.json()) as image:
        assert image.mode in ("I;16", "I") and image.size == (56, 40)


def test_own_16_bit_map_comes_back_with_every_level(client):
    levels = (np.arange(24 * 32, dtype=np.uint32).reshape(24, 32) * 85).astype(np.uint16)
    answer = client.post(DEPTH, json={"args": {"depth_image": b64_png(Image.fromarray(levels, mode="I;16"))},
                                      "bit_depth": 16})
    assert answer.status_code == 200, answer.text
    assert answer.json()["source"] == "own map"
    with decoded(answer.json()) as image:
        assert np.array_equal(np.asarray(image), levels)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"image": "not base64 at all!"}, 400, "image: not valid base64"),
        ({"image": base64.b64encode(b"plain text, no image " * 8).decode()}, 400, "image: not an image"),
        ({"args": {"depth_image": "/etc/hostname"}}, 400, "args.depth_image: not valid base64"),
        ({"args": {"depth_image": 42}}, 422, "'depth_image' must be a base64-encoded image"),
        ({"args": {"gama": 2}}, 422, "unknown setting(s) gama"),
        ({"args": {"gamma": 99}}, 422, "'gamma' (Gamma) must be between 0.1 and 10, got 99"),
        ({"args": {"far_clip": 0.9, "near_clip": 0.1}}, 422, "far clip (0.9) must be below near clip (0.1)"),
        ({}, 422, "needs an init image to estimate depth from, or your own depth map"),
    ],
)
def test_bad_requests_get_a_status_and_a_message(client, photo, body, status, message):
    if "args" in body and "depth_image" not in body["args"]:
        body = {"image": photo, **body}
    answer = client.post(DEPTH, json=body)
    assert answer.status_code == status and message in answer.json()["detail"]


@pytest.mark.parametrize("body", [{"bit_depth": 12}, {"imag": "x"}, {"args": [1, 2]}])
def test_a_body_of_the_wrong_shape_gets_fastapis_field_errors(client, body):
    answer = client.post(DEPTH, json=body)
    assert answer.status_code == 422 and isinstance(answer.json()["detail"], list)


def test_no_depth_checkpoint_is_a_409_that_says_how_to_fix_it(client, services, photo):
    services.checkpoints.clear()
    answer = client.post(DEPTH, json={"image": photo})
    assert answer.status_code == 409 and "512-depth-ema.safetensors" in answer.json()["detail"]


def test_models_lists_checkpoints_estimators_and_cache(client, photo):
    client.post(DEPTH, json={"image": photo, "args": {"net_size": 64}})
    answer = client.get("/depth2img/v1/models")
    assert answer.status_code == 200
    assert answer.json() == {
        "checkpoints": [CHECKPOINT_TITLE],
        "estimators": ["embedded", "dpt_hybrid-midas-501f0c75.pt", "depth_anything_v2_vits"],
        "cache": {"entries": 1, "hits": 0, "misses": 1},
    }


def test_install_downloads_the_chosen_format_and_lists_it(client, services):
    services.checkpoints.clear()
    answer = client.post("/depth2img/v1/install", json={"format": "ckpt"})
    assert answer.status_code == 200
    assert answer.json() == {
        "path": "models/Stable-diffusion/512-depth-ema.ckpt", "checkpoints": ["512-depth-ema.ckpt"]
    }
    assert client.post("/depth2img/v1/install").json()["path"].endswith(".safetensors")  # no body: default
    assert client.post("/depth2img/v1/install", json={"format": "zip"}).status_code == 422


def test_install_estimator_downloads_it_and_lists_the_estimators(client, services):
    answer = client.post("/depth2img/v1/install-estimator", json={"estimator": "depth_anything_v2_vits"})
    assert answer.status_code == 200 and services.installed_estimators == ["depth_anything_v2_vits"]
    assert answer.json()["path"] == "models/depth_anything_v2/depth_anything_v2_vits.pth"
    assert "depth_anything_v2_vits" in answer.json()["estimators"]
    assert client.post("/depth2img/v1/install-estimator", json={}).status_code == 422


def test_install_estimator_without_an_official_download_is_a_409(client, services):
    from lib_depth2img.estimator_files import install_estimator

    services.install_estimator = lambda name, progress=None: install_estimator(name, "models")
    answer = client.post("/depth2img/v1/install-estimator", json={"estimator": "depth_anything_v2_vitl"})
    assert answer.status_code == 409 and "no verified official download" in answer.json()["detail"]


def test_a_failed_download_is_a_502_with_the_reason(client, services):
    def offline(fmt="safetensors", progress=None):
        raise DownloadError("Could not reach https://huggingface.co (host name not found).")

    services.install_depth_model = offline
    answer = client.post("/depth2img/v1/install")
    assert answer.status_code == 502 and "host name not found" in answer.json()["detail"]


def test_geometry_fields_give_the_map_of_that_img2img_job(client, services):
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    body = {"image": b64_png(image), "width": 64, "height": 48, "resize_mode": 1}
    answer = client.post(DEPTH, json=body)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["width"], answer.json()["height"]) == (64, 48)
    geometry, _ = services.requests[-1]
    assert (geometry.width, geometry.height, geometry.resize_mode, geometry.mask) == (64, 48, 1, None)
    mask = b64_png(Image.new("L", (40, 30), 255))
    answer = client.post(DEPTH, json={**body, "mask": mask, "inpaint_full_res": True, "inpaint_full_res_padding": 4,
                                       "mask_blur": 0, "inpainting_mask_invert": True})
    geometry, _ = services.requests[-1]
    assert answer.status_code == 200 and geometry.mask.size == (40, 30) and geometry.inpaint_full_res
    assert (geometry.inpaint_full_res_padding, geometry.mask_blur, geometry.inpainting_mask_invert) == (4, 0, True)


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"width": 64}, "give both 'width' and 'height'"),
     ({"inpaint_full_res": True}, "need the job's 'width' and 'height'"),
     ({"width": 64, "height": 64, "inpaint_full_res": True}, "needs the inpaint 'mask'")],
)
def test_incomplete_geometry_is_a_422_that_says_what_is_missing(client, fields, message):
    image = b64_png(Image.new("RGB", (16, 16)))
    answer = client.post(DEPTH, json={"image": image, **fields})
    assert answer.status_code == 422 and message in answer.json()["detail"]
