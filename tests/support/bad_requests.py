"""The bad-input sweep: requests a careless or hostile API user sends, and what each must get back.

One table, replayed against the stub WebUI (tests/test_webui_api_sweep.py) and a real A1111
(tests/tier5). Every case must get its 4xx status, a message holding `says` (the field, and what
is wrong or what to do), no traceback, and no file written. The servers run with `--api` and
`--server-name` (tier 5's launch flags), under which A1111 refuses extension installs.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from lib_depth2img.webui.api import MAX_BODY_BYTES

DEPTH = "/depth2img/v1/depth"
INSTALL = "/depth2img/v1/install"
INSTALL_ESTIMATOR = "/depth2img/v1/install-estimator"
IMG2IMG = "/sdapi/v1/img2img"
TXT2IMG = "/sdapi/v1/txt2img"
NAN, INFINITY = float("nan"), float("inf")


@dataclass(frozen=True)
class BadRequest:
    name: str
    path: str
    body: Any
    """JSON-able, or the raw bytes to send."""
    status: int
    says: tuple[str, ...]

    def content(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def photo() -> Image.Image:
    rng = np.random.default_rng(8)
    return Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height over one pixel of data (a decompression bomb's header)."""
    data = bytearray(encoded(Image.new("L", (1, 1))))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def float_tiff_with_nan() -> bytes:
    """A Blender-style float Z pass whose background is NaN."""
    values = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    values[:4] = np.nan
    return encoded(Image.fromarray(values, mode="F"), "TIFF")


PHOTO = b64(encoded(photo()))
TRUNCATED = b64(encoded(photo())[:300])
CORRUPT = b64(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
NOT_AN_IMAGE = b64(b"plain text, no image " * 8)
BOMB = b64(png_declaring(10000, 10000))
PILLOW_BOMB = b64(png_declaring(100000, 100000))
NAN_DEPTH = b64(float_tiff_with_nan())


def depth(**fields: Any) -> dict[str, Any]:
    return {"image": PHOTO, **fields}


def alwayson(args: Any, path: str = IMG2IMG) -> dict[str, Any]:
    body = {"prompt": "a room", "steps": 2, "width": 64, "height": 64, "seed": 1,
            "alwayson_scripts": {"Depth2img": {"args": args}}}
    return {**body, "init_images": [PHOTO]} if path == IMG2IMG else body


def oversize_body() -> bytes:
    return b'{"image": "' + b"A" * MAX_BODY_BYTES + b'"}'


POSITIONAL_DEFAULTS = [True, "", "embedded", 0, None, "", False, 0.0, 1.0, 1.0, 0.0, False, False]


def cases() -> list[BadRequest]:
    """The sweep; build it once per run (the oversize body is 128 MB)."""
    return [
        # the depth route: images
        BadRequest("image not base64", DEPTH, depth(image="not base64 at all!"), 400, ("image", "base64")),
        BadRequest("image is text", DEPTH, depth(image=NOT_AN_IMAGE), 400, ("image", "not an image")),
        BadRequest("image empty", DEPTH, depth(image=""), 400, ("image", "empty")),
        BadRequest("image truncated", DEPTH, depth(image=TRUNCATED), 400, ("image", "damaged or incomplete")),
        BadRequest("image corrupt", DEPTH, depth(image=CORRUPT), 400, ("image", "export")),
        BadRequest("image bomb 100 MP", DEPTH, depth(image=BOMB), 400, ("image", "100.0 MP", "downscale")),
        BadRequest("image bomb past Pillow", DEPTH, depth(image=PILLOW_BOMB), 400, ("image", "Pillow", "downscale")),
        BadRequest("image data URL not an image", DEPTH, depth(image="data:text/plain;base64," + PHOTO), 400,
                   ("image", "text/plain")),
        BadRequest("image a server path", DEPTH, depth(image="/etc/passwd"), 400, ("image", "file path")),
        BadRequest("image a Windows path", DEPTH, depth(image="C:\\Users\\me\\photo.png"), 400,
                   ("image", "file path")),
        BadRequest("image a list", DEPTH, depth(image=[1, 2]), 422, ("image",)),
        BadRequest("mask corrupt", DEPTH, depth(width=64, height=64, mask=CORRUPT), 400, ("mask",)),
        # the depth route: your own depth map
        BadRequest("depth map not base64", DEPTH, depth(args={"depth_image": "%%%"}), 400,
                   ("args.depth_image", "base64")),
        BadRequest("depth map a path", DEPTH, depth(args={"depth_image": "../models/x.png"}), 400,
                   ("args.depth_image", "file path")),
        BadRequest("depth map a number", DEPTH, depth(args={"depth_image": 42}), 422, ("depth_image", "base64")),
        BadRequest("depth map float with NaN", DEPTH, {"args": {"depth_image": NAN_DEPTH}}, 400,
                   ("depth map", "NaN")),
        BadRequest("depth map empty data URL", DEPTH, depth(args={"depth_image": "data:image/png;base64,"}), 400,
                   ("args.depth_image", "empty")),
        BadRequest("depth map data URL of a PDF", DEPTH,
                   depth(args={"depth_image": "data:application/pdf;base64," + PHOTO}), 400,
                   ("args.depth_image", "application/pdf")),
        BadRequest("depth map truncated", DEPTH, {"args": {"depth_image": TRUNCATED}}, 400,
                   ("args.depth_image", "damaged")),
        # the depth route: settings
        BadRequest("gamma out of range", DEPTH, depth(args={"gamma": 99}), 422, ("gamma", "between 0.1 and 10")),
        BadRequest("gamma NaN", DEPTH, depth(args={"gamma": NAN}), 422, ("gamma", "between 0.1 and 10")),
        BadRequest("blur infinite", DEPTH, depth(args={"blur": INFINITY}), 422, ("blur", "between 0 and 64")),
        BadRequest("far clip minus infinity", DEPTH, depth(args={"far_clip": -INFINITY}), 422,
                   ("far_clip", "between 0 and 1")),
        BadRequest("resolution fractional", DEPTH, depth(args={"net_size": 1.5}), 422,
                   ("net_size", "whole number between 0 and 1024")),
        BadRequest("resolution negative", DEPTH, depth(args={"net_size": -32}), 422, ("net_size", "between 0")),
        BadRequest("resolution a word", DEPTH, depth(args={"net_size": "big"}), 422,
                   ("net_size", "whole number")),
        BadRequest("invert maybe", DEPTH, depth(args={"invert": "maybe"}), 422, ("invert", "true or false")),
        BadRequest("estimator a number", DEPTH, depth(args={"estimator": 5}), 422, ("estimator", "text")),
        BadRequest("unknown setting", DEPTH, depth(args={"gama": 2}), 422, ("gama", "not permitted")),
        BadRequest("far clip above near clip", DEPTH, depth(args={"far_clip": 0.9, "near_clip": 0.1}), 422,
                   ("far clip (0.9) must be below near clip (0.1)",)),
        BadRequest("args a list", DEPTH, depth(args=[True, 2]), 422, ("args",)),
        BadRequest("unknown checkpoint", DEPTH, depth(args={"checkpoint": "nope.safetensors"}), 409,
                   ("nope.safetensors", "not in the checkpoint list")),
        BadRequest("unknown estimator", DEPTH, depth(args={"estimator": "dpt_magic"}), 422,
                   ("dpt_magic", "choose one of")),
        BadRequest("estimator without its weights", DEPTH, depth(args={"estimator": "dpt_beit_large_512"}), 409,
                   ("dpt_beit_large_512",)),
        # the depth route: the body
        BadRequest("unknown field", DEPTH, depth(imag=PHOTO), 422, ("imag", "not permitted")),
        BadRequest("bit depth 12", DEPTH, depth(bit_depth=12), 422, ("bit_depth",)),
        BadRequest("width too small", DEPTH, depth(width=5, height=64), 422, ("width", "8")),
        BadRequest("width NaN", DEPTH, depth(width=NAN, height=64), 422, ("width",)),
        BadRequest("width without height", DEPTH, depth(width=64), 422, ("width", "height")),
        BadRequest("Only masked without mask", DEPTH, depth(width=64, height=64, inpaint_full_res=True), 422,
                   ("inpaint_full_res", "mask")),
        BadRequest("resize mode 7", DEPTH, depth(resize_mode=7), 422, ("resize_mode",)),
        BadRequest("no image and no depth map", DEPTH, {}, 422, ("init image", "depth map")),
        BadRequest("not JSON", DEPTH, b'{"image": ', 422, ("body",)),
        BadRequest("a JSON list", DEPTH, [PHOTO], 422, ("body",)),
        BadRequest("oversize body", DEPTH, oversize_body(), 413, ("request body", "MB", "smaller")),
        # installs: refused on a server others can reach, as A1111 refuses extension installs
        BadRequest("install where refused", INSTALL, {}, 403, ("--enable-insecure-extension-access",)),
        BadRequest("install estimator where refused", INSTALL_ESTIMATOR, {"estimator": "depth_anything_v2_vits"},
                   403, ("--listen", "by hand")),
        BadRequest("install a zip", INSTALL, {"format": "zip"}, 422, ("format",)),
        BadRequest("install estimator unnamed", INSTALL_ESTIMATOR, {}, 422, ("estimator",)),
        # alwayson_scripts of A1111's own routes
        BadRequest("alwayson gamma out of range", IMG2IMG, alwayson([{"enabled": True, "gamma": 99}]), 422,
                   ("gamma", "between 0.1 and 10")),
        BadRequest("alwayson blur NaN", IMG2IMG, alwayson([{"enabled": True, "blur": NAN}]), 422, ("blur",)),
        BadRequest("alwayson positional list one short", IMG2IMG,
                   alwayson(POSITIONAL_DEFAULTS[:1] + POSITIONAL_DEFAULTS[2:3] + [384]), 422,
                   ("estimator", "text")),
        BadRequest("alwayson positional wrong type", IMG2IMG, alwayson([True, "", "embedded", "big"]), 422,
                   ("net_size", "whole number")),
        BadRequest("alwayson depth map a path", IMG2IMG, alwayson([{"enabled": True, "depth_image": "/etc/passwd"}]),
                   400, ("depth_image", "file path")),
        BadRequest("alwayson depth map corrupt", IMG2IMG, alwayson([{"enabled": True, "depth_image": CORRUPT}]),
                   400, ("depth_image",)),
        BadRequest("alwayson depth map with NaN", IMG2IMG, alwayson([{"enabled": True, "depth_image": NAN_DEPTH}]),
                   400, ("depth map", "NaN")),
        BadRequest("alwayson unknown setting", IMG2IMG, alwayson([{"enabled": True, "gama": 2}]), 422,
                   ("gama", "known")),
        BadRequest("alwayson far clip above near clip", IMG2IMG,
                   alwayson([{"enabled": True, "far_clip": 0.8, "near_clip": 0.2}]), 422, ("far clip", "near clip")),
        BadRequest("alwayson unknown checkpoint", IMG2IMG, alwayson([{"enabled": True, "checkpoint": "nope"}]), 409,
                   ("nope", "not in the checkpoint list")),
        BadRequest("alwayson unknown estimator", IMG2IMG, alwayson([{"enabled": True, "estimator": "dpt_magic"}]),
                   422, ("dpt_magic", "choose one of")),
        BadRequest("alwayson estimator without weights", IMG2IMG,
                   alwayson([{"enabled": True, "estimator": "dpt_beit_large_512"}]), 409, ("dpt_beit_large_512",)),
        BadRequest("alwayson txt2img without depth map", TXT2IMG, alwayson([True], TXT2IMG), 422,
                   ("txt2img", "depth map")),
        BadRequest("alwayson txt2img truncated depth map", TXT2IMG,
                   alwayson([{"enabled": True, "depth_image": TRUNCATED}], TXT2IMG), 400, ("depth_image", "damaged")),
    ]


def check_answer(case: BadRequest, status: int, text: str) -> None:
    """The sweep's promise for one case."""
    assert status == case.status, f"{case.name}: {status} {text[:400]}"
    for fragment in case.says:
        assert fragment in text, f"{case.name}: {fragment!r} not in {text[:400]}"
    assert "Traceback" not in text and 'File "' not in text, f"{case.name}: {text[:400]}"
