"""Stand-in for `modules.sd_models`: the checkpoint list and fake models that record their use.

A checkpoint is a `.safetensors` file in `model_path`; it loads as the depth model when its state
dict holds the depth marker key (as `sd_models_config.guess_model_config_from_state_dict` decides),
as the inpainting model when its UNet takes 9 channels, else as a plain SD model.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re

import torch
from ldm.models.diffusion.ddpm import LatentDepth2ImageDiffusion, LatentDiffusion
from modules import paths, shared
from safetensors import safe_open

DEPTH_KEY = "depth_model.model.pretrained.act_postprocess3.0.project.0.bias"
INPAINT_KEY = "model.diffusion_model.input_blocks.0.0.weight"

model_dir = "Stable-diffusion"
model_path = os.path.abspath(os.path.join(paths.models_path, model_dir))

checkpoints_list: dict[str, CheckpointInfo] = {}
checkpoint_aliases: dict[str, CheckpointInfo] = {}
loads: list[str] = []
"""Titles of the checkpoints loaded, in order (the stub's record of model swaps)."""


class CheckpointInfo:
    def __init__(self, filename):
        self.filename = filename
        abspath = os.path.abspath(filename)
        name = (
            abspath.replace(model_path, "") if abspath.startswith(model_path) else os.path.basename(filename)
        )
        self.name = name.lstrip("/\\")
        self.name_for_extra = os.path.splitext(os.path.basename(filename))[0]
        self.model_name = os.path.splitext(self.name.replace("/", "_").replace("\\", "_"))[0]
        self.hash = hashlib.sha256(self.name.encode()).hexdigest()[:8]
        self.sha256 = None
        self.shorthash = None
        self.title = self.name  # until the file is hashed, as in A1111
        self.short_title = self.name_for_extra
        self.ids = [
            self.hash,
            self.model_name,
            self.title,
            self.name,
            self.name_for_extra,
            f"{self.name} [{self.hash}]",
        ]

    def register(self):
        checkpoints_list[self.title] = self
        for id in self.ids:
            checkpoint_aliases[id] = self

    def calculate_shorthash(self):
        with open(self.filename, "rb") as file:
            self.sha256 = hashlib.sha256(file.read()).hexdigest()
        self.shorthash = self.sha256[:10]
        old_title = self.title
        self.title = f"{self.name} [{self.shorthash}]"
        self.short_title = f"{self.name_for_extra} [{self.shorthash}]"
        self.ids += [self.shorthash, self.sha256, self.title, self.short_title]
        checkpoints_list.pop(old_title, None)
        self.register()
        return self.shorthash


def list_models():
    checkpoints_list.clear()
    checkpoint_aliases.clear()
    for root, _dirs, files in sorted(os.walk(model_path)):
        for name in sorted(files):
            if name.endswith((".ckpt", ".safetensors")) and not name.endswith(
                (".vae.ckpt", ".vae.safetensors")
            ):
                CheckpointInfo(os.path.join(root, name)).register()


def checkpoint_tiles(use_short=False):
    return [x.short_title if use_short else x.title for x in checkpoints_list.values()]


re_strip_checksum = re.compile(r"\s*\[[^]]+]\s*$")


def get_closet_checkpoint_match(search_string):
    if not search_string:
        return None
    info = checkpoint_aliases.get(search_string)
    if info is not None:
        return info
    for text in (search_string, re.sub(re_strip_checksum, "", search_string)):
        found = sorted([i for i in checkpoints_list.values() if text in i.title], key=lambda x: len(x.title))
        if found:
            return found[0]
    return None


def select_checkpoint():
    info = checkpoint_aliases.get(shared.opts.sd_model_checkpoint)
    if info is not None:
        return info
    if not checkpoints_list:
        raise FileNotFoundError(f"No checkpoints found. Looked at directory {model_path}")
    return next(iter(checkpoints_list.values()))


class FakeSDModel:
    """Records every UNet call (its image conditioning), VAE encode and MiDaS call."""

    def __init__(self, info: CheckpointInfo, keys: set[str], unet_in_channels: int):
        self.sd_checkpoint_info = info
        self.sd_model_checkpoint = info.filename
        self.sd_model_hash = info.shorthash
        self.cond_stage_key = "txt"
        self.is_sdxl_inpaint = False
        self.in_channels = unet_in_channels
        self.model = type("DiffusionWrapper", (), {})()
        self.model.conditioning_key = "hybrid" if unet_in_channels != 4 else "crossattn"
        self.dtype = torch.float32
        self.device = torch.device("cpu")
        self.unet_calls: list[torch.Tensor | None] = []
        self.vae_encodes = 0
        self.depth_model_calls = 0
        self.fail_sampling: Exception | None = None

    @contextlib.contextmanager
    def ema_scope(self):
        yield



class MiDaSInference(torch.nn.Module):
    """ldm's MiDaS wrapper as A1111 loads it from the depth checkpoint: `.model` is the DPT (here the
    project's, with the same tensor names), forward answers [B, 1, H, W]; calls counted per image."""

    def __init__(self, checkpoint: str, owner: FakeSDModel):
        super().__init__()
        from lib_depth2img.estimators import DepthEstimator

        self.model = DepthEstimator.from_file(checkpoint).model
        self.owner = [owner]  # a list: not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.owner[0].depth_model_calls += x.shape[0]
        with torch.no_grad():
            return self.model(x).unsqueeze(1)


class FakeDepthModel(FakeSDModel, LatentDepth2ImageDiffusion):
    def __init__(self, info: CheckpointInfo, keys: set[str], unet_in_channels: int):
        super().__init__(info, keys, unet_in_channels)
        self.depth_model = MiDaSInference(info.filename, self)


class FakePlainModel(FakeSDModel, LatentDiffusion):
    pass


class SdModelData:
    def __init__(self):
        self.sd_model = None
        self.loaded_sd_models = []
        self.was_loaded_at_least_once = False

    def get_sd_model(self):
        if self.sd_model is None and not self.was_loaded_at_least_once:
            load_model()
        return self.sd_model

    def set_sd_model(self, v, already_loaded=False):
        self.sd_model = v


model_data = SdModelData()


def load_model(checkpoint_info=None, already_loaded_state_dict=None):
    checkpoint_info = checkpoint_info or select_checkpoint()
    with safe_open(checkpoint_info.filename, "pt") as file:
        keys = set(file.keys())
        in_channels = file.get_slice(INPAINT_KEY).get_shape()[1] if INPAINT_KEY in keys else 4
    if DEPTH_KEY in keys:
        model = FakeDepthModel(checkpoint_info, keys, 5)
    else:
        model = FakePlainModel(checkpoint_info, keys, in_channels)
    checkpoint_info.calculate_shorthash()
    model.sd_model_hash = checkpoint_info.shorthash
    shared.opts.data["sd_model_checkpoint"] = checkpoint_info.title
    loads.append(checkpoint_info.title)
    model_data.set_sd_model(model)
    model_data.was_loaded_at_least_once = True
    return model


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    checkpoint_info = info or select_checkpoint()
    sd_model = sd_model or model_data.sd_model
    if (
        sd_model is not None
        and sd_model.sd_model_checkpoint == checkpoint_info.filename
        and not forced_reload
    ):
        return sd_model
    return load_model(checkpoint_info)


def reset(models_path: str) -> None:
    """Point the stub at a models folder and forget every model (test isolation)."""
    global model_path, model_data
    paths.models_path = models_path
    model_path = os.path.abspath(os.path.join(models_path, model_dir))
    os.makedirs(model_path, exist_ok=True)
    model_data = SdModelData()
    loads.clear()
    list_models()
