"""The depth conditioning of a job, handed to the WebUI's sampler in place of its own step.

Both hosts compute a model's image conditioning in `StableDiffusionProcessing`'s
`img2img_image_conditioning(source_image, latent_image, ...)` (img2img, inpaint, the hires pass)
and `txt2img_image_conditioning(x, width, height)` (txt2img, the latent hires pass), and hand it
to the UNet as `c_concat`. On the depth model A1111's native step runs MiDaS per batch item,
VAE-encodes just for the size and normalises batch-wide; Forge builds a 5-channel inpainting
tensor that does not fit the depth UNet at all. `DepthConditioner` provides both methods for one
job; the job shadows them on that `p` only, and any other model (a hires checkpoint) gets the
host's own conditioning.

Depth is estimated on the pixels the WebUI gives the model (`depth_service.depth_results` with the
job's `Geometry`: width x height by the resize mode, or the "Only masked" crop `p.paste_to`),
so a preview made with the same settings is a cache hit and shows exactly this map.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from modules import devices

from ..depthmaps.geometry import Geometry
from ..depthmaps.values import depth_conditioning
from ..errors import SettingsError
from ..settings import Depth2imgArgs
from . import depth_service, host
from .api import a1111_api_status

LATENT_FACTOR = 8  # A1111's opt_f: image pixels per latent pixel


class DepthConditioner:
    """Depth conditioning for one job `p`; keeps the depth maps it used for the results."""

    def __init__(self, p: Any, args: Depth2imgArgs) -> None:
        self.p = p
        self.args = args
        self.depth_maps: list[np.ndarray] = []
        """The distinct maps fed to the model (0 = far, 1 = near), at the generation geometry."""

    def img2img_image_conditioning(self, source_image: torch.Tensor, latent_image: torch.Tensor,
                                   image_mask: Any = None, round_image_mask: bool = True) -> torch.Tensor:
        """Stands in for `p.img2img_image_conditioning`: [B, 1, h, w] for the batch `source_image`."""
        p = self.p
        if not host.is_depth_model(p.sd_model):
            return type(p).img2img_image_conditioning(p, source_image, latent_image, image_mask, round_image_mask)
        source_image = devices.cond_cast_float(source_image)  # as the host's own method starts
        if getattr(p, "init_images", None) and not p.is_hr_pass:
            with a1111_api_status():  # a damaged depth map, an interrupt
                results = depth_service.depth_results(p.init_images, self.args, geometry=job_geometry(p))
            depths = self._keep([result.depth for result in results])
            latent_size = (p.height // LATENT_FACTOR, p.width // LATENT_FACTOR)  # the sampled latent's size
        else:  # txt2img's hires pass re-encodes its upscaled images through this method
            latent_size = tuple(size // LATENT_FACTOR for size in source_image.shape[-2:])
            depths = self._own_map_depths(latent_size)
        return self._batch(depths, latent_size, source_image.shape[0], source_image)

    def txt2img_image_conditioning(self, x: torch.Tensor, width: int | None = None, height: int | None = None) -> torch.Tensor:
        """Stands in for `p.txt2img_image_conditioning`: [B, 1, h, w] from your own depth map."""
        p = self.p
        if not host.is_depth_model(p.sd_model):
            return type(p).txt2img_image_conditioning(p, x, width, height)
        latent_size = tuple(x.shape[-2:])
        return self._batch(self._own_map_depths(latent_size), latent_size, x.shape[0], x)

    def _own_map_depths(self, latent_size: tuple[int, int]) -> list[np.ndarray]:
        if self.args.depth_image is None:
            raise SettingsError(TXT2IMG_NEEDS_DEPTH_MAP)
        frame = Geometry(latent_size[1] * LATENT_FACTOR, latent_size[0] * LATENT_FACTOR)
        with a1111_api_status():
            return self._keep([depth_service.depth_results([None], self.args, geometry=frame)[0].depth])

    def _keep(self, depths: list[np.ndarray]) -> list[np.ndarray]:
        """Remember each distinct map once (batch count and the hires pass ask again for equal maps)."""
        for depth in depths:
            if not any(kept.shape == depth.shape and np.array_equal(kept, depth) for kept in self.depth_maps):
                self.depth_maps.append(depth)
        return depths

    def _batch(self, depths: list[np.ndarray], latent_size: tuple[int, int], batch_size: int,
               like: torch.Tensor) -> torch.Tensor:
        """[batch_size, 1, h, w]: one map for the whole batch, or one per batch item."""
        conditioning = depth_conditioning(depths, latent_size, dtype=like.dtype, device=like.device)
        if len(depths) == 1:
            conditioning = conditioning.repeat(batch_size, 1, 1, 1)
        if conditioning.shape[0] != batch_size:
            raise RuntimeError(f"Depth2img: {len(depths)} depth maps for a batch of {batch_size}")
        return self._truncate_like_hires(conditioning)

    def _truncate_like_hires(self, conditioning: torch.Tensor) -> torch.Tensor:
        """The hires pass crops its latent by `truncate_x/y` after asking for the conditioning; crop alike."""
        p = self.p
        truncate_x, truncate_y = getattr(p, "truncate_x", 0), getattr(p, "truncate_y", 0)
        if not p.is_hr_pass or not (truncate_x or truncate_y):
            return conditioning
        height, width = conditioning.shape[-2:]
        return conditioning[:, :, truncate_y // 2:height - (truncate_y + 1) // 2,
                            truncate_x // 2:width - (truncate_x + 1) // 2]


def job_geometry(p: Any) -> Geometry:
    """Where A1111 put the init images' pixels in job `p` (after `p.init` has run)."""
    crop = None
    if getattr(p, "image_mask", None) is not None and p.inpaint_full_res and p.paste_to:
        x, y, width, height = p.paste_to
        crop = (x, y, x + width, y + height)
    return Geometry(p.width, p.height, p.resize_mode, crop)


TXT2IMG_NEEDS_DEPTH_MAP = (
    "Depth2img: txt2img has no init image to take depth from; upload your own depth map in the Depth2img "
    "panel (white = near), or use the img2img tab."
)
