"""Depth-model weights: reading them from the files users have, strictly, and writing tiny test files.

Two kinds of file hold MiDaS weights under the same tensor names (Depth Anything's come only as the
second kind, named `pretrained.*` and `depth_head.*`):
- a Stable Diffusion depth checkpoint (`512-depth-ema.ckpt` / `.safetensors`), where they sit under
  `depth_model.model.` next to the UNet, VAE and text encoder;
- a standalone release file (`dpt_hybrid-midas-501f0c75.pt`, `depth_anything_v2_vits.pth` ...), sometimes wrapped as
  `{"model": ..., "optimizer": ...}`.
The kind is told by the names inside, not by the file name. Files are read by
`checkpoints.reader.open_checkpoint`, so only the depth tensors of a 5 GB checkpoint are read.

Loading is strict: a network gets weights for every tensor or is not built at all.
"""

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from lib_depth2img.checkpoints.reader import open_checkpoint
from lib_depth2img.errors import WeightsError
from lib_depth2img.estimators.registry import ESTIMATORS, EstimatorSpec, build_dpt, get_spec

SD_DEPTH_PREFIX = "depth_model.model."
SD_UNET_PREFIX = "model.diffusion_model."
STANDALONE_PREFIXES = ("pretrained.", "scratch.", "depth_head.")
LISTED_NAMES = 5
"""How many offending tensor names an error message shows before summarising the rest as a count."""


def weights_id(path: str | Path, estimator: str) -> str:
    """Identity of a weights file for caches: estimator, resolved path, size and modification time."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return f"{estimator}:{resolved}:{stat.st_size}:{stat.st_mtime_ns}"


def load_depth_state_dict(path: str | Path, estimator: str = "dpt_hybrid") -> dict[str, torch.Tensor]:
    """The depth network's tensors from an SD depth checkpoint or a standalone release file, by their network names."""
    spec = get_spec(estimator)
    checkpoint = open_checkpoint(path, "depth weights")
    names = _depth_names(checkpoint.shapes, Path(path), spec)
    return {name: checkpoint.tensor(stored) for stored, name in names.items()}


def _depth_names(keys: Iterable[str], path: Path, spec: EstimatorSpec) -> dict[str, str]:
    """Stored name -> MiDaS name of the depth tensors among `keys`, recognising which kind of file it is."""
    keys = [key for key in keys if isinstance(key, str)]
    if any(key.startswith(SD_DEPTH_PREFIX) for key in keys):
        names = {key: key[len(SD_DEPTH_PREFIX) :] for key in keys if key.startswith(SD_DEPTH_PREFIX)}
    elif any(key.startswith(STANDALONE_PREFIXES) for key in keys):
        names = {key: key for key in keys}
    elif any(key.startswith(SD_UNET_PREFIX) for key in keys):
        raise WeightsError(
            f"{path} is a Stable Diffusion checkpoint without a depth model (no depth_model.* tensors), "
            "e.g. SD 1.x/2.x txt2img or inpainting. It is not a depth checkpoint: use Stable Diffusion 2 "
            "512-depth-ema (.ckpt or .safetensors), or a standalone MiDaS file such as "
            f"{spec.file_name}."
        )
    else:
        raise WeightsError(
            f"{path} holds no depth model: none of its {len(keys)} tensors is named depth_model.*, pretrained.*, "
            f"scratch.* or depth_head.* (first names: {_listing(keys)}). Use Stable Diffusion 2 512-depth-ema "
            f"or {spec.file_name}."
        )
    return {stored: name for stored, name in names.items() if not name.endswith(spec.derived_key_suffixes)}


def build_loaded_dpt(
    state_dict: Mapping[str, torch.Tensor],
    spec: EstimatorSpec,
    *,
    source: str,
    tiny: bool,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """The estimator's network with exactly these weights, on `device` in `dtype`; WeightsError otherwise.

    The network is built on the meta device and every tensor is then taken from `state_dict`, so
    nothing random survives and no time goes into initialising weights that are overwritten anyway.
    """
    state_dict = {
        name: tensor for name, tensor in state_dict.items() if not name.endswith(spec.derived_key_suffixes)
    }
    model = build_dpt(spec.name, device="meta", tiny=tiny)
    problems = _mismatches(model, state_dict)
    if problems:
        size = "tiny test" if tiny else "full-size"
        raise WeightsError(
            f"{source} does not fit the {size} {spec.name} depth model: {problems}.{_hint_other_estimators(state_dict, spec)}"
        )
    for name, tensor in state_dict.items():
        _assign(model, name, tensor.to(device=device, dtype=dtype, copy=True))
    if any(tensor.is_meta for tensor in (*model.parameters(), *model.buffers())):
        raise RuntimeError(
            f"{spec.name}: a tensor of the network is not in its state dict and was left unset"
        )
    return model


def _assign(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Put `tensor` in place of the (meta) parameter or buffer `name`, as `load_state_dict(assign=True)`
    would. Done by hand because A1111 swaps `Module.load_state_dict` for the whole process while it
    loads a checkpoint, and a preview clicked meanwhile must still load its estimator."""
    owner_name, _, attribute = name.rpartition(".")
    owner = model.get_submodule(owner_name)
    if attribute in owner._parameters:
        owner._parameters[attribute] = nn.Parameter(tensor, requires_grad=False)
    else:
        owner._buffers[attribute] = tensor


def is_tiny_state_dict(state_dict: Mapping[str, torch.Tensor], spec: EstimatorSpec, source: str) -> bool:
    """Whether the weights are for the tiny network (True) or the full one (False), by their token width."""
    token = state_dict.get(spec.token_width_key)
    tiny = spec.is_tiny(token.shape[-1]) if token is not None else None
    if tiny is None:
        found = f"token width {token.shape[-1]}" if token is not None else f"no {spec.token_width_key}"
        raise WeightsError(
            f"{source} does not fit the {spec.name} depth model ({found}; expected {spec.full.embed_dim})."
            f"{_hint_other_estimators(state_dict, spec)}"
        )
    return tiny


def _mismatches(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> str:
    """A readable summary of missing, unexpected and wrongly shaped tensors; empty if there are none."""
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    missing = [name for name in expected if name not in state_dict]
    unexpected = [name for name in state_dict if name not in expected]
    wrong_shape = [
        f"{name} is {tuple(state_dict[name].shape)}, expected {shape}"
        for name, shape in expected.items()
        if name in state_dict and tuple(state_dict[name].shape) != shape
    ]
    parts = [
        f"{label} {len(items)}: {_listing(items)}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
        if items
    ]
    return "; ".join(parts)


def _hint_other_estimators(state_dict: Mapping[str, torch.Tensor], spec: EstimatorSpec) -> str:
    fitting = [other.name for other in ESTIMATORS.values() if other is not spec and _fits(state_dict, other)]
    if fitting:
        return f" These are weights for {' or '.join(fitting)}; choose that estimator."
    if spec.token_width_key not in state_dict:
        return " It is probably truncated or not a file of this kind of model."
    return " The file is probably truncated, damaged or of another model."


def _fits(state_dict: Mapping[str, torch.Tensor], spec: EstimatorSpec) -> bool:
    """Whether the tensors are exactly those of `spec`'s network, at either size."""
    token = state_dict.get(spec.token_width_key)
    tiny = spec.is_tiny(token.shape[-1]) if token is not None else None
    if tiny is None:
        return False
    tensors = {name: tensor for name, tensor in state_dict.items() if not name.endswith(spec.derived_key_suffixes)}
    return not _mismatches(build_dpt(spec.name, device="meta", tiny=tiny), tensors)


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:LISTED_NAMES])
    return shown + (f" and {len(names) - LISTED_NAMES} more" if len(names) > LISTED_NAMES else "")


def write_tiny_depth_weights(
    path: str | Path, estimator: str = "dpt_hybrid", *, prefix: str = SD_DEPTH_PREFIX
) -> None:
    """A small random (seed 0) weights file that `DepthEstimator.from_file` loads, for tests and demos.

    `.safetensors` by suffix, else a torch zip checkpoint: `{"state_dict": ...}` like an SD
    checkpoint when `prefix` is set, the bare state dict like a MiDaS release when it is "".
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_dpt(estimator, tiny=True)
    tensors = {prefix + name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        save_file(tensors, str(path))
    else:
        torch.save({"state_dict": tensors} if prefix else tensors, path)
