"""Random weights made from a seed and the tensors' names and shapes alone.

The Depth Anything parity reference was produced by the official code with these weights
(`tests/data/make_depth_anything_reference.py`); the test makes them again for the project's own
network. Nothing here depends on how either network initialises itself, so the reference stays
valid across timm and torch versions.
"""

from collections.abc import Mapping
from math import prod

import torch


def seeded_state_dict(shapes: Mapping[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Tensors drawn in sorted name order: matrices and kernels N(0, 1/fan_in), 1-D weights (norms,
    layer scales) 1 + N(0, 0.01), biases N(0, 0.01), tokens and position embeddings N(0, 1)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name in sorted(shapes):
        shape = tuple(shapes[name])
        noise = torch.randn(shape, generator=generator, dtype=torch.float64)
        if name.endswith(("cls_token", "pos_embed", "mask_token")):
            value = noise
        elif len(shape) >= 2:
            value = noise * prod(shape[1:]) ** -0.5
        elif name.endswith(("weight", "gamma")):
            value = 1 + 0.1 * noise
        else:
            value = 0.1 * noise
        tensors[name] = value.float()
    return tensors
