"""Image -> network input, and network output -> depth map at the image's size, as MiDaS does it.

MiDaS resizes keeping the aspect ratio with its "minimal" rule: scale by whichever of
net_size/width and net_size/height is closer to 1 (the height's on a tie), then round each side to
the nearest multiple of 32 (halves to even, as numpy rounds). Interpolation is bicubic, values
are RGB in [0, 1] normalised with mean 0.5 and std 0.5, i.e. to [-1, 1].

Jobs hand over the pixels at the generation size, a little above the network's, where this is
MiDaS's own resize. An image more than twice the network's input on a side (a photo estimated
at its own size) is shrunk with antialiasing, so fine texture cannot alias into the depth.
"""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from lib_depth2img.errors import ImageError

ANTIALIAS_ABOVE = 2.0
"""Shrinking by more than this factor filters first (a bare bicubic would alias)."""

SIZE_MULTIPLE = 32
"""The decoder halves the patch grid once more (stride 32); both input sides must divide by it."""


def net_input_size(width: int, height: int, net_size: int) -> tuple[int, int]:
    """(width, height) the network sees for an image of `width` x `height`.

    One side never rounds to 0: a side MiDaS would round away (a very thin strip) gets 32.
    """
    scale_width = net_size / width
    scale_height = net_size / height
    scale = scale_width if abs(1 - scale_width) < abs(1 - scale_height) else scale_height
    return _round_to_multiple(scale * width), _round_to_multiple(scale * height)


def _round_to_multiple(side: float) -> int:
    return max(SIZE_MULTIPLE, round(side / SIZE_MULTIPLE) * SIZE_MULTIPLE)


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
    rgb: np.ndarray, net_size: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """(1, 3, h, w) normalised network input from an (H, W, 3) uint8 array; resized on `device`."""
    height, width = rgb.shape[:2]
    net_width, net_height = net_input_size(width, height, net_size)
    pixels = torch.from_numpy(rgb).to(device).permute(2, 0, 1).unsqueeze(0).float() / 255
    if (net_height, net_width) != (height, width):
        antialias = max(height / net_height, width / net_width) > ANTIALIAS_ABOVE
        pixels = F.interpolate(
            pixels, size=(net_height, net_width), mode="bicubic", align_corners=False, antialias=antialias
        )
    return ((pixels - 0.5) / 0.5).to(dtype)


def to_depth_map(prediction: torch.Tensor, height: int, width: int) -> np.ndarray:
    """(h, w) network output (or (1, h, w)) -> (height, width) float32 numpy, upsampled bicubic.

    Bicubic interpolation overshoots a little at sharp edges; values below zero are clipped so the
    map stays non-negative like the network's output.
    """
    depth = prediction.float().reshape(1, 1, *prediction.shape[-2:])
    if depth.shape[-2:] != (height, width):
        depth = F.interpolate(depth, size=(height, width), mode="bicubic", align_corners=False)
    return depth[0, 0].clamp_min(0).cpu().numpy()
