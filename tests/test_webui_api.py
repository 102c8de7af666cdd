"""The HTTP routes (`lib_depth2img.webui.api`) through FastAPI's TestClient, over tiny random MiDaS weights."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from test_ui_panel import CHECKPOINT_TITLE, StandInServices

from lib_depth2img.checkpoints.download import DownloadError
from lib_depth2img.depthmaps.geometry import GeometryRequest
from lib_depth2img.errors import WeightsError
from lib_depth2img.estimators.estimator import DepthEstimator
from lib_depth2img.estimators.weights import write_tiny_depth_weights
from lib_depth2img.settings import Depth2imgArgs
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
    from lib_depth2img.estimators.files import install_estimator

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


@pytest.mark.parametrize("mode", ["RGBA", "P", "CMYK"])
def test_colour_depth_maps_are_read_as_their_gray_levels(client, mode):
    """RGBA (alpha ignored), palette and CMYK JPEG maps are good input: the map of their gray."""
    gray = Image.fromarray(np.repeat(np.linspace(0, 255, 32, dtype=np.uint8)[None, :], 24, axis=0))
    if mode == "CMYK":
        buffer = io.BytesIO()
        gray.convert("CMYK").save(buffer, "JPEG", quality=100)
        coloured = base64.b64encode(buffer.getvalue()).decode()
    else:
        coloured = b64_png(gray.convert(mode))
    maps = []
    for depth_image in (b64_png(gray), coloured):
        answer = client.post(DEPTH, json={"args": {"depth_image": depth_image}, "bit_depth": 16})
        assert answer.status_code == 200, answer.text
        maps.append(np.asarray(decoded(answer.json()), dtype=np.float32) / 65535)
    assert np.abs(maps[0] - maps[1]).max() < (3 / 255 if mode == "CMYK" else 1e-6)


def test_openapi_shows_every_setting_with_its_type_bounds_and_default(client):
    schema = client.get("/openapi.json").json()
    assert {"/depth2img/v1/depth", "/depth2img/v1/args", "/depth2img/v1/models", "/depth2img/v1/install",
            "/depth2img/v1/install-estimator"} <= set(schema["paths"])
    fields = schema["components"]["schemas"]["Depth2imgArgs"]["properties"]
    assert list(fields) == [name for name, _ in Depth2imgArgs.specs()]
    json_type = {bool: "boolean", int: "integer", float: "number", str: "string"}
    for name, spec in Depth2imgArgs.specs():
        default = Depth2imgArgs.defaults()[name]
        if default is not None:
            assert fields[name]["type"] == json_type[type(default)] and fields[name]["default"] == default, name
        assert fields[name].get("minimum") == spec.minimum and fields[name].get("maximum") == spec.maximum, name
        assert fields[name]["description"].startswith(spec.label)
    depth_request = schema["components"]["schemas"]["DepthRequest"]["properties"]
    assert "Depth2imgArgs" in json.dumps(depth_request["args"])
    geometry_fields = [name for name, _ in GeometryRequest.specs() if name != "scale_by"]
    assert [name for name in depth_request if name in geometry_fields] == geometry_fields
    for name in geometry_fields:
        assert depth_request[name]["title"] == GeometryRequest.spec(name).label, name
    assert (bounds(depth_request["width"])["minimum"], bounds(depth_request["width"])["maximum"]) == (8, 8192)
    assert depth_request["resize_mode"]["enum"] == [0, 1, 2, 3]
    assert "1 (Crop and resize)" in depth_request["resize_mode"]["description"]


def bounds(field_schema: dict) -> dict:
    """The part of a field's schema that holds its bounds: pydantic 2 nests an optional field's
    under `anyOf` beside `null`, pydantic 1 keeps them on the field."""
    return next((option for option in field_schema.get("anyOf", []) if "minimum" in option), field_schema)


def test_args_route_gives_the_defaults_as_alwayson_scripts_takes_them(client):
    answer = client.get("/depth2img/v1/args")
    assert answer.status_code == 200
    assert answer.json() == {"args": [Depth2imgArgs.defaults()]}
    assert Depth2imgArgs.from_values(answer.json()["args"]) == Depth2imgArgs()

