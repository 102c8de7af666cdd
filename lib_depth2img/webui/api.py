"""The HTTP routes of depth2img inside A1111: depth maps, models and install over JSON.

The adapter calls `mount(app, depth_service)` from its `on_app_started(demo, app)` callback;
tests mount a stand-in service on a bare FastAPI app. Nothing here imports A1111.

    POST /depth2img/v1/depth     {"image": b64, "args": {...}, "bit_depth": 8|16, geometry fields}
                                 -> {"depth": b64 PNG, "bit_depth", "source", "width", "height"}
    GET  /depth2img/v1/models    -> {"checkpoints": [...], "estimators": [...], "cache": {...}}
    POST /depth2img/v1/install   {"format": "safetensors"|"ckpt"} -> {"path", "checkpoints"}
    POST /depth2img/v1/install-estimator  {"estimator": "depth_anything_v2_vits"} -> {"path", "estimators"}

Images are base64, with or without a `data:image/...;base64,` prefix; they are never taken as
file names on the server. `args` holds `Depth2imgArgs` fields by name (`depth_image`: your own
depth map as base64). The geometry fields carry A1111's img2img names (`width`, `height`,
`resize_mode`, `mask`, `inpaint_full_res`, `inpaint_full_res_padding`, `mask_blur`,
`inpainting_mask_invert`): with `width` and `height` the answer is the map an img2img job with
those values uses; without them, the map at the image's own size. The answer's `source` says where the depth came from: "estimator",
"cache" (estimated before, by a preview, a job or this route) or "own map".

Errors carry their message in `detail` (under A1111's `--api` middleware, next to `error`):
    400  an image or depth map that is not base64, not an image, damaged or too large
    422  a body of the wrong shape (FastAPI's list of field errors), an unknown setting, a value
         out of its range or of the wrong type, no image and no own depth map
    409  no usable depth checkpoint or estimator weights here: install them (POST /install);
         or the estimate was interrupted (/sdapi/v1/interrupt)
    502  the model download failed (network, mirror, checksum); the message says what to do
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, HTTPException
from PIL import Image
from pydantic import BaseModel, Field

from ..args import Depth2imgArgs
from ..errors import Depth2imgError, ImageError, Interrupted, SettingsError, WeightsError
from ..geometry import GeometryRequest
from ..images import load_image
from ..model_download import DEFAULT_FORMAT, FORMATS, DownloadError
from ..ui import DepthApiServices, depth_png

ROUTE_PREFIX = "/depth2img/v1"

_DATA_URL_PREFIX = re.compile(r"^data:[^,]*;base64,", re.IGNORECASE)
STATUS_BY_ERROR = (
    (ImageError, 400), (SettingsError, 422), (WeightsError, 409), (Interrupted, 409), (DownloadError, 502),
)
"""HTTP status per user-error class, first match wins; any other `Depth2imgError` is a 400."""


MAX_SIDE = 8192


class DepthRequest(BaseModel, extra="forbid"):  # pydantic 1 (A1111) and 2 alike
    image: str | None = Field(None, description="Init image, base64; may be left out with args.depth_image.")
    args: dict[str, Any] = Field(default_factory=dict, description="Depth2imgArgs fields by name.")
    bit_depth: Literal[8, 16] = Field(8, description="8: a gray PNG to look at; 16: every level kept.")
    width: int | None = Field(None, ge=8, le=MAX_SIDE, description="The img2img job's width; with height.")
    height: int | None = Field(None, ge=8, le=MAX_SIDE, description="The img2img job's height; with width.")
    resize_mode: int = Field(0, ge=0, le=3, description="A1111's resize mode: 0 just resize, 1 crop and "
                             "resize, 2 resize and fill, 3 just resize (latent upscale).")
    mask: str | None = Field(None, description="Inpaint mask, base64 (white = repaint).")
    inpaint_full_res: bool = Field(False, description="Inpaint area: Only masked (needs mask).")
    inpaint_full_res_padding: int = Field(32, ge=0, le=MAX_SIDE, description="Only masked padding, pixels.")
    mask_blur: int = Field(4, ge=0, le=64, description="Mask blur, pixels (changes the Only masked region).")
    inpainting_mask_invert: bool = Field(False, description="Mask mode: Inpaint not masked.")


class DepthResponse(BaseModel):
    depth: str = Field(description="The adjusted depth map as a gray PNG, base64; white = near.")
    bit_depth: int
    source: str = Field(description='"estimator", "cache" or "own map".')
    width: int
    height: int


class ModelsResponse(BaseModel):
    checkpoints: list[str]
    estimators: list[str]
    cache: dict[str, Any]


class InstallRequest(BaseModel, extra="forbid"):
    format: Literal[FORMATS] = DEFAULT_FORMAT  # type: ignore[valid-type]


class InstallResponse(BaseModel):
    path: str
    checkpoints: list[str]


class InstallEstimatorRequest(BaseModel, extra="forbid"):
    estimator: str = Field(description="An estimator with an official download, e.g. depth_anything_v2_vits.")


class InstallEstimatorResponse(BaseModel):
    path: str
    estimators: list[str]


def mount(app: FastAPI, service: DepthApiServices) -> None:
    """Add the depth2img routes to `app`, answering through `service`."""
    router = APIRouter(prefix=ROUTE_PREFIX, tags=["depth2img"])

    @router.post("/depth", response_model=DepthResponse)
    def depth(request: DepthRequest) -> DepthResponse:
        with _user_errors_as_http():
            image = decode_base64_image(request.image, "image") if request.image is not None else None
            args = Depth2imgArgs.from_values(_with_decoded_depth_image(request.args))
            result = service.estimate_depth(image, args, _geometry(request))
        height, width = result.depth.shape
        encoded = base64.b64encode(depth_png(result.depth, bits=request.bit_depth)).decode("ascii")
        return DepthResponse(
            depth=encoded, bit_depth=request.bit_depth, source=result.origin.value, width=width, height=height
        )

    @router.get("/models", response_model=ModelsResponse)
    def models() -> ModelsResponse:
        return ModelsResponse(
            checkpoints=service.depth_checkpoint_titles(),
            estimators=service.estimator_choices(),
            cache=service.cache_stats(),
        )

    @router.post("/install", response_model=InstallResponse)
    def install(request: InstallRequest | None = None) -> InstallResponse:
        with _user_errors_as_http():
            path = service.install_depth_model((request or InstallRequest()).format)
        return InstallResponse(path=str(path), checkpoints=service.depth_checkpoint_titles())

    @router.post("/install-estimator", response_model=InstallEstimatorResponse)
    def install_estimator(request: InstallEstimatorRequest) -> InstallEstimatorResponse:
        with _user_errors_as_http():
            path = service.install_estimator(request.estimator)
        return InstallEstimatorResponse(path=str(path), estimators=service.estimator_choices())

    app.include_router(router)


@contextlib.contextmanager
def _user_errors_as_http() -> Iterator[None]:
    """Turn the user's mistakes (`Depth2imgError`) into HTTP errors; bugs stay 500s with tracebacks."""
    try:
        yield
    except Depth2imgError as error:
        raise HTTPException(status_code=http_status(error), detail=str(error)) from error


def http_status(error: Depth2imgError) -> int:
    """The status a user error gets over HTTP, here and wherever the adapter answers the API."""
    return next((code for cls, code in STATUS_BY_ERROR if isinstance(error, cls)), 400)


def _geometry(request: DepthRequest) -> GeometryRequest | None:
    """The job geometry the request names, or None (the image's own size)."""
    if request.width is None and request.height is None:
        if request.mask is not None or request.inpaint_full_res:
            raise SettingsError("Depth2img: 'mask' and 'inpaint_full_res' need the job's 'width' and 'height' too.")
        return None
    if request.width is None or request.height is None:
        raise SettingsError("Depth2img: give both 'width' and 'height' (the img2img job's size), or neither.")
    mask = decode_base64_image(request.mask, "mask") if request.mask is not None else None
    if request.inpaint_full_res and mask is None:
        raise SettingsError("Depth2img: 'inpaint_full_res' (Only masked) needs the inpaint 'mask'.")
    return GeometryRequest(
        width=request.width, height=request.height, resize_mode=request.resize_mode, mask=mask,
        inpaint_full_res=request.inpaint_full_res, inpaint_full_res_padding=request.inpaint_full_res_padding,
        mask_blur=request.mask_blur, inpainting_mask_invert=request.inpainting_mask_invert,
    )


def _with_decoded_depth_image(args: dict[str, Any]) -> dict[str, Any]:
    """`args` with its base64 `depth_image` decoded, so a string is never read as a server path."""
    encoded = args.get("depth_image")
    if encoded is None:
        return args
    if not isinstance(encoded, str):
        raise SettingsError(
            f"Depth2img: 'depth_image' must be a base64-encoded image, got {type(encoded).__name__}."
        )
    return {**args, "depth_image": decode_base64_image(encoded, "args.depth_image")}


def decode_base64_image(encoded: str, name: str) -> Image.Image:
    """A base64 image (data URL prefix allowed) as PIL in its own mode; `ImageError` names `name`.

    Strictly base64: a string is never taken as a file name on the server.
    """
    text = "".join(_DATA_URL_PREFIX.sub("", encoded.strip(), count=1).split())
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(f"{name}: not valid base64; send the image file's bytes base64-encoded.") from None
    return load_image(data, name=name)
