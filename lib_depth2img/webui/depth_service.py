"""Depth maps inside A1111: the estimator, the shared cache, and the services the panel and API use.

Jobs (`conditioning`), the panel's preview button and the HTTP routes all get their depth from
`depth_results`, so a preview of an upload fills the cache entry that Generate then reuses, and
a second job on the same image costs no estimation. The estimator is the project's own MiDaS,
loaded from the depth checkpoint file ("embedded"), or any other estimator of the registry loaded
from its release file where users already keep it (`estimator_files`): models/depth_anything_v2,
models/depth_anything, models/midas, and ControlNet's annotator folders.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from modules import devices, images, paths, sd_models, shared
from PIL import Image

from ..args import EMBEDDED_ESTIMATOR, Depth2imgArgs
from ..depth_cache import DepthCache
from ..depth_source import DepthResult, depth_for_images
from ..errors import SettingsError, WeightsError
from ..estimator_files import OFFICIAL_DOWNLOADS, find_weights, install_estimator as download_estimator
from ..estimator_files import missing_weights_message
from . import checkpoint_swap, settings

if TYPE_CHECKING:
    from ..depth import DepthEstimator

log = logging.getLogger(__name__)

_cache = DepthCache(settings.CACHE_MB.default * 2**20)
_estimator: tuple[tuple[str, str], DepthEstimator] | None = None
"""The one loaded estimator and its (weights id, estimator name); a new choice replaces it."""
_lock = threading.RLock()
"""Jobs and previews run on different threads; one of them at a time loads, moves or runs MiDaS."""


# -- the panel's and the API's contract ------------------------------------------------------------

def depth_checkpoint_titles() -> list[str]:
    """A1111 checkpoint titles that are depth models, read from its current checkpoint list."""
    return [info.title for info in checkpoint_swap.depth_checkpoints()]


def estimator_choices() -> list[str]:
    """"embedded", the registry's estimators whose weights file is here, and those that can be installed."""
    from ..depth import ESTIMATORS

    roots = _models_roots()
    return [EMBEDDED_ESTIMATOR] + [
        name for name in ESTIMATORS if name in OFFICIAL_DOWNLOADS or find_weights(name, roots) is not None
    ]


def installable_estimators() -> list[str]:
    """Estimators with an official download whose weights are not here yet."""
    roots = _models_roots()
    return [name for name in OFFICIAL_DOWNLOADS if find_weights(name, roots) is None]


def install_estimator(name: str, progress: Callable[[int, int | None], None] | None = None) -> str:
    """Download estimator `name`'s official weights into A1111's models folder; returns their path."""
    return str(download_estimator(name, paths.models_path, progress=progress))


def get_estimator(args: Depth2imgArgs) -> DepthEstimator:
    """The estimator `args` ask for, on A1111's device; loaded once, kept until another is chosen."""
    global _estimator
    from ..depth import DepthEstimator, weights_id

    path, name = _weights_file(args)
    key = (weights_id(path, name), name)
    with _lock:
        if _estimator is None or _estimator[0] != key:
            _estimator = None  # free the previous one before loading the next
            device = devices.device
            dtype = torch.float32 if torch.device(device).type == "cpu" else devices.dtype
            log.info("Depth2img: loading the %s depth estimator from %s", name, path)
            _estimator = (key, DepthEstimator.from_file(path, name, device=device, dtype=dtype))
        return _estimator[1].to(devices.device)


def estimate_depth(image: Image.Image | None, args: Depth2imgArgs) -> DepthResult:
    """The adjusted depth map of an init image as a job would see it before resizing (or of the
    user's own map alone); the same path and cache as generation."""
    return depth_results([image], args)[0]


def install_depth_model(fmt: str = "safetensors", progress: Callable[[int, int | None], None] | None = None) -> str:
    """Download 512-depth-ema into A1111's checkpoint folder (with its YAML) and list it; returns its path."""
    from ..model_download import download_depth_model

    path = download_depth_model(sd_models.model_path, fmt=fmt, progress=progress)
    sd_models.list_models()
    return str(path)


def cache_stats() -> dict[str, int]:
    _cache.max_bytes = _cache_bytes()
    return {
        "entries": len(_cache), "bytes": _cache.nbytes, "max_bytes": _cache.max_bytes,
        "hits": _cache.hits, "misses": _cache.misses, "evictions": _cache.evictions,
    }


# -- what jobs use ----------------------------------------------------------------------------------

def depth_results(
    init_images: Sequence[Image.Image | None],
    args: Depth2imgArgs,
    *,
    size: tuple[int, int] | None = None,
    resize_mode: int = 0,
) -> list[DepthResult]:
    """One adjusted depth map per init image, at `size` (width, height) fitted by A1111's
    `resize_mode`, else at the image's size. Images are flattened on A1111's img2img background
    colour first, as `StableDiffusionProcessingImg2Img.init` does, so previews and jobs share
    cache entries. MiDaS runs once per distinct image, and only when no own map is given."""
    flat = [None if image is None else images.flatten(image, shared.opts.img2img_background_color)
            for image in init_images]
    _cache.max_bytes = _cache_bytes()
    with _lock:
        try:
            return depth_for_images(flat, args, lambda: get_estimator(args), _cache, size=size, resize_mode=resize_mode)
        finally:
            if _estimator is not None and not settings.value(settings.KEEP_ESTIMATOR_ON_GPU):
                _estimator[1].to(devices.cpu)


# -- where things are -------------------------------------------------------------------------------

def _models_roots() -> list[Path]:
    """Models folders that may hold estimator weights: A1111's, and ControlNet's annotator folders
    (its `control_net_modules_path` setting, and `annotator/downloads` where older ControlNet versions put them)."""
    models = Path(paths.models_path)
    roots = [models]
    configured = getattr(shared.opts, "data", {}).get("control_net_modules_path")
    if configured:
        roots.append(Path(configured))
    roots.append(models.parent / "extensions" / "sd-webui-controlnet" / "annotator" / "downloads")
    return roots


def _weights_file(args: Depth2imgArgs) -> tuple[str, str]:
    """(weights file, registry name) of the estimator `args` choose."""
    from ..depth import ESTIMATORS

    if args.estimator == EMBEDDED_ESTIMATOR:
        current = sd_models.model_data.sd_model
        info = checkpoint_swap.choose_depth_checkpoint(
            args.checkpoint, None if current is None else current.sd_checkpoint_info
        )
        return info.filename, "dpt_hybrid"
    spec = ESTIMATORS.get(args.estimator)
    if spec is None:
        raise SettingsError(
            f"Depth2img: unknown depth estimator '{args.estimator}'; choose one of {', '.join(estimator_choices())}."
        )
    path = find_weights(args.estimator, _models_roots())
    if path is None:
        raise WeightsError(missing_weights_message(args.estimator, _models_roots()))
    return os.fspath(path), args.estimator


def _cache_bytes() -> int:
    return int(settings.value(settings.CACHE_MB)) * 2**20
