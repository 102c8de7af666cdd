"""Where a depth map comes from: the user's own map, the cache, or the estimator.

The A1111 adapter, the standalone engine and the CLI all call `depth_for_images` (or
`depth_for_image`), so they agree on precedence (own map over estimate), on normalisation, on
the order of adjustments and on the size of the result. The estimator is asked for through a
callable, so a host whose user brings their own depth maps never loads MiDaS, and each distinct
image is estimated once even when a batch holds copies of it (A1111 runs MiDaS per batch item).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .args import Depth2imgArgs
from .depth_cache import DepthCache, DepthKey, depth_key
from .depthmap import apply_adjustments, fit_to_size, normalize_depth
from .errors import SettingsError
from .images import load_depth_map

if TYPE_CHECKING:
    from .depth import DepthEstimator


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


def depth_for_image(
    image: Image.Image | None,
    settings: Depth2imgArgs,
    load_estimator: EstimatorLoader | None,
    cache: DepthCache | None = None,
    *,
    size: tuple[int, int] | None = None,
    resize_mode: int = 0,
    normalize_range: tuple[float, float] | None = None,
) -> DepthResult:
    """The depth map of one init image (or of none: txt2img from your own map); see `depth_for_images`."""
    return depth_for_images(
        [image],
        settings,
        load_estimator,
        cache,
        size=size,
        resize_mode=resize_mode,
        normalize_range=normalize_range,
    )[0]


def depth_for_images(
    images: Sequence[Image.Image | None],
    settings: Depth2imgArgs,
    load_estimator: EstimatorLoader | None,
    cache: DepthCache | None = None,
    *,
    size: tuple[int, int] | None = None,
    resize_mode: int = 0,
    normalize_range: tuple[float, float] | None = None,
) -> list[DepthResult]:
    """One adjusted depth map per init image, at `size` (width, height) or else the image's size.

    `settings.depth_image`, when set, is used for every image (fitted to the size with A1111's
    `resize_mode`, see `depthmap.fit_to_size`); its gray levels are kept as they are (white =
    near), not stretched. Otherwise each distinct image is estimated once (or found in `cache`)
    at `settings.net_size` (0: the estimator's own), normalised to [0, 1] (by `normalize_range`
    when given, for sequences) and adjusted. Without an own map every image must be given.
    """
    if settings.depth_image is not None:
        return _from_own_map(images, settings, size, resize_mode)
    if any(image is None for image in images):
        raise SettingsError("Depth2img needs an init image to estimate depth from, or your own depth map.")
    if load_estimator is None:
        raise SettingsError("Depth2img: no depth estimator is available here; give your own depth map.")
    estimator = load_estimator()
    raws = estimate_raw_depths(images, estimator, net_size=settings.net_size or None, cache=cache)
    results: dict[int, DepthResult] = {}
    for (raw, origin), image in zip(raws, images, strict=True):
        target = tuple(size or image.size)
        if id(raw) not in results:  # copies of one image share their raw array, and so their result
            depth = fit_to_size(normalize_depth(raw, normalize_range), target, resize_mode)
            results[id(raw)] = DepthResult(_read_only(apply_adjustments(depth, settings.adjustments)), origin)
    return [results[id(raw)] for raw, _ in raws]


def estimate_raw_depths(
    images: Sequence[Image.Image],
    estimator: DepthEstimator,
    *,
    net_size: int | None = None,
    cache: DepthCache | None = None,
) -> list[tuple[np.ndarray, DepthOrigin]]:
    """Raw estimates (read-only, as the estimator returns them) and their origin, one per image.

    Each distinct image is estimated once; copies share one array. Use this for sequences: take
    `depthmap.sequence_range` of the raws, then `depth_for_images(..., normalize_range=...)`
    finds them in the cache.
    """
    effective_net_size = net_size or estimator.net_size
    found: dict[DepthKey, tuple[np.ndarray, DepthOrigin]] = {}
    results = []
    for image in images:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        key = depth_key(rgb, estimator.name, estimator.weights_id, effective_net_size)
        if key not in found:
            estimate = functools.partial(estimator.estimate, rgb, net_size=effective_net_size)
            if cache is None:
                found[key] = (_read_only(estimate()), DepthOrigin.ESTIMATOR)
            else:
                raw, was_hit = cache.get_or_compute(key, estimate)
                found[key] = (raw, DepthOrigin.CACHE if was_hit else DepthOrigin.ESTIMATOR)
        results.append(found[key])
    return results


def _from_own_map(
    images: Sequence[Image.Image | None],
    settings: Depth2imgArgs,
    size: tuple[int, int] | None,
    resize_mode: int,
) -> list[DepthResult]:
    own = load_depth_map(settings.depth_image, name="your depth map")
    own_size = (own.shape[1], own.shape[0])
    by_size: dict[tuple[int, int], DepthResult] = {}
    results = []
    for image in images:
        target = tuple(size or (image.size if image is not None else own_size))
        if target not in by_size:
            depth = apply_adjustments(fit_to_size(own, target, resize_mode), settings.adjustments)
            by_size[target] = DepthResult(_read_only(depth), DepthOrigin.OWN_MAP)
        results.append(by_size[target])
    return results


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array
