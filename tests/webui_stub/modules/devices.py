"""Stand-in for `modules.devices` on a CPU machine."""

import torch

cpu: torch.device = torch.device("cpu")
device: torch.device = cpu
dtype: torch.dtype = torch.float32
dtype_vae: torch.dtype = torch.float32
unet_needs_upcast = False


def torch_gc() -> None:
    pass


def cond_cast_float(input):
    return input.float() if unet_needs_upcast else input
