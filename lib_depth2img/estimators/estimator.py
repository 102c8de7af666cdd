"""`DepthEstimator`: a loaded depth network and the one way to turn images into depth maps with it."""

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from lib_depth2img.errors import SettingsError
from lib_depth2img.estimators.preprocess import (
    image_to_rgb_array,
    to_depth_map,
    to_network_input,
)
from lib_depth2img.estimators.registry import EstimatorSpec, get_spec, resolution_note
from lib_depth2img.estimators.weights import (
    build_loaded_dpt,
    is_tiny_state_dict,
    load_depth_state_dict,
    weights_id,
)

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""`progress(done, total)`: transformer blocks run so far, of all the estimate needs."""


class DepthEstimator:
    """Relative inverse depth (larger = nearer, non-negative) of PIL images, float32 at the image's size.

    The network runs in `dtype` (float32 on CPU; float16 or bfloat16 are fine on CUDA) under
    `torch.inference_mode`; inputs are cast to it and results always come back as float32.
    `weights_id` identifies the weights, for caches keyed on them.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: EstimatorSpec,
        weights_id: str,
        *,
        tiny: bool = False,
        input_device: torch.device | None = None,
    ) -> None:
        self.model = model
        self.spec = spec
        self.weights_id = weights_id
        self.tiny = tiny
        self.input_device = input_device
        """Where inputs go when a host moves the network itself (A1111's --medvram hooks); else its device."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def net_size(self) -> int:
        """Side the preprocessing aims for by default; tiny test networks aim at their own small size."""
        return self.spec.tiny.img_size if self.tiny else self.spec.net_size

    @property
    def device(self) -> torch.device:
        return self.input_device or next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        estimator: str = "dpt_hybrid",
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> "DepthEstimator":
        """Loads an SD depth checkpoint or a standalone release file; WeightsError if it is not one that fits."""
        spec = get_spec(estimator)
        state_dict = load_depth_state_dict(path, estimator)
        tiny = is_tiny_state_dict(state_dict, spec, str(path))
        model = build_loaded_dpt(state_dict, spec, source=str(path), tiny=tiny, device=device, dtype=dtype)
        return cls(model, spec, weights_id(path, estimator), tiny=tiny)

    def to(self, device: str | torch.device) -> "DepthEstimator":
        """Moves the network, e.g. to "cpu" to free GPU memory between jobs."""
        self.model.to(device)
        return self

    @torch.inference_mode()
    def estimate(
        self, image: Image.Image, net_size: int | None = None, progress: Progress | None = None
    ) -> np.ndarray:
        """Depth map of one image, at its size; `net_size` overrides the side the preprocessing aims for.

        Copies of one image are found before this (`depthmaps.source`), so each call is one forward.
        `progress(done, total)` is called after each transformer block; an exception it raises (a
        host's interrupt) stops the estimate.
        """
        net_size = self.checked_net_size(net_size)
        rule = self.spec.input_rule
        array = image_to_rgb_array(image)
        with _reporting_blocks(self.model, progress):
            prediction = self.model(to_network_input(array, net_size, self.device, self.dtype, rule))[0]
        return to_depth_map(prediction, *array.shape[:2], rule)

    def checked_net_size(self, net_size: int | None) -> int:
        """The side to aim for: `net_size`, or the estimator's own for None or 0; SettingsError
        beyond what the estimator can run."""
        if not net_size:
            return self.net_size
        if isinstance(net_size, bool) or not isinstance(net_size, int) or net_size < 32:
            raise SettingsError(
                f"depth net size must be a whole number of pixels, 32 or more; got {net_size!r}"
            )
        if net_size > self.spec.max_net_size:
            raise SettingsError(
                f"Depth2img: the {self.name} estimator runs at up to {self.spec.max_net_size} px "
                f"(its own is {self.spec.net_size}); got an estimator resolution of {net_size}. "
                "Choose a smaller resolution, or 0 for the estimator's own."
            )
        note = resolution_note(self.name, net_size)
        if note:
            log.info("Depth2img: %s", note)
        return net_size


@contextlib.contextmanager
def _reporting_blocks(model: nn.Module, progress: Progress | None) -> Iterator[None]:
    """Call `progress` after each transformer block of `model` during the next forward pass."""
    blocks = _transformer_blocks(model) if progress is not None else []
    if not blocks:
        yield
        return
    total = len(blocks)
    done = 0

    def after_block(*_: object) -> None:
        nonlocal done
        done += 1
        progress(done, total)

    handles = [block.register_forward_hook(after_block) for block in blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The backbone's transformer blocks (`pretrained.model.blocks`; also inside a host's wrapper)."""
    for name, module in model.named_modules():
        if name.endswith(("pretrained.model.blocks", "pretrained.blocks")):
            return list(module.children())
    return []

