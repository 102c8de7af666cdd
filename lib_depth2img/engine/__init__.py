"""The standalone SD2-depth engine: the model written from the checkpoint's facts, and its loading.

Used by the command line and the standalone app; inside A1111 the WebUI's own model runs instead.
"""

from .layers import attention_backend, get_attention_backend, set_attention_backend
from .model import (
    FULL,
    TINY,
    EngineConfig,
    SD2DepthModel,
    build_model,
    infer_config,
    load_checkpoint,
    noise_schedule,
    write_demo_checkpoint,
)
from .text_encoder import TextConfig
from .unet import UNetConfig
from .vae import VAEConfig

__all__ = [
    "FULL",
    "TINY",
    "EngineConfig",
    "SD2DepthModel",
    "TextConfig",
    "UNetConfig",
    "VAEConfig",
    "attention_backend",
    "build_model",
    "get_attention_backend",
    "infer_config",
    "load_checkpoint",
    "noise_schedule",
    "set_attention_backend",
    "write_demo_checkpoint",
]
