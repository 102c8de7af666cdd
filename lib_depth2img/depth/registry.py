"""The depth estimators this project can run, and the one function that builds their networks.

Each estimator is a DPT with a different backbone. Besides the full size that the released weights
need, each has a tiny size (same classes, small widths and depths) for tests and demos. A state
dict says which size it is through the width of its ViT tokens (`pretrained.model.cls_token`),
so a tiny weights file loads through the same strict path as a real one. Tiny networks are built
for 64 px inputs (`tiny.img_size`), which is where `DepthEstimator` aims them by default.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from lib_depth2img.depth import beit, vit, vit_hybrid
from lib_depth2img.depth.dpt import DPT, FULL_DECODER, TINY_DECODER
from lib_depth2img.depth.timm_parts import building_on


class BackboneSize(Protocol):
    """A backbone family's size description; the registry reads the token width and the pretraining size."""

    img_size: int
    embed_dim: int


@dataclass(frozen=True)
class EstimatorSpec:
    """One depth estimator.

    `net_size` is the side its preprocessing aims for and `max_net_size` the largest it may be
    asked for (attention memory grows with the 4th power of the side); `file_name` is the name the MiDaS release
    gives its standalone weights; `timm_model` names the timm model the backbone reproduces (timm
    >= 0.9 name); `derived_key_suffixes` end the names of tensors some files carry that the
    network recomputes instead of loading.
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

    def is_tiny(self, token_width: int) -> bool | None:
        """Which size a state dict with this ViT token width is: False full, True tiny, None neither."""
        return {self.full.embed_dim: False, self.tiny.embed_dim: True}.get(token_width)


ESTIMATORS: dict[str, EstimatorSpec] = {
    spec.name: spec
    for spec in (
        EstimatorSpec(
            name="dpt_hybrid",
            net_size=384,
            file_name="dpt_hybrid-midas-501f0c75.pt",
            timm_model="vit_base_r50_s16_384",
            build_backbone=vit_hybrid.build_hybrid_backbone,
            full=vit_hybrid.R50_VIT_BASE_384,
            tiny=vit_hybrid.HYBRID_TINY,
        ),
        EstimatorSpec(
            name="dpt_large",
            net_size=384,
            file_name="dpt_large-midas-2f21e586.pt",
            timm_model="vit_large_patch16_384",
            build_backbone=vit.build_vit_backbone,
            full=vit.VIT_LARGE_384,
            tiny=vit.VIT_TINY,
        ),
        EstimatorSpec(
            name="dpt_beit_large_512",
            net_size=512,
            file_name="dpt_beit_large_512.pt",
            timm_model="beit_large_patch16_512",
            build_backbone=beit.build_beit_backbone,
            full=beit.BEIT_LARGE_512,
            tiny=beit.BEIT_TINY,
            derived_key_suffixes=beit.DERIVED_KEY_SUFFIXES,
        ),
    )
}

TOKEN_WIDTH_KEY = "pretrained.model.cls_token"
"""The tensor whose last dimension tells a full-size state dict from a tiny one."""


def get_spec(name: str) -> EstimatorSpec:
    """The registry entry for `name`; a ValueError listing the known names otherwise."""
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown depth estimator {name!r}; known: {', '.join(ESTIMATORS)}") from None


def build_dpt(name: str, *, device: str | torch.device = "cpu", tiny: bool = False) -> nn.Module:
    """The network of estimator `name` in eval mode without gradients; weights random (or absent on "meta")."""
    spec = get_spec(name)
    with building_on(device):
        backbone = spec.build_backbone(spec.tiny if tiny else spec.full)
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
    scale; the last bias lifts the map above the ReLU.
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
    model.scratch.output_conv[-2].bias.fill_(1.0)
