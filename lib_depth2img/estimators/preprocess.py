"""Image -> network input, and network output -> depth map at the image's size, per model family.

MiDaS resizes keeping the aspect ratio with its "minimal" rule: scale by whichever of
net_size/width and net_size/height is closer to 1 (the height's on a tie), then round each side to
the nearest multiple of 32 (halves to even, as numpy rounds). Interpolation is bicubic, values
are RGB in [0, 1] normalised with mean 0.5 and std 0.5, i.e. to [-1, 1]; the depth map goes back
to the image's size bicubic.

Depth Anything uses the "lower bound" rule: scale so the short side is net_size, round each side
to the nearest multiple of 14, and round up instead where that would fall below net_size. Also
bicubic, normalised with ImageNet's mean and std; its depth map goes back bilinear (V2 with
aligned corners, V1 without).

Jobs hand over the pixels at the generation size, a little above the network's, where this is
the family's own resize. An image more than twice the network's input on a side (a photo
estimated at its own size) is shrunk with antialiasing, so fine texture cannot alias into the depth.
"""

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from lib_depth2img.errors import ImageError

ANTIALIAS_ABOVE = 2.0
"""Shrinking by more than this factor filters first (a bare bicubic would alias)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputRule:
    """How a model family sizes and normalises its input and resizes its output back."""

    multiple: int
    """Both input sides must divide by it (MiDaS's decoder halves its stride-16 grid once more: 32;
    DINOv2's patches: 14)."""
    fit: Literal["minimal", "lower_bound"]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    output_mode: Literal["bicubic", "bilinear"]
    output_align_corners: bool


MIDAS_INPUT = InputRule(32, "minimal", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", False)
DEPTH_ANYTHING_V2_INPUT = InputRule(14, "lower_bound", IMAGENET_MEAN, IMAGENET_STD, "bilinear", True)
DEPTH_ANYTHING_V1_INPUT = InputRule(14, "lower_bound", IMAGENET_MEAN, IMAGENET_STD, "bilinear", False)


def net_input_size(width: int, height: int, net_size: int, rule: InputRule = MIDAS_INPUT) -> tuple[int, int]:
    """(width, height) the network sees for an image of `width` x `height`.

    Under the minimal rule one side never rounds to 0: a side MiDaS would round away (a very thin
    strip) gets one multiple.
    """
    scale_width = net_size / width
    scale_height = net_size / height
    if rule.fit == "lower_bound":
        scale = max(scale_width, scale_height)
        return (
            _round_up_to_bound(scale * width, net_size, rule.multiple),
            _round_up_to_bound(scale * height, net_size, rule.multiple),
        )
    scale = scale_width if abs(1 - scale_width) < abs(1 - scale_height) else scale_height
    return _round_to_multiple(scale * width, rule.multiple), _round_to_multiple(scale * height, rule.multiple)


def _round_to_multiple(side: float, multiple: int) -> int:
    return max(multiple, round(side / multiple) * multiple)


def _round_up_to_bound(side: float, bound: int, multiple: int) -> int:
    rounded = round(side / multiple) * multiple
    return rounded if rounded >= bound else math.ceil(side / multiple) * multiple


def image_to_rgb_array(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a PIL image in any mode PIL converts to RGB (alpha is dropped)."""
    if not isinstance(image, Image.Image):
        raise ImageError(f"expected a PIL image to estimate depth from, got {type(image).__name__}")
    if image.width == 0 or image.height == 0:
        raise ImageError(
            f"the image is empty ({image.width}x{image.height} pixels); use an image with content"
        )
    return np.array(image.convert("RGB"))


def to_network_input(
    rgb: np.ndarray, net_size: int, device: torch.device, dtype: torch.dtype, rule: InputRule = MIDAS_INPUT
) -> torch.Tensor:
    """(1, 3, h, w) normalised network input from an (H, W, 3) uint8 array; resized on `device`."""
    height, width = rgb.shape[:2]
    net_width, net_height = net_input_size(width, height, net_size, rule)
    pixels = torch.from_numpy(rgb).to(device).permute(2, 0, 1).unsqueeze(0).float() / 255
    if (net_height, net_width) != (height, width):
        antialias = max(height / net_height, width / net_width) > ANTIALIAS_ABOVE
        pixels = F.interpolate(
            pixels, size=(net_height, net_width), mode="bicubic", align_corners=False, antialias=antialias
        )
    mean = torch.tensor(rule.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(rule.std, device=device).view(1, 3, 1, 1)
    return ((pixels - mean) / std).to(dtype)


def to_depth_map(prediction: torch.Tensor, height: int, width: int, rule: InputRule = MIDAS_INPUT) -> np.ndarray:
    """(h, w) network output (or (1, h, w)) -> (height, width) float32 numpy, resized as the family does it.

    Bicubic interpolation overshoots a little at sharp edges; values below zero are clipped so the
    map stays non-negative like the network's output.
    """
    depth = prediction.float().reshape(1, 1, *prediction.shape[-2:])
    if depth.shape[-2:] != (height, width):
        depth = F.interpolate(
            depth, size=(height, width), mode=rule.output_mode, align_corners=rule.output_align_corners
        )
    return depth[0, 0].clamp_min(0).cpu().numpy()
