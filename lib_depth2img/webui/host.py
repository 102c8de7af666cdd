"""Which WebUI runs the extension, A1111 v1.10 or Forge, and the few things that differ.

Forge (`lllyasviel/stable-diffusion-webui-forge`) keeps A1111's `modules.*` and script API but
has no `ldm`: it loads 512-depth-ema as an SD2 model whose UNet takes 5 channels, drops the
checkpoint's MiDaS, and merges the user's extra modules (VAE, text encoders) into any checkpoint.
Everything else in the adapter is written once against the shared surface.
"""

from __future__ import annotations

import importlib.util
from typing import Any

IS_FORGE = importlib.util.find_spec("modules_forge") is not None
DEPTH_UNET_IN_CHANNELS = 5  # 4 latent channels + 1 depth
ADDITIONAL_MODULES_OPTION = "forge_additional_modules"
"""Forge's "VAE / Text Encoder" choice: files merged into whatever checkpoint is loaded."""


def is_depth_model(model: Any) -> bool:
    """Whether the loaded `model` is SD2 depth-to-image.

    A1111: ldm's `LatentDepth2ImageDiffusion`, the one model class with a `depth_model` (MiDaS).
    Forge: an SD2 model whose UNet takes 4 latent + 1 depth channels (an SD2 inpainting UNet
    takes 9); told apart without importing `ldm`, which Forge does not ship.
    """
    if model is None:
        return False
    if getattr(model, "depth_model", None) is not None:
        return True
    unet = getattr(getattr(model, "forge_objects", None), "unet", None)
    if unet is None or not getattr(model, "is_sd2", False):
        return False
    return getattr(unet.model.diffusion_model, "in_channels", None) == DEPTH_UNET_IN_CHANNELS


def additional_modules(options: dict[str, Any]) -> list[str]:
    """Forge's extra modules the user chose (empty in A1111): a depth job runs without them,
    since a VAE or text encoder made for another model would be merged into the depth model."""
    modules = options.get(ADDITIONAL_MODULES_OPTION) if IS_FORGE else None
    return list(modules) if isinstance(modules, (list, tuple)) else []
