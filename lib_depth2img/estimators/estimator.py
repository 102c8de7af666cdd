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
    net_input_size,
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
from lib_depth2img.images import pixel_digest

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

    def estimate(
        self, image: Image.Image, net_size: int | None = None, progress: Progress | None = None
    ) -> np.ndarray:
        """Depth map of one image; `net_size` overrides the side the preprocessing aims for."""
        return self.estimate_batch([image], net_size, progress)[0]

    @torch.inference_mode()
    def estimate_batch(
        self, images: list[Image.Image], net_size: int | None = None, progress: Progress | None = None
    ) -> list[np.ndarray]:
        """Depth maps of several images, in order.

        Identical images are estimated once (A1111 hands over copies of one init image per batch
        item); images that reach the network at the same size run as one batch. `progress(done,
        total)` is called after each transformer block; an exception it raises (a host's
        interrupt) stops the estimate.
        """
        net_size = self.checked_net_size(net_size)
        rule = self.spec.input_rule
        # One image (the depth source's call, which has already found its copies) needs no hashing.
        keys = [pixel_digest(image) for image in images] if len(images) > 1 else [""]
        unique = {key: image_to_rgb_array(image) for key, image in zip(keys, images)}
        by_input_size: dict[tuple[int, int], list[str]] = {}
        for key, array in unique.items():
            size = net_input_size(array.shape[1], array.shape[0], net_size, rule)
            by_input_size.setdefault(size, []).append(key)
        depth_by_key = {}
        with _reporting_blocks(self.model, len(by_input_size), progress):
            for group in by_input_size.values():
                batch = torch.cat(
                    [to_network_input(unique[key], net_size, self.device, self.dtype, rule) for key in group]
                )
                for key, prediction in zip(group, self.model(batch)):
                    depth_by_key[key] = to_depth_map(prediction, *unique[key].shape[:2], rule)
        results, returned = [], set()
        for key in keys:  # every caller gets its own array, also for repeated images
            results.append(depth_by_key[key].copy() if key in returned else depth_by_key[key])
            returned.add(key)
        return results

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
def _reporting_blocks(model: nn.Module, forwards: int, progress: Progress | None) -> Iterator[None]:
    """Call `progress` after each transformer block of `model` during the next `forwards` passes."""
    blocks = _transformer_blocks(model) if progress is not None else []
    if not blocks:
        yield
        return
    total = len(blocks) * forwards
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

