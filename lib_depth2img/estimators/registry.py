"""The depth estimators this project can run, and the one function that builds their networks.

Each estimator is a DPT: MiDaS's with a different backbone, or Depth Anything's own head on
DINOv2. Besides the full size that the released weights need, each has a tiny size (same classes,
small widths and depths) for tests and demos. A state dict says which size it is through the width
of its ViT tokens (the class token, `token_width_key`), so a tiny weights file loads through the
same strict path as a real one. Tiny networks are built for small inputs (`tiny.img_size`: 64 px
for MiDaS, 70 for Depth Anything), which is where `DepthEstimator` aims them by default.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from lib_depth2img.estimators import beit, depth_anything, vit, vit_hybrid
from lib_depth2img.estimators.dpt import DPT, FULL_DECODER, TINY_DECODER
from lib_depth2img.estimators.preprocess import (
    DEPTH_ANYTHING_V1_INPUT,
    DEPTH_ANYTHING_V2_INPUT,
    MIDAS_INPUT,
    InputRule,
    net_input_size,
)
from lib_depth2img.estimators.timm_parts import building_on


class BackboneSize(Protocol):
    """A backbone family's size description; the registry reads the token width and the pretraining size."""

    img_size: int
    embed_dim: int


@dataclass(frozen=True)
class EstimatorSpec:
    """One depth estimator.

    `net_size` is the side its preprocessing aims for and `max_net_size` the largest it may be
    asked for (attention memory grows with the 4th power of the side); `file_name` is the name the official
    release gives its standalone weights; `timm_model` names the timm model the backbone
    reproduces (timm >= 0.9 name); `derived_key_suffixes` end the names of tensors some files
    carry that the network recomputes, or never uses, instead of loading. `assemble` puts the
    backbone into its family's own network; None puts it into MiDaS's DPT. `input_rule` is how
    images are sized and normalised for it; `licence` that of its released weights;
    `models_folder` the folder under a models folder where other tools keep those weights.
    """

    name: str
    net_size: int
    file_name: str
    timm_model: str
    build_backbone: Callable[..., nn.Module]
    full: BackboneSize
    tiny: BackboneSize
    derived_key_suffixes: tuple[str, ...] = ()
    max_net_size: int = 1024
    assemble: Callable[[nn.Module, Any], nn.Module] | None = None
    token_width_key: str = "pretrained.model.cls_token"
    input_rule: InputRule = MIDAS_INPUT
    licence: str = "MIT"
    models_folder: str = "midas"

    @property
    def size_multiple(self) -> int:
        """Input sides are multiples of this; a resolution that is not one is rounded to one."""
        return self.input_rule.multiple

    def is_tiny(self, token_width: int) -> bool | None:
        """Which size a state dict with this ViT token width is: False full, True tiny, None neither."""
        return {self.full.embed_dim: False, self.tiny.embed_dim: True}.get(token_width)


NON_COMMERCIAL = "CC-BY-NC-4.0 (non-commercial)"


def _depth_anything(
    name: str,
    file_name: str,
    full: depth_anything.DepthAnythingSize,
    timm_model: str,
    input_rule: InputRule,
    licence: str,
    models_folder: str,
) -> EstimatorSpec:
    return EstimatorSpec(
        name=name,
        net_size=full.img_size,
        file_name=file_name,
        timm_model=timm_model,
        build_backbone=depth_anything.build_encoder,
        full=full,
        tiny=depth_anything.TINY,
        derived_key_suffixes=(depth_anything.MASK_TOKEN_SUFFIX,),
        assemble=depth_anything.DepthAnything,
        token_width_key="pretrained.cls_token",
        input_rule=input_rule,
        licence=licence,
        models_folder=models_folder,
    )


ESTIMATORS: dict[str, EstimatorSpec] = {
    spec.name: spec
    for spec in (
        # name, net_size, release file name, timm model, backbone builder, full size, tiny size
        EstimatorSpec("dpt_hybrid", 384, "dpt_hybrid-midas-501f0c75.pt", "vit_base_r50_s16_384",
                      vit_hybrid.build_hybrid_backbone, vit_hybrid.R50_VIT_BASE_384, vit_hybrid.HYBRID_TINY),
        EstimatorSpec("dpt_large", 384, "dpt_large-midas-2f21e586.pt", "vit_large_patch16_384",
                      vit.build_vit_backbone, vit.VIT_LARGE_384, vit.VIT_TINY),
        EstimatorSpec("dpt_beit_large_512", 512, "dpt_beit_large_512.pt", "beit_large_patch16_512",
                      beit.build_beit_backbone, beit.BEIT_LARGE_512, beit.BEIT_TINY,
                      derived_key_suffixes=beit.DERIVED_KEY_SUFFIXES,
                      max_net_size=768),  # every block holds a relative-position index of (side/16)^4 entries
        _depth_anything("depth_anything_v2_vits", "depth_anything_v2_vits.pth", depth_anything.V2_SMALL,
                        "vit_small_patch14_dinov2", DEPTH_ANYTHING_V2_INPUT, "Apache-2.0", "depth_anything_v2"),
        _depth_anything("depth_anything_v2_vitb", "depth_anything_v2_vitb.pth", depth_anything.V2_BASE,
                        "vit_base_patch14_dinov2", DEPTH_ANYTHING_V2_INPUT, NON_COMMERCIAL, "depth_anything_v2"),
        _depth_anything("depth_anything_v2_vitl", "depth_anything_v2_vitl.pth", depth_anything.V2_LARGE,
                        "vit_large_patch14_dinov2", DEPTH_ANYTHING_V2_INPUT, NON_COMMERCIAL, "depth_anything_v2"),
        _depth_anything("depth_anything_vits", "depth_anything_vits14.pth", depth_anything.V1_SMALL,
                        "vit_small_patch14_dinov2", DEPTH_ANYTHING_V1_INPUT, "Apache-2.0", "depth_anything"),
        _depth_anything("depth_anything_vitb", "depth_anything_vitb14.pth", depth_anything.V1_BASE,
                        "vit_base_patch14_dinov2", DEPTH_ANYTHING_V1_INPUT, "Apache-2.0", "depth_anything"),
        _depth_anything("depth_anything_vitl", "depth_anything_vitl14.pth", depth_anything.V1_LARGE,
                        "vit_large_patch14_dinov2", DEPTH_ANYTHING_V1_INPUT, "Apache-2.0", "depth_anything"),
    )
}


def get_spec(name: str) -> EstimatorSpec:
    """The registry entry for `name`; a ValueError listing the known names otherwise."""
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown depth estimator {name!r}; known: {', '.join(ESTIMATORS)}") from None


def resolution_note(name: str, net_size: int) -> str:
    """What estimator `name` makes of a requested resolution when it is not one of its sizes, else "".

    Input sides are multiples of the family's size (MiDaS 32, Depth Anything 14); for Depth Anything
    the short side becomes the multiple the official rounding gives, never below `net_size` (512 -> 518).
    """
    spec = ESTIMATORS.get(name)
    if spec is None or net_size <= 0:
        return ""
    used = net_input_size(net_size, net_size, net_size, spec.input_rule)[0]
    if used == net_size:
        return ""
    return f"{name} works at multiples of {spec.size_multiple} px: resolution {net_size} is used as {used}."


def build_dpt(name: str, *, device: str | torch.device = "cpu", tiny: bool = False) -> nn.Module:
    """The network of estimator `name` in eval mode without gradients; weights random (or absent on "meta")."""
    spec = get_spec(name)
    size = spec.tiny if tiny else spec.full
    with building_on(device):
        backbone = spec.build_backbone(size)
        if spec.assemble is not None:
            model = spec.assemble(backbone, size)
        else:
            model = DPT(backbone, TINY_DECODER if tiny else FULL_DECODER)
    if tiny and torch.device(device).type != "meta":
        _keep_activation_scale(model)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def _keep_activation_scale(model: nn.Module) -> None:
    """Redraws the weights of a tiny network so its depth map follows the image.

    With the initialisations meant for training, a small random DPT shrinks its signal layer by
    layer and answers every image with the same flat map (often all zeros after the final ReLU),
    which makes a poor test or demo. Weights with variance 1/fan_in keep activations near unit
    scale; the bias of the last convolution (the one that outputs depth) lifts the map above the ReLU.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = module.weight
            fan_in = (
                weight.shape[0] * weight[0, 0].numel()
                if isinstance(module, nn.ConvTranspose2d)
                else weight[0].numel()
            )
            weight.normal_(0.0, fan_in**-0.5)
            if module.bias is not None:
                module.bias.zero_()
    depth_output = [module for module in model.modules() if isinstance(module, nn.Conv2d)][-1]
    depth_output.bias.fill_(1.0)
