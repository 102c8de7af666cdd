"""The timm classes the depth backbones are built from, found where each timm version keeps them.

Backbones are assembled from timm's classes with explicit arguments rather than through
`timm.create_model`, because the MiDaS weights fix the architecture while timm's registered names
moved (`vit_base_resnet50_384` became `vit_base_r50_s16_384` in timm 0.9) and its model functions
do not accept size overrides in 0.6.x. The classes themselves kept their names and their
parameter layout from timm 0.6 to 1.x; only the layer helpers moved from `timm.models.layers` to
`timm.layers`; and timm 0.6 reads Python numbers out of `torch.linspace` while building (drop-path
rates), which fails on the meta device unless that one call stays on the CPU. This module is the
one place that knows these differences.
"""

import contextlib
import functools
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

import torch
from torch.overrides import TorchFunctionMode

from lib_depth2img import compat


@dataclass(frozen=True)
class TimmParts:
    """timm classes used by the backbone factories."""

    version: str
    VisionTransformer: type
    HybridEmbed: type
    ResNetV2: type
    StdConv2dSame: type
    Beit: type


def _first_importable(*module_names: str) -> ModuleType:
    for name in module_names[:-1]:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return importlib.import_module(module_names[-1])


@functools.cache
def timm_parts() -> TimmParts:
    """Import timm once (through `compat`, which survives a mismatched torchvision) and collect its classes."""
    timm = compat.import_timm()
    layers = _first_importable(
        "timm.layers", "timm.models.layers"
    )  # 0.9+ first: 0.9 keeps a deprecated alias
    return TimmParts(
        version=timm.__version__,
        VisionTransformer=importlib.import_module("timm.models.vision_transformer").VisionTransformer,
        HybridEmbed=importlib.import_module("timm.models.vision_transformer_hybrid").HybridEmbed,
        ResNetV2=importlib.import_module("timm.models.resnetv2").ResNetV2,
        StdConv2dSame=layers.StdConv2dSame,
        Beit=importlib.import_module("timm.models.beit").Beit,
    )


class _LinspaceOnCpu(TorchFunctionMode):
    """Runs `torch.linspace` without an explicit device on the CPU, whatever the default device is."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.linspace and kwargs.get("device") is None:
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


@contextlib.contextmanager
def building_on(device: str | torch.device) -> Iterator[None]:
    """Default device for building timm models, "meta" included, under every supported timm version."""
    with torch.device(device), _LinspaceOnCpu():
        yield
