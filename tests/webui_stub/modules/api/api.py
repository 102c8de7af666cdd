"""Stand-in for `modules.api.api`: A1111's API as the extension meets it on the app it is handed.

`Api(app, queue_lock)` adds the error middleware, the `--api-auth` check on every route it adds,
and `/sdapi/v1/txt2img` and `/sdapi/v1/img2img`, which fill `script_args` from the scripts' UI
defaults and `alwayson_scripts` as A1111 v1.10.1 does. Images come back as base64 PNG.
"""

from __future__ import annotations

import base64
import io
from contextlib import closing
from secrets import compare_digest
from threading import Lock
from typing import Any, Optional

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import HTTPException
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from modules import processing, scripts, shared
from PIL import Image
from pydantic import BaseModel


class ProcessingRequest(BaseModel):
    """The fields of A1111's generated `StableDiffusion*ProcessingAPI` models the tests use."""

    prompt: str = ""
    seed: int = -1
    steps: int = 50
    width: int = 512
    height: int = 512
    denoising_strength: float = 0.75
    override_settings: Optional[dict[str, Any]] = None
    override_settings_restore_afterwards: bool = True
    alwayson_scripts: dict[str, Any] = {}


class Img2ImgRequest(ProcessingRequest):
    init_images: Optional[list] = None
    resize_mode: int = 0


def decode_base64_to_image(encoding: str) -> Image.Image:
    if encoding.startswith("data:image/"):
        encoding = encoding.split(";")[1].split(",")[1]
    try:
        image = Image.open(io.BytesIO(base64.b64decode(encoding)))
        image.load()
        return image
    except Exception as e:
        raise HTTPException(status_code=500, detail="Invalid encoded image") from e


def encode_pil_to_base64(image: Image.Image) -> str:
    with io.BytesIO() as output_bytes:
        image.save(output_bytes, format="PNG")
        return base64.b64encode(output_bytes.getvalue()).decode()


def api_middleware(app: FastAPI) -> None:
    def handle_exception(request: Request, e: Exception):
        err = {
            "error": type(e).__name__,
            "detail": vars(e).get("detail", ""),
            "body": vars(e).get("body", ""),
            "errors": str(e),
        }
        return JSONResponse(status_code=vars(e).get("status_code", 500), content=jsonable_encoder(err))

    @app.middleware("http")
    async def exception_handling(request: Request, call_next):
        try:
            return await call_next(request)
        except Exception as e:  # noqa: BLE001  (A1111 turns any error into its JSON answer)
            return handle_exception(request, e)

    @app.exception_handler(Exception)
    async def fastapi_exception_handler(request: Request, e: Exception):
        return handle_exception(request, e)

    @app.exception_handler(HTTPException)
    async def http_exception_handler(request: Request, e: HTTPException):
        return handle_exception(request, e)


class Api:
    def __init__(self, app: FastAPI, queue_lock: Lock):
        if shared.cmd_opts.api_auth:
            self.credentials = {}
            for auth in shared.cmd_opts.api_auth.split(","):
                user, password = auth.split(":")
                self.credentials[user] = password
        self.app = app
        self.queue_lock = queue_lock
        api_middleware(self.app)
        self.add_api_route("/sdapi/v1/txt2img", self.text2imgapi, methods=["POST"])
        self.add_api_route("/sdapi/v1/img2img", self.img2imgapi, methods=["POST"])

    def add_api_route(self, path: str, endpoint, **kwargs):
        if shared.cmd_opts.api_auth:
            return self.app.add_api_route(path, endpoint, dependencies=[Depends(self.auth)], **kwargs)
        return self.app.add_api_route(path, endpoint, **kwargs)

    def auth(self, credentials: HTTPBasicCredentials = Depends(HTTPBasic())):  # noqa: B008
        if credentials.username in self.credentials:
            if compare_digest(credentials.password, self.credentials[credentials.username]):
                return True
        raise HTTPException(status_code=401, detail="Incorrect username or password", headers={"WWW-Authenticate": "Basic"})

    def init_script_args(self, request: ProcessingRequest, script_runner: scripts.ScriptRunner) -> list:
        script_args = [0] + [control.value for control in script_runner.inputs[1:]]  # the UI defaults
        for name, entry in request.alwayson_scripts.items():
            script = script_runner.script(name)
            if script is None:
                raise HTTPException(status_code=422, detail=f"always on script {name} not found")
            if "args" in entry:
                for idx in range(min((script.args_to - script.args_from), len(entry["args"]))):
                    script_args[script.args_from + idx] = entry["args"][idx]
        return script_args

    def text2imgapi(self, txt2imgreq: ProcessingRequest):
        return self._generate(txt2imgreq, processing.StableDiffusionProcessingTxt2Img, scripts.scripts_txt2img)

    def img2imgapi(self, img2imgreq: Img2ImgRequest):
        if img2imgreq.init_images is None:
            raise HTTPException(status_code=404, detail="Init image not found")
        return self._generate(img2imgreq, processing.StableDiffusionProcessingImg2Img, scripts.scripts_img2img)

    def _generate(self, request: ProcessingRequest, processing_class: type, script_runner: scripts.ScriptRunner):
        args = request.dict()
        script_args = self.init_script_args(request, script_runner)
        args.pop("alwayson_scripts")
        init_images = args.pop("init_images", None)
        with self.queue_lock:
            with closing(processing_class(outpath_samples=shared.opts.outdir_samples, **args)) as p:
                if init_images is not None:
                    p.init_images = [decode_base64_to_image(x) for x in init_images]
                p.is_api = True
                p.scripts = script_runner
                p.script_args = tuple(script_args)
                try:
                    shared.state.begin(job="scripts_api")
                    processed = processing.process_images(p)
                finally:
                    shared.state.end()
        return {"images": [encode_pil_to_base64(image) for image in processed.images], "info": processed.info}
