"""The HTTP routes of depth2img inside A1111: depth maps, models and install over JSON.

The adapter calls `mount(app, depth_service, dependencies)` from its `on_app_started(demo, app)`
callback, only where A1111's own API is on (`--api`, `--nowebui`) and with the dependencies of A1111's
own routes (its `--api-auth` check); tests mount a stand-in service on a bare FastAPI app. Nothing
here imports A1111. Request and response bodies are `api_models`, shown in A1111's `/docs`.

    POST /depth2img/v1/depth     {"image": b64, "args": {...}, "bit_depth": 8|16, geometry fields}
                                 -> {"depth": b64 PNG, "bit_depth", "source", "width", "height"}
    GET  /depth2img/v1/args      -> {"args": [{...}]}: the defaults, as alwayson_scripts takes them
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
    401  A1111 runs with --api-auth and the request has no or wrong credentials (HTTP Basic)
    403  install routes, where A1111 refuses extension installs (--listen, --share, --ngrok,
         --server-name without --enable-insecure-extension-access)
    413  a request body above MAX_BODY_BYTES
    422  a body of the wrong shape, an unknown setting, a value out of its range or of the wrong
         type (FastAPI's list of field errors, each naming its field), no image and no own depth map
    409  no usable depth checkpoint or estimator weights here: install them (POST /install);
         or the estimate was interrupted (/sdapi/v1/interrupt)
    502  the model download failed (network, mirror, checksum); the message says what to do
"""

from __future__ import annotations

import base64
import contextlib
import math
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from ..checkpoints.download import DownloadError
from ..depthmaps.geometry import GeometryRequest
from ..errors import AccessDenied, Depth2imgError, ImageError, Interrupted, SettingsError, WeightsError
from ..images import load_base64_image
from ..settings import Depth2imgArgs
from ..ui import DepthApiServices, depth_png
from .api_models import (
    PYDANTIC_2,
    DepthRequest,
    DepthResponse,
    InstallEstimatorRequest,
    InstallEstimatorResponse,
    InstallRequest,
    InstallResponse,
    ModelsResponse,
    ScriptArgsResponse,
    set_fields,
)

ROUTE_PREFIX = "/depth2img/v1"
MAX_BODY_BYTES = 128 * 2**20
"""Largest request body read: a 64 MP PNG (the image size limit), base64-encoded, fits."""

STATUS_BY_ERROR = (
    (ImageError, 400), (AccessDenied, 403), (SettingsError, 422), (WeightsError, 409), (Interrupted, 409),
    (DownloadError, 502),
)
"""HTTP status per user-error class, first match wins; any other `Depth2imgError` is a 400."""


def mount(app: FastAPI, service: DepthApiServices, dependencies: Sequence[Any] = ()) -> None:
    """Add the depth2img routes to `app`, answering through `service`; every route runs
    `dependencies` first (A1111's `--api-auth` check, as on its own routes)."""
    router = APIRouter(prefix=ROUTE_PREFIX, tags=["depth2img"], dependencies=list(dependencies),
                       route_class=_BoundedBodyRoute)

    @router.post("/depth", response_model=DepthResponse)
    def depth(request: DepthRequest) -> DepthResponse:
        """The depth map an img2img job with these settings and geometry uses, from the same cache."""
        with _user_errors_as_http():
            image = load_base64_image(request.image, name="image") if request.image is not None else None
            args = Depth2imgArgs.from_values(_with_decoded_depth_image(set_fields(request.args)))
            result = service.estimate_depth(image, args, _geometry(request))
        height, width = result.depth.shape
        encoded = base64.b64encode(depth_png(result.depth, bits=request.bit_depth)).decode("ascii")
        return DepthResponse(
            depth=encoded, bit_depth=request.bit_depth, source=result.origin.value, width=width, height=height
        )

    @router.get("/args", response_model=ScriptArgsResponse)
    def script_args() -> ScriptArgsResponse:
        """The default settings, ready for `alwayson_scripts: {"Depth2img": ...}` of /sdapi/v1/img2img."""
        return ScriptArgsResponse(args=[Depth2imgArgs.defaults()])

    @router.get("/models", response_model=ModelsResponse)
    def models() -> ModelsResponse:
        """Depth checkpoints and estimators found here, and the depth cache's counters."""
        return ModelsResponse(
            checkpoints=service.depth_checkpoint_titles(),
            estimators=service.estimator_choices(),
            cache=service.cache_stats(),
        )

    @router.post("/install", response_model=InstallResponse)
    def install(request: InstallRequest | None = None) -> InstallResponse:
        """Download 512-depth-ema (5.7 GB) into the checkpoints folder; refused (403) where A1111
        refuses extension installs."""
        with _user_errors_as_http():
            path = service.install_depth_model((request or InstallRequest()).format)
        return InstallResponse(path=str(path), checkpoints=service.depth_checkpoint_titles())

    @router.post("/install-estimator", response_model=InstallEstimatorResponse)
    def install_estimator(request: InstallEstimatorRequest) -> InstallEstimatorResponse:
        """Download an estimator's official weights; refused (403) where A1111 refuses extension installs."""
        with _user_errors_as_http():
            path = service.install_estimator(request.estimator)
        return InstallEstimatorResponse(path=str(path), estimators=service.estimator_choices())

    app.include_router(router)


class _BoundedBodyRequest(Request):
    """Reads at most MAX_BODY_BYTES of the body, so an oversize request cannot fill the memory."""

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            chunks, size = [], 0
            async for chunk in self.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise HTTPException(status_code=413, detail=(
                        f"Depth2img: the request body is over {MAX_BODY_BYTES // 2**20} MB; send smaller images "
                        "(the depth map needs no more pixels than the job)."
                    ))
                chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body


class _BoundedBodyRoute(APIRoute):
    """FastAPI's documented way to give routes their own request class."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def bounded(request: Request) -> Response:
            try:
                return await handler(_BoundedBodyRequest(request.scope, request.receive))
            except RequestValidationError as error:
                if not PYDANTIC_2:
                    raise
                raise RequestValidationError(_json_safe(error.errors())) from error

        return bounded


def _json_safe(value: Any) -> Any:
    """Validation errors as JSON can carry them: pydantic 2 (Forge, the app) puts the refused input
    into each error, and a NaN or infinity there would make FastAPI's 422 answer a 500."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


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


@contextlib.contextmanager
def a1111_api_status() -> Iterator[None]:
    """Let a user error raised inside an A1111 job carry its HTTP status and message: A1111's API
    middleware answers with `status_code` and `detail` from the exception (a bug stays a 500)."""
    try:
        yield
    except Depth2imgError as error:
        error.status_code = http_status(error)
        error.detail = str(error)
        raise


def _geometry(request: DepthRequest) -> GeometryRequest | None:
    """The job geometry the request names, or None (the image's own size)."""
    if request.width is None and request.height is None:
        if request.mask is not None or request.inpaint_full_res:
            raise SettingsError("Depth2img: 'mask' and 'inpaint_full_res' need the job's 'width' and 'height' too.")
        return None
    if request.width is None or request.height is None:
        raise SettingsError("Depth2img: give both 'width' and 'height' (the img2img job's size), or neither.")
    mask = load_base64_image(request.mask, name="mask") if request.mask is not None else None
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
    return {**args, "depth_image": load_base64_image(encoded, name="args.depth_image")}
