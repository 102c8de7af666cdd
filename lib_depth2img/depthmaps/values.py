"""Depth-map handling: reading your own map, normalisation, adjustments, preview images and conditioning.

Everything works on float32 arrays, H x W; a *normalised* map lies in [0, 1] with 0 = far and
1 = near (white = near, as MiDaS and the depth model see it). Nothing is rounded to 8 bits
before the preview image itself, so adjustments never create banding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ImageError
from ..images import DEFAULT_MAX_MEGAPIXELS, ImageSource, describe_source, load_image
from ..settings import DepthAdjustments

CONDITIONING_EPSILON = 0.001
"""The `+ 0.001` in the training-time normalisation of `LatentDepth2ImageDiffusion`."""

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_GAUSSIAN_TRUNCATE = 3.0  # kernel reaches 3 sigma each side, like scipy's default 4 but cheaper


# -- reading your own depth map --------------------------------------------------------------------


def load_depth_map(
    source: ImageSource, *, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, name: str | None = None
) -> np.ndarray:
    """A user's depth map as float32 H x W in [0, 1] (white = 1 = near), at full bit depth.

    8-bit maps are divided by 255, 16-bit ones (`I;16`, or `I` holding 0..65535) by 65535;
    colour maps use their luma (ITU-R 601, computed in float so no 8-bit rounding is added) and
    ignore alpha; palette maps use their palette colours. Float (`F`) maps already inside [0, 1]
    are kept; other float or 32-bit integer maps are stretched from their own min..max
    (`normalize_depth`), since their scale has no fixed meaning. 16-bit-per-channel
    colour PNGs reach us as 8-bit (Pillow reduces them); save 16-bit depth as grayscale.
    """
    label = name or describe_source(source, default="the depth map")
    image = load_image(source, max_megapixels=max_megapixels, name=label)
    return _depth_values(image, label)


def _depth_values(image: Image.Image, label: str) -> np.ndarray:
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        return (np.asarray(image, dtype=np.float32) / 65535.0).astype(np.float32)
    if mode == "I":
        values = np.asarray(image, dtype=np.int64)
        if values.min() >= 0 and values.max() <= 65535:
            return (values / 65535.0).astype(np.float32)
        return normalize_depth(values)
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        if not np.isfinite(values).all():
            raise ImageError(
                f"{label}: the float depth map contains NaN or infinite values (a Z pass "
                "background?); replace them with the farthest depth and save it again."
            )
        if values.min() >= 0.0 and values.max() <= 1.0:
            return values.copy()
        return normalize_depth(values)
    if mode == "1":
        return np.asarray(image, dtype=np.float32)  # bilevel: 0 or 1 already
    if mode in ("L", "LA", "La"):
        return np.asarray(image.getchannel(0), dtype=np.float32) / np.float32(255.0)
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    luma = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(luma / np.float32(255.0), 0.0, 1.0).astype(np.float32)


# -- normalisation ---------------------------------------------------------------------------------


def normalize_depth(raw: np.ndarray, range: tuple[float, float] | None = None) -> np.ndarray:
    """Raw estimator output (relative inverse depth, any scale) to float32 in [0, 1], 0 = far.

    `range` = (lo, hi) maps lo to 0 and hi to 1 and clips outside it: give one range to all
    frames of a sequence (see `sequence_range`) so their brightness does not flicker. Without
    it the map's own min..max is used. A flat map (hi == lo) becomes all 0 (everything far).
    """
    values = np.asarray(raw, dtype=np.float32)
    low, high = (float(values.min()), float(values.max())) if range is None else map(float, range)
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    return np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)


def sequence_range(raws: Iterable[np.ndarray]) -> tuple[float, float]:
    """One (lo, hi) covering every raw map of a sequence, for `normalize_depth(raw, range=...)`."""
    extremes = [(float(np.min(raw)), float(np.max(raw))) for raw in raws]
    return min(low for low, _ in extremes), max(high for _, high in extremes)


# -- adjustments -----------------------------------------------------------------------------------


def apply_adjustments(depth: np.ndarray, adjustments: DepthAdjustments) -> np.ndarray:
    """Apply the user's edits to a normalised map, in the order `DepthAdjustments` lists them.

    invert (1 - d) → far/near clip, stretching [far, near] back to [0, 1] → gamma (d ** gamma)
    → gaussian blur with standard deviation `blur` pixels. Returns a new float32 array.
    """
    result = np.asarray(depth, dtype=np.float32)
    if adjustments.invert:
        result = 1.0 - result
    if adjustments.far_clip > 0.0 or adjustments.near_clip < 1.0:  # DepthAdjustments keeps far < near
        span = adjustments.near_clip - adjustments.far_clip
        result = np.clip((result - adjustments.far_clip) / span, 0.0, 1.0)
    if adjustments.gamma != 1.0:
        result = np.power(np.clip(result, 0.0, 1.0), adjustments.gamma)
    if adjustments.blur > 0.0:
        result = gaussian_blur(result, adjustments.blur)
    return np.array(result, dtype=np.float32)


def gaussian_blur(values: np.ndarray, sigma: float) -> np.ndarray:
    """Separable gaussian blur in float32 (torch conv), borders extended with their edge values."""
    radius = max(1, math.ceil(_GAUSSIAN_TRUNCATE * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    image = _to_tensor(values)
    with torch.no_grad():
        image = F.pad(image, (radius, radius, 0, 0), mode="replicate")
        image = F.conv2d(image, kernel.view(1, 1, 1, -1))
        image = F.pad(image, (0, 0, radius, radius), mode="replicate")
        image = F.conv2d(image, kernel.view(1, 1, -1, 1))
    return image[0, 0].numpy()


# -- images ----------------------------------------------------------------------------------------


def depth_to_preview(depth: np.ndarray) -> Image.Image:
    """A normalised map as an 8-bit gray image (mode L) for display; white = near."""
    return Image.fromarray(_quantize(depth, 255).astype(np.uint8), mode="L")


def depth_to_16bit(depth: np.ndarray) -> Image.Image:
    """A normalised map as a 16-bit gray image (mode I;16) for saving as PNG without banding."""
    return Image.fromarray(_quantize(depth, 65535).astype(np.uint16), mode="I;16")


def _quantize(depth: np.ndarray, levels: int) -> np.ndarray:
    return np.rint(np.clip(np.asarray(depth, dtype=np.float32), 0.0, 1.0) * levels)


# -- conditioning ----------------------------------------------------------------------------------


def depth_conditioning(
    depths: Sequence[np.ndarray],
    latent_size: tuple[int, int],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The depth input of the UNet: [B, 1, h, w] for `latent_size` = (h, w), i.e. image H/8 x W/8.

    As the model was trained (`LatentDepth2ImageDiffusion`): each map is resized bicubic to the
    latent size, then normalised per sample with `2 * (d - min) / (max - min + 0.001) - 1`, so
    every sample spans about [-1, 1] whatever the maps' scale. A flat map is exactly -1 everywhere
    (finite, unlike A1111's batch-wide normalisation without epsilon, which gives NaN). Maps of
    different sizes may be mixed. Computed in float32, then cast to `dtype` on `device`.
    """
    if len(depths) == 0:
        raise ValueError("depth_conditioning needs at least one depth map")
    batch = torch.cat([_resize_bicubic(depth, latent_size) for depth in depths])
    low = torch.amin(batch, dim=(1, 2, 3), keepdim=True)
    high = torch.amax(batch, dim=(1, 2, 3), keepdim=True)
    batch = 2.0 * (batch - low) / (high - low + CONDITIONING_EPSILON) - 1.0
    return batch.to(device=device, dtype=dtype)


def _resize_bicubic(depth: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """[1, 1, h, w] bicubic resize; a flat map stays exactly flat (bicubic weights do not sum to
    exactly 1 in float32, and the per-sample normalisation would magnify that rounding)."""
    values = _to_tensor(depth)
    if values.min() == values.max():
        return torch.full((1, 1, *size), float(values.flatten()[0]))
    return F.interpolate(values, size=tuple(size), mode="bicubic", align_corners=False)


def _to_tensor(values: np.ndarray) -> torch.Tensor:
    """[1, 1, H, W] float32 copy: the arrays we get are often read-only, which `from_numpy` warns about."""
    return torch.tensor(np.asarray(values, dtype=np.float32))[None, None]
