"""Where a depth map comes from: the user's own map, the cache, or the estimator.

The A1111 adapter, the standalone engine and the CLI all call `depth_for_images`, so they agree on
precedence (own map over estimate), on normalisation, on the order of adjustments and on the size of
the result. The estimator is asked for through a callable, so a host whose user brings their own
depth maps never loads MiDaS, and each distinct image is estimated once even when a batch holds
copies of it (A1111 runs MiDaS per batch item).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..errors import SettingsError
from ..settings import Depth2imgArgs
from .cache import DepthCache, DepthKey, depth_key
from .geometry import Geometry, fit_image, fit_map
from .values import apply_adjustments, load_depth_map, normalize_depth

if TYPE_CHECKING:
    from ..estimators import DepthEstimator


class DepthOrigin(str, enum.Enum):
    """Where a depth map came from, for logs and tests."""

    OWN_MAP = "own map"
    CACHE = "cache"
    ESTIMATOR = "estimator"


@dataclass(frozen=True)
class DepthResult:
    """A depth map ready for preview and conditioning.

    `depth` is float32 H x W in [0, 1] (0 = far, 1 = near), adjusted, read-only (results of
    identical inputs share one array).
    """

    depth: np.ndarray
    origin: DepthOrigin


EstimatorLoader = Callable[[], "DepthEstimator"]
"""Returns the estimator, loading it on first use; called only when a map must be estimated."""

PixelFitter = Callable[[Image.Image, Geometry], Image.Image]
"""`fit(image, geometry)`: the RGB pixels the model sees (`geometry.fit_image` or a host's own)."""

EstimationProgress = Callable[[int, int], None]
"""`progress(done, total)` while an estimator runs; raising from it stops the estimate."""


def depth_for_images(
    images: Sequence[Image.Image | None],
    settings: Depth2imgArgs,
    load_estimator: EstimatorLoader | None,
    cache: DepthCache | None = None,
    *,
    geometry: Geometry | None = None,
    fit: PixelFitter = fit_image,
    normalize_range: tuple[float, float] | None = None,
    progress: EstimationProgress | None = None,
) -> list[DepthResult]:
    """One adjusted depth map per init image, at the job's `geometry` (None: the image's own size).

    Depth is estimated on the pixels the model sees: `fit(image, geometry)` (the host's own
    resize, see `geometry.fit_image`), so the raw estimate and its cache entry are at the
    generation size and a preview with the job's geometry is exactly the job's map. Each distinct
    image is estimated once (or found in `cache`) at `settings.net_size` (0: the estimator's own),
    normalised to [0, 1] (by `normalize_range` when given, for sequences) and then adjusted.
    `settings.depth_image`, when set, replaces the estimate for every image: it describes the
    whole init image and goes through the same geometry (`geometry.fit_map`); its gray levels are
    kept as they are (white = near), not stretched. Without an own map every image must be given.
    `progress(done, total)` is called as the estimator works; what it raises stops the estimate.
    """
    if settings.depth_image is not None:
        return _from_own_map(images, settings, geometry)
    if any(image is None for image in images):
        raise SettingsError("Depth2img needs an init image to estimate depth from, or your own depth map.")
    if load_estimator is None:
        raise SettingsError("Depth2img: no depth estimator is available here; give your own depth map.")
    pixels = [fit(image, geometry or Geometry(*image.size)) for image in images]
    estimator = load_estimator()
    raws = estimate_raw_depths(pixels, estimator, net_size=settings.net_size or None, cache=cache, progress=progress)
    results: dict[int, DepthResult] = {}
    for raw, origin in raws:
        if id(raw) not in results:  # copies of one image share their raw array, and so their result
            depth = apply_adjustments(normalize_depth(raw, normalize_range), settings.adjustments)
            results[id(raw)] = DepthResult(_read_only(depth), origin)
    return [results[id(raw)] for raw, _ in raws]


def estimate_raw_depths(
    images: Sequence[Image.Image],
    estimator: DepthEstimator,
    *,
    net_size: int | None = None,
    cache: DepthCache | None = None,
    progress: EstimationProgress | None = None,
) -> list[tuple[np.ndarray, DepthOrigin]]:
    """Raw estimates (read-only, at each image's size) and their origin, one per image.

    Give the pixels the model sees (`geometry.fit_image`). Each distinct image is estimated
    once; copies share one array. Use this for sequences: take `depthmaps.values.sequence_range` of the
    raws, then `depth_for_images(..., normalize_range=...)` finds them in the cache.
    """
    effective_net_size = estimator.checked_net_size(net_size)
    found: dict[DepthKey, tuple[np.ndarray, DepthOrigin]] = {}
    results = []
    for image in images:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        key = depth_key(rgb, estimator.name, estimator.weights_id, effective_net_size)
        if key not in found:
            estimate = functools.partial(estimator.estimate, rgb, net_size=effective_net_size, progress=progress)
            if cache is None:
                found[key] = (_read_only(estimate()), DepthOrigin.ESTIMATOR)
            else:
                raw, was_hit = cache.get_or_compute(key, estimate)
                found[key] = (raw, DepthOrigin.CACHE if was_hit else DepthOrigin.ESTIMATOR)
        results.append(found[key])
    return results


def _from_own_map(
    images: Sequence[Image.Image | None], settings: Depth2imgArgs, geometry: Geometry | None
) -> list[DepthResult]:
    own = load_depth_map(settings.depth_image, name="your depth map")
    by_frame: dict[tuple, DepthResult] = {}
    results = []
    for image in images:
        image_size = None if image is None else image.size
        frame = geometry or Geometry(*(image_size or (own.shape[1], own.shape[0])))
        if (frame, image_size) not in by_frame:
            depth = apply_adjustments(fit_map(own, frame, image_size), settings.adjustments)
            by_frame[frame, image_size] = DepthResult(_read_only(depth), DepthOrigin.OWN_MAP)
        results.append(by_frame[frame, image_size])
    return results


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array
