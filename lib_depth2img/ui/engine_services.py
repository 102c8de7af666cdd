"""The standalone app's `DepthServices`: the panel's contract fulfilled by the project's own engine.

Checkpoints are the depth checkpoints of one models folder (`model_download.default_models_dir()`
unless told otherwise), plus the one the app was started with. One pipeline is loaded at a time
(512-depth-ema holds about 5 GB); naming another checkpoint in the panel loads it in place of the
previous one. The depth cache outlives those switches, so a preview makes the next job's depth
step free, as it does inside A1111.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image

from ..checkpoints.discovery import find_depth_checkpoints
from ..checkpoints.download import download_depth_model
from ..depthmaps.cache import DepthCache
from ..depthmaps.geometry import GeometryRequest
from ..depthmaps.source import DepthResult, depth_for_images
from ..engine import write_demo_checkpoint
from ..engine.pipeline import Depth2ImgPipeline, GenerationRequest
from ..errors import SettingsError, WeightsError
from ..estimators.files import OFFICIAL_DOWNLOADS, find_weights, install_estimator, missing_weights_message
from ..images import load_image
from ..settings import EMBEDDED_ESTIMATOR, Depth2imgArgs
from . import InstallProgress

if TYPE_CHECKING:
    from ..estimators import DepthEstimator

DEMO_CHECKPOINT_NAME = "DEMO-random-weights.safetensors"
"""No "depth" in the name: discovery puts a real 512-depth-ema before it."""
INIT_IMAGE_NAME = "the init image"


def ensure_demo_checkpoint(models_dir: Path) -> Path:
    """The demo checkpoint (tiny, random weights) in `models_dir`, written first if it is missing.

    Written in a hidden folder beside it and renamed into place, so an interrupted start never
    leaves a half-written checkpoint that the next start would take for a real one.
    """
    path = models_dir / DEMO_CHECKPOINT_NAME
    if path.is_file():
        return path
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".depth2img-demo-", dir=models_dir))  # hidden: never discovered
    try:
        os.replace(write_demo_checkpoint(staging / DEMO_CHECKPOINT_NAME), path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


class EngineServices:
    """The panel's services over the engine, and the pipeline that the app's Generate runs.

    `startup_checkpoint` (--ckpt, or the demo) comes first in the checkpoint list and is what an
    empty checkpoint choice means; without it, the first depth checkpoint of `models_dir`.
    """

    def __init__(
        self,
        models_dir: Path,
        *,
        startup_checkpoint: Path | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.models_dir = Path(models_dir)
        self.startup_checkpoint = startup_checkpoint
        self.device = torch.device(device)
        self.dtype = dtype
        self.cache = DepthCache()
        self._loaded: tuple[Path, Depth2ImgPipeline] | None = None
        self._lock = threading.RLock()

    # -- the panel's contract ----------------------------------------------------------------

    def depth_checkpoint_titles(self) -> list[str]:
        return list(self.checkpoints())

    def estimator_choices(self) -> list[str]:
        """The checkpoint's own MiDaS, the estimators whose weights are in the models folder, and
        those that can be installed there."""
        from ..estimators import ESTIMATORS

        return [EMBEDDED_ESTIMATOR] + [
            name for name in ESTIMATORS
            if name in OFFICIAL_DOWNLOADS or find_weights(name, [self.models_root]) is not None
        ]

    def installable_estimators(self) -> list[str]:
        return [name for name in OFFICIAL_DOWNLOADS if find_weights(name, [self.models_root]) is None]

    def install_estimator(self, name: str, progress: InstallProgress | None = None) -> str:
        return str(install_estimator(name, self.models_root, progress=progress))

    def estimate_depth(
        self,
        image: Image.Image | None,
        args: Depth2imgArgs,
        geometry: GeometryRequest | None = None,
        task_id: str | None = None,
    ) -> DepthResult:
        """The preview's depth map, through the cache and estimator that generation uses, at the
        geometry Generate will use (its size rules: a side not given comes from the image); your own
        depth map alone needs no checkpoint at all. The app shows no task progress: `task_id` is not used."""
        image = load_init_image(image)
        frame = None
        if geometry is not None:
            if geometry.inpaint_full_res:
                raise SettingsError("Depth2img: the standalone app inpaints the whole picture; "
                                    "'Only masked' is for A1111.")
            frame = GenerationRequest(
                init_image=image, depth=args, width=geometry.width, height=geometry.height,
                resize_mode=geometry.resize_mode,
            ).geometry
        with contextlib.ExitStack() as visits:

            def load_estimator() -> DepthEstimator:
                pipeline = self.pipeline(args.checkpoint, args.estimator)
                # the pipeline's own estimator visit: on CUDA it borrows the GPU and gives it back
                return visits.enter_context(pipeline.estimator_visit())(args.estimator)

            return depth_for_images([image], args, load_estimator, self.cache, geometry=frame)[0]

    def install_depth_model(self, fmt: str = "safetensors", progress: InstallProgress | None = None) -> str:
        return str(download_depth_model(self.models_dir, fmt=fmt, progress=progress))

    # -- what the app uses -------------------------------------------------------------------

    def checkpoints(self) -> dict[str, Path]:
        """Depth checkpoints by title: the startup one first, then those found in `models_dir`."""
        found = [] if self.startup_checkpoint is None else [self.startup_checkpoint]
        found += find_depth_checkpoints(self.models_dir)
        titles: dict[str, Path] = {}
        listed: set[Path] = set()
        for path in found:  # the startup checkpoint may also lie in the models folder
            if path.resolve() not in listed:
                listed.add(path.resolve())
                titles[self._title(path)] = path
        return titles

    @property
    def models_root(self) -> Path:
        """The folder holding the checkpoints folder, where estimator weights have their folders."""
        return self.models_dir.parent

    def pipeline(self, title: str = "", estimator: str = EMBEDDED_ESTIMATOR) -> Depth2ImgPipeline:
        """The pipeline of the checkpoint named `title` ("": the startup or first one), loaded
        in place of the previous one when it is another, with `estimator` loaded into it."""
        with self._lock:
            path = self._checkpoint_path(title)
            if self._loaded is None or self._loaded[0] != path:
                self._loaded = None  # free the previous model before loading the next one
                pipeline = Depth2ImgPipeline.from_checkpoint(
                    path, device=self.device, dtype=self.dtype, cache=self.cache
                )
                self._loaded = (path, pipeline)
            pipeline = self._loaded[1]
            if estimator != EMBEDDED_ESTIMATOR and estimator not in pipeline.estimators:
                pipeline.estimators[estimator] = self._load_estimator(estimator, pipeline)
            return pipeline

    def _load_estimator(self, name: str, pipeline: Depth2ImgPipeline) -> DepthEstimator:
        from ..estimators import ESTIMATORS, DepthEstimator

        if name not in ESTIMATORS:
            raise SettingsError(f"Unknown depth estimator {name!r}; choose one of: {', '.join(self.estimator_choices())}.")
        path = find_weights(name, [self.models_root])
        if path is None:
            raise WeightsError(missing_weights_message(name, [self.models_root]))
        device = "cpu" if pipeline.offloads_estimators else self.device
        return DepthEstimator.from_file(path, name, device=device, dtype=self.dtype)

    @property
    def loaded(self) -> Depth2ImgPipeline | None:
        """The pipeline loaded now, if any (to tell the user whether it is the demo)."""
        return None if self._loaded is None else self._loaded[1]

    def missing_checkpoint_message(self) -> str:
        """Where to put a depth checkpoint and how else to get one: said wherever one is missing."""
        return (
            f"No depth checkpoint yet. Put 512-depth-ema.safetensors (or .ckpt) in {self.models_dir}, "
            "or click \"Install depth model\" in the Depth2img panel (a 5.7 GB download), then "
            "refresh (\U0001f504). To try the flow first: python -m lib_depth2img serve --demo (a tiny "
            "checkpoint with random weights: it draws noise)."
        )

    def _checkpoint_path(self, title: str) -> Path:
        titles = self.checkpoints()
        if not titles:
            raise WeightsError(self.missing_checkpoint_message())
        if not title:
            return next(iter(titles.values()))
        if title not in titles:
            raise SettingsError(
                f"No depth checkpoint named {title!r} here; choose one of: {', '.join(titles)}."
            )
        return titles[title]

    def _title(self, path: Path) -> str:
        """The path inside the models folder; a checkpoint elsewhere keeps its full path."""
        try:
            return path.resolve().relative_to(self.models_dir.resolve()).as_posix()
        except ValueError:
            return str(path)


def load_init_image(image: Image.Image | str | None) -> Image.Image | None:
    """An init-image upload as the core reads images: upright, size-checked, and a clear
    `ImageError` for an upload that is no image (the UI passes those on undecoded)."""
    return None if image is None else load_image(image, name=INIT_IMAGE_NAME)
