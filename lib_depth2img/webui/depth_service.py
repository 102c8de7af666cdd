"""Depth maps inside A1111: the estimator, the shared cache, and the services the panel and API use.

Jobs (`conditioning`), the panel's preview button and the HTTP routes all get their depth from
`depth_results`, on the pixels A1111 hands the model (its own flatten and `images.resize_image`,
the "Only masked" crop), so a preview with the tab's geometry fills the very cache entry that
Generate then reuses, and a second job on the same image costs no estimation.

The estimator is the project's own MiDaS, loaded from the depth checkpoint file ("embedded"), or
any other estimator of the registry loaded from its release file where users already keep it
(`estimator_files`): models/depth_anything_v2, models/depth_anything, models/midas, and
ControlNet's annotator folders. While the loaded model is that depth checkpoint, "embedded" runs
the model's own MiDaS (`sd_model.depth_model`, under A1111's memory handling) and no second
copy stays in memory; Forge drops the checkpoint's MiDaS when it loads the model, so there
"embedded" is always read from the checkpoint file. Previews and the HTTP route wait for the
WebUI's queue like its own GPU calls, report progress to its progress bar and stop on Interrupt.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from modules import devices, images, masking, paths, processing, sd_models, shared
from PIL import Image
from torch import nn

from ..depthmaps.cache import DepthCache
from ..depthmaps.geometry import Geometry, GeometryRequest, fit_image
from ..depthmaps.source import DepthResult, EstimationProgress, depth_for_images
from ..errors import AccessDenied, Interrupted, SettingsError, WeightsError
from ..estimators.files import OFFICIAL_DOWNLOADS, find_weights, missing_weights_message
from ..estimators.files import install_estimator as download_estimator
from ..settings import EMBEDDED_ESTIMATOR, Depth2imgArgs
from . import checkpoint_swap, settings

if TYPE_CHECKING:
    from ..estimators import DepthEstimator

log = logging.getLogger(__name__)

_cache = DepthCache(settings.CACHE_MB.default * 2**20)
_estimator: tuple[tuple[str, str], DepthEstimator] | None = None
"""The one estimator loaded from a file and its (weights id, estimator name); a new choice replaces it."""
_lock = threading.RLock()
"""Jobs and previews run on different threads; one of them at a time loads, moves or runs MiDaS."""


# -- the panel's and the API's contract ------------------------------------------------------------

def depth_checkpoint_titles() -> list[str]:
    """A1111 checkpoint titles that are depth models, read from its current checkpoint list."""
    return [info.title for info in checkpoint_swap.depth_checkpoints()]


def estimator_choices() -> list[str]:
    """"embedded", the registry's estimators whose weights file is here, and those that can be installed."""
    from ..estimators import ESTIMATORS

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
    _refuse_installs_where_a1111_does(f"the {name} weights into {paths.models_path}")
    return str(download_estimator(name, paths.models_path, progress=progress))


def _refuse_installs_where_a1111_does(what: str) -> None:
    """`AccessDenied` where A1111 refuses to install extensions (`--listen`, `--share`, `--ngrok` or
    `--server-name` without `--enable-insecure-extension-access`): anyone who reaches the server
    could otherwise fill its disk. The panel and the API both go through here."""
    if shared.cmd_opts.disable_extension_access:
        raise AccessDenied(
            "Depth2img: downloading models is off on this server, as A1111's extension installs are, because "
            "it is reachable from other machines (--listen, --share, --ngrok or --server-name). Put "
            f"{what} by hand, or restart A1111 with --enable-insecure-extension-access."
        )


def get_estimator(args: Depth2imgArgs) -> DepthEstimator:
    """The estimator `args` ask for. "embedded" while the depth checkpoint is loaded: the model's
    own MiDaS, and the copy a preview may have loaded before is dropped. Otherwise loaded from its
    file once, on A1111's device, and kept until another is chosen."""
    global _estimator
    from ..estimators import DepthEstimator, weights_id

    path, name = estimator_weights(args)
    key = (weights_id(path, name), name)
    with _lock:
        borrowed = _loaded_model_estimator(args, key[0])
        if borrowed is not None:
            if _estimator is not None:
                _estimator = None
                _give_memory_back()
            return borrowed
        if _estimator is None or _estimator[0] != key:
            _estimator = None  # free the previous one before loading the next
            device = devices.device
            dtype = torch.float32 if torch.device(device).type == "cpu" else devices.dtype
            log.info("Depth2img: loading the %s depth estimator from %s", name, path)
            _estimator = (key, DepthEstimator.from_file(path, name, device=device, dtype=dtype))
        return _estimator[1].to(devices.device)


def _loaded_model_estimator(args: Depth2imgArgs, weights_id: str) -> DepthEstimator | None:
    """The loaded model's own MiDaS as an estimator, when it is the embedded one `args` ask for.

    Built on each call and never kept: A1111 may unload the model, and a reference kept here would
    keep its MiDaS in memory. Inputs go to A1111's device; the model is moved by A1111 alone
    (`--medvram`/`--lowvram` hook its `depth_model`).
    """
    from ..estimators import DepthEstimator
    from ..estimators.registry import get_spec
    from ..estimators.weights import is_tiny_state_dict

    model = sd_models.model_data.sd_model
    if args.estimator != EMBEDDED_ESTIMATOR or model is None or getattr(model, "depth_model", None) is None:
        return None
    if not isinstance(model.depth_model, nn.Module) or getattr(model.depth_model, "model", None) is None:
        return None
    info = model.sd_checkpoint_info
    path, _ = estimator_weights(args)
    if os.path.abspath(info.filename) != os.path.abspath(path):
        return None
    spec = get_spec("dpt_hybrid")
    tiny = is_tiny_state_dict(model.depth_model.model.state_dict(), spec, info.filename)
    return DepthEstimator(_SqueezedDepth(model.depth_model), spec, weights_id, tiny=tiny,
                          input_device=devices.device)


class _SqueezedDepth(nn.Module):
    """ldm's `MiDaSInference` answers [B, 1, H, W]; the estimator takes [B, H, W]."""

    def __init__(self, depth_model: nn.Module) -> None:
        super().__init__()
        self.inner = depth_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).squeeze(1)


def estimate_depth(
    image: Image.Image | None,
    args: Depth2imgArgs,
    geometry: GeometryRequest | None = None,
    task_id: str | None = None,
) -> DepthResult:
    """The adjusted depth map a job with this `geometry` would use (None: at the image's own
    size), through the job's path and cache; waits for A1111's queue and shows in its progress
    bar under `task_id` (a "task(...)" id from the browser), and stops on Interrupt."""
    with _queued(task_id):
        return depth_map(image, args, geometry, progress=_report_progress)


def depth_map(
    image: Image.Image | None,
    args: Depth2imgArgs,
    geometry: GeometryRequest | None = None,
    progress: EstimationProgress | None = None,
) -> DepthResult:
    """`estimate_depth` in the caller's thread, without A1111's queue: for code that already runs
    inside it (a job, another extension's script), where waiting for the queue would never end."""
    frame = None if geometry is None else job_geometry(geometry, image)
    return depth_results([image], args, geometry=frame, progress=progress)[0]


def job_geometry(request: GeometryRequest, image: Image.Image | None) -> Geometry:
    """The geometry A1111's img2img gives `image` for these request fields; "Only masked" takes the
    crop region `StableDiffusionProcessingImg2Img.init` computes from the mask."""
    width, height = request.size_for(image)
    crop = None
    if request.inpaint_full_res and request.mask is not None and image is not None:
        crop = _only_masked_region(request, width, height)
    return Geometry(width, height, request.resize_mode, crop)


def install_depth_model(fmt: str = "safetensors", progress: Callable[[int, int | None], None] | None = None) -> str:
    """Download 512-depth-ema into A1111's checkpoint folder (with its YAML) and list it; returns its path."""
    from ..checkpoints.download import download_depth_model

    _refuse_installs_where_a1111_does(f"512-depth-ema.{fmt} into {sd_models.model_path}")
    path = download_depth_model(sd_models.model_path, fmt=fmt, progress=progress)
    with _queue_lock():
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
    geometry: Geometry | None = None,
    progress: EstimationProgress | None = None,
) -> list[DepthResult]:
    """One adjusted depth map per init image at the job's `geometry` (None: the image's own size),
    estimated on the pixels A1111 gives the model. MiDaS runs once per distinct image, and only
    when no own map is given."""
    _cache.max_bytes = _cache_bytes()
    with _lock:
        try:
            return depth_for_images(init_images, args, lambda: get_estimator(args), _cache, geometry=geometry,
                                    fit=_a1111_pixels, progress=progress)
        finally:
            if _estimator is not None and _offload_after_use():  # never the model's own MiDaS: A1111's to move
                _estimator[1].to(devices.cpu)


def _a1111_pixels(image: Image.Image, geometry: Geometry) -> Image.Image:
    """The pixels of `image` that A1111's img2img hands the model: its flatten, crop and resize."""
    return fit_image(image, geometry, background=shared.opts.img2img_background_color, resize=images.resize_image)


def _only_masked_region(request: GeometryRequest, width: int, height: int) -> tuple[int, int, int, int] | None:
    """A1111's "Only masked" crop box: binary mask, invert, blur, bounding box plus padding, grown
    to the job's aspect ratio; None for a blank mask (A1111 then inpaints the whole picture)."""
    import cv2

    mask = processing.create_binary_mask(images.fix_image(request.mask))
    if request.inpainting_mask_invert:
        mask = Image.fromarray(255 - np.asarray(mask.convert("L")))
    if request.mask_blur > 0:  # x then y, with the kernel size `StableDiffusionProcessingImg2Img.init` uses
        kernel = 2 * int(2.5 * request.mask_blur + 0.5) + 1
        values = cv2.GaussianBlur(np.array(mask), (kernel, 1), request.mask_blur)
        mask = Image.fromarray(cv2.GaussianBlur(values, (1, kernel), request.mask_blur))
    mask = mask.convert("L")
    region = masking.get_crop_region_v2(mask, request.inpaint_full_res_padding)
    if not region:
        return None
    return tuple(masking.expand_crop_region(region, width, height, mask.width, mask.height))


# -- A1111's queue, progress bar and Interrupt ------------------------------------------------------

def _queue_lock() -> Any:
    from modules import call_queue

    return call_queue.queue_lock


@contextlib.contextmanager
def _queued(task_id: str | None) -> Iterator[None]:
    """Run as A1111 runs its own GPU calls: after the jobs queued before, as the current task."""
    from modules import progress

    if task_id:
        progress.add_task_to_queue(task_id)
    with _queue_lock():
        shared.state.begin(job=task_id or "depth2img")
        progress.start_task(task_id)
        shared.state.job_count = 1
        shared.state.textinfo = "Depth2img: estimating the depth map"
        try:
            yield
        finally:
            progress.finish_task(task_id)
            shared.state.end()
            shared.state.interrupted = False


def _report_progress(done: int, total: int) -> None:
    """Progress for A1111's progress bar; raises `Interrupted` once Interrupt was pressed."""
    if shared.state.interrupted:
        raise Interrupted("Depth2img: the depth estimate was interrupted.")
    shared.state.sampling_steps = total
    shared.state.sampling_step = done


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


def estimator_weights(args: Depth2imgArgs) -> tuple[str, str]:
    """(weights file, registry name) of the estimator `args` choose; `SettingsError` for an unknown
    estimator, `WeightsError` where its weights are not here."""
    from ..estimators import ESTIMATORS

    if args.estimator == EMBEDDED_ESTIMATOR:
        current = getattr(sd_models.model_data.sd_model, "sd_checkpoint_info", None)  # Forge starts without
        info = checkpoint_swap.choose_depth_checkpoint(args.checkpoint, current)
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


def _give_memory_back() -> None:
    """Return a dropped estimator's memory: CUDA's cached blocks (A1111's `torch_gc`), and on Linux
    the C heap's free pages, which glibc would otherwise keep in the process (about 0.5 GB of
    MiDaS tensors freed on the CPU)."""
    devices.torch_gc()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _offload_after_use() -> bool:
    """A1111's policy for models beside the UNet: off the GPU after use with --medvram/--lowvram,
    or when the user turned the setting off."""
    low_vram = getattr(shared.cmd_opts, "medvram", False) or getattr(shared.cmd_opts, "lowvram", False)
    return low_vram or not settings.value(settings.KEEP_ESTIMATOR_ON_GPU)


def _cache_bytes() -> int:
    return int(settings.value(settings.CACHE_MB)) * 2**20
