"""Depth2img for other A1111 extensions (Deforum, AnimateDiff, schedulers, XYZ-like tools): a stable API.

In the manner of ControlNet's `external_code`: build Depth2img's args for a job `p`, read them
back, find the script and its slice of `p.script_args`, and get a depth map for an image with
given settings and geometry, from the same estimator and cache that jobs and previews use.
A1111 loads this extension's scripts before any UI, job or `on_app_started` callback runs, so
import it there, not at the top of your script file (yours may load first)::

    def process(self, p, *args):
        try:
            from lib_depth2img import external_code as depth2img
        except ImportError:
            return  # Depth2img is not installed
        depth2img.set_args(p, depth2img.Depth2imgArgs(enabled=True, gamma=0.8))

Names here keep their meaning across versions; everything else in `lib_depth2img` may change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from .depthmaps.geometry import GeometryRequest
from .depthmaps.values import depth_to_16bit, depth_to_preview
from .errors import Depth2imgError, SettingsError
from .settings import Depth2imgArgs, DepthAdjustments

__all__ = [
    "SCRIPT_TITLE",
    "Depth2imgArgs",
    "Depth2imgError",
    "DepthAdjustments",
    "GeometryRequest",
    "args_slice",
    "depth_map",
    "depth_map_image",
    "find_script",
    "get_args",
    "set_args",
]

SCRIPT_TITLE = "Depth2img"
"""The script's title: its key in `alwayson_scripts` and in A1111's script runners."""


def find_script(script_runner: Any) -> Any | None:
    """The Depth2img script of an A1111 `ScriptRunner` (`p.scripts`, `modules.scripts.scripts_img2img`),
    or None when it is not loaded there."""
    return next((s for s in script_runner.alwayson_scripts if s.title() == SCRIPT_TITLE), None)


def args_slice(script_runner: Any) -> slice:
    """Where Depth2img's positional args sit in `p.script_args` of jobs run by `script_runner`."""
    script = find_script(script_runner)
    if script is None:
        raise Depth2imgError("Depth2img is not loaded in this script runner (is the extension enabled?).")
    return slice(script.args_from, script.args_to)


def get_args(p: Any) -> Depth2imgArgs:
    """The Depth2img settings job `p` will run with (checked: `SettingsError` for invalid values)."""
    from .webui.script_impl import parse_args

    return parse_args(p.script_args[args_slice(p.scripts)])


def set_args(p: Any, args: Depth2imgArgs | Mapping[str, Any]) -> None:
    """Make job `p` run Depth2img with `args` (a `Depth2imgArgs`, or fields by name: the others
    keep their defaults). Call it before `process_images(p)`: Depth2img reads them in `before_process`."""
    if not isinstance(args, Depth2imgArgs):
        args = Depth2imgArgs.from_values(args)
    where = args_slice(p.scripts)
    values = list(p.script_args)
    if len(values) < where.stop:
        raise SettingsError(f"Depth2img: p.script_args has {len(values)} values; its args end at {where.stop}.")
    values[where] = args.values()
    p.script_args = tuple(values)


def depth_map(
    image: Image.Image | None,
    args: Depth2imgArgs | Mapping[str, Any] | None = None,
    geometry: GeometryRequest | None = None,
) -> np.ndarray:
    """The adjusted depth map (float32 H x W in [0, 1], 1 = near) a job with `args` and `geometry`
    uses for `image` (None with `args.depth_image`: your own map); without `geometry`, at the
    image's own size. `GeometryRequest(width, height, resize_mode, mask, inpaint_full_res, ...)`
    takes A1111's img2img field names.

    Runs in your thread without waiting for A1111's queue: call it from your job or script, which
    already holds the queue (waiting for it there would never end). Raises `Depth2imgError`
    (`SettingsError`, `ImageError`, `WeightsError`) with a message for the user."""
    from .webui import depth_service

    if not isinstance(args, Depth2imgArgs):
        args = Depth2imgArgs.from_values(args)
    return depth_service.depth_map(image, args, geometry).depth


def depth_map_image(depth: np.ndarray, bits: int = 8) -> Image.Image:
    """A depth map from `depth_map` as a gray image: 8-bit ("L") to show, 16-bit ("I;16") to keep."""
    if bits not in (8, 16):
        raise SettingsError(f"Depth2img: bits must be 8 or 16, got {bits}.")
    return depth_to_16bit(depth) if bits == 16 else depth_to_preview(depth)
