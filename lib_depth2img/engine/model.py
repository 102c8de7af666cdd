"""The SD2 depth-to-image model: UNet + VAE + OpenCLIP text tower, and loading it from a checkpoint.

Parameter names equal those of Stability's `512-depth-ema` checkpoint (`model.diffusion_model.*`,
`first_stage_model.*`, `cond_stage_model.model.*` and the 12 noise-schedule buffers), so the file
loads with `load_state_dict(strict=True)`. Its MiDaS part (`depth_model.model.*`) is loaded by the
depth core into a separate `DepthEstimator`.

Which sizes to build is read from the tensor shapes of the file (`infer_config`), so any file
with the SD2-depth layout loads, including the tiny demo files that `write_demo_checkpoint`
writes. The only hyper-parameter shapes cannot tell, the attention head width, is 64 in every
SD2 checkpoint (UNet and OpenCLIP text tower alike), and the TINY preset keeps it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ..checkpoints.reader import open_checkpoint
from ..errors import WeightsError
from ..estimators import DepthEstimator, build_dpt
from .text_encoder import OpenCLIPTextEncoder, TextConfig
from .unet import UNetConfig, UNetModel
from .vae import AutoencoderKL, VAEConfig

HEAD_WIDTH = 64
LATENT_CHANNELS = 4
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.model."
DEPTH_PREFIX = "depth_model."
DEPTH_MODEL_PREFIX = "depth_model.model."
DEMO_METADATA_KEY = "lib_depth2img.demo"
DEMO_NOTE = "random weights written by lib_depth2img for tests and demos; images come out as noise"


@dataclass(frozen=True)
class EngineConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    text: TextConfig = field(default_factory=TextConfig)
    latent_scale: float = 0.18215  # VAE latents are multiplied by this before diffusion
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085  # "scaled linear": betas are linear in sqrt between these two
    beta_end: float = 0.012


FULL = EngineConfig()

# Every width a multiple of 32 (GroupNorm) and of 64 where attention runs (head width); the VAE
# keeps four levels so latents stay 1/8 of the image. A 64x64 img2img step takes milliseconds.
TINY = EngineConfig(
    unet=UNetConfig(
        model_channels=64,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attention_resolutions=(2, 1),
        context_dim=64,
    ),
    vae=VAEConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1),
    text=TextConfig(width=64, layers=2, heads=1, output_dim=64),
)


def noise_schedule(config: EngineConfig) -> dict[str, torch.Tensor]:
    """The 12 buffers ldm's DDPM registers, computed in float64 and stored as float32 like ldm."""
    betas = (
        torch.linspace(
            config.beta_start**0.5, config.beta_end**0.5, config.num_train_timesteps, dtype=torch.float64
        )
        ** 2
    )
    alphas = 1.0 - betas
    alphas_cumprod = torch.cumprod(alphas, dim=0)
    alphas_cumprod_prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    schedule = {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": alphas_cumprod_prev,
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / alphas_cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / alphas_cumprod - 1.0).sqrt(),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod),
        "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * alphas.sqrt() / (1.0 - alphas_cumprod),
    }
    return {name: value.float() for name, value in schedule.items()}


class _DiffusionWrapper(nn.Module):
    """Holds the UNet as `diffusion_model`, so its names start with `model.diffusion_model.`."""

    def __init__(self, unet: UNetModel) -> None:
        super().__init__()
        self.diffusion_model = unet


class SD2DepthModel(nn.Module):
    """SD2-depth without its depth estimator: text -> context, image <-> latents, and eps prediction.

    All methods take and return tensors on the model's device. Inputs are cast to the model's
    dtype; latents and images come back in the dtype they went in (context in the model's).
    """

    def __init__(self, config: EngineConfig) -> None:
        super().__init__()
        self.config = config
        self.latent_scale = config.latent_scale
        self.is_demo = False  # set by load_checkpoint for files written by write_demo_checkpoint
        self.model = _DiffusionWrapper(UNetModel(config.unet))
        self.first_stage_model = AutoencoderKL(config.vae)
        self.cond_stage_model = OpenCLIPTextEncoder(config.text)
        self.alphas_cumprod: torch.Tensor
        for name, value in noise_schedule(config).items():
            self.register_buffer(name, value)

    @property
    def unet(self) -> UNetModel:
        return self.model.diffusion_model

    @property
    def vae(self) -> AutoencoderKL:
        return self.first_stage_model

    @property
    def text_encoder(self) -> OpenCLIPTextEncoder:
        return self.cond_stage_model

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.time_embed[0].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.time_embed[0].weight.device

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Context [B, 77, width] for the UNet's cross-attention (the penultimate text layer)."""
        tokens = self.text_encoder.tokenize(prompts).to(self.device)
        return self.text_encoder(tokens)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Images [B,3,H,W] in [-1,1] -> scaled latents [B,4,H/8,W/8]: the mean of the VAE
        posterior, or with `noise` [B,4,H/8,W/8] the posterior sample it gives (A1111's encoding)."""
        return (self.vae.encode(images.to(self.dtype), noise) * self.latent_scale).to(images.dtype)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents [B,4,h,w] -> images [B,3,8h,8w], nominally in [-1,1] (not clamped)."""
        return self.vae.decode((latents / self.latent_scale).to(self.dtype)).to(latents.dtype)

    @torch.no_grad()
    def predict_noise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor | float,
        context: torch.Tensor,
        depth: torch.Tensor,
    ) -> torch.Tensor:
        """eps for noisy `latents` [B,4,h,w] at `timesteps` (one per sample, or one for all, may
        be fractional), text `context` [B,77,C] and `depth` [B,1,h,w] normalised to [-1,1]. The
        depth map is concatenated after the latent channels, as ldm's "hybrid" conditioning does."""
        if depth.shape[0] != latents.shape[0] or depth.shape[2:] != latents.shape[2:]:
            raise ValueError(f"depth {tuple(depth.shape)} does not match latents {tuple(latents.shape)}")
        timesteps = torch.as_tensor(timesteps, device=latents.device).expand(latents.shape[0])
        x = torch.cat([latents, depth.to(latents.dtype)], dim=1).to(self.dtype)
        return self.unet(x, timesteps, context.to(self.dtype)).to(latents.dtype)


def build_model(
    config: EngineConfig, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> SD2DepthModel:
    """A model with random weights, in eval mode, gradients off. On the "meta" device it holds
    no memory: `load_checkpoint` builds it that way and then assigns the file's tensors."""
    with torch.device(device):
        model = SD2DepthModel(config)
    for parameter in model.parameters():  # the noise-schedule buffers stay float32
        parameter.data = parameter.data.to(dtype)
    return model.eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------
# Recognising the model and its sizes


def _count(shapes: Mapping[str, object], pattern: str) -> int:
    """How many consecutive indices i make `pattern.format(i)` a key, starting at 0."""
    n = 0
    while pattern.format(n) in shapes:
        n += 1
    return n


def _unet_config(shapes: Mapping[str, Sequence[int]]) -> UNetConfig:
    p = UNET_PREFIX
    model_channels, in_channels = shapes[f"{p}input_blocks.0.0.weight"][:2]
    levels: list[list[int]] = [[]]  # per level, the output width of each res block
    attention_levels = set()
    for i in itertools.count(1):
        if f"{p}input_blocks.{i}.0.op.weight" in shapes:
            levels.append([])
        elif f"{p}input_blocks.{i}.0.out_layers.3.weight" in shapes:
            levels[-1].append(shapes[f"{p}input_blocks.{i}.0.out_layers.3.weight"][0])
            if f"{p}input_blocks.{i}.1.proj_in.weight" in shapes:
                attention_levels.add(len(levels) - 1)
        else:
            break
    context_keys = [k for k in shapes if k.startswith(p) and k.endswith(".attn2.to_k.weight")]
    if not context_keys:
        raise KeyError(f"{p}*.attn2.to_k.weight")
    context_key = context_keys[0]
    first_transformer = context_key.split(".transformer_blocks.")[0]
    return UNetConfig(
        in_channels=in_channels,
        out_channels=shapes[f"{p}out.2.weight"][0],
        model_channels=model_channels,
        channel_mult=tuple(widths[0] // model_channels for widths in levels),
        num_res_blocks=len(levels[0]),
        attention_resolutions=tuple(sorted((2**level for level in attention_levels), reverse=True)),
        num_head_channels=HEAD_WIDTH,
        transformer_depth=_count(shapes, first_transformer + ".transformer_blocks.{}.norm1.weight"),
        context_dim=shapes[context_key][1],
    )


def _vae_config(shapes: Mapping[str, Sequence[int]]) -> VAEConfig:
    p = VAE_PREFIX + "encoder."
    ch, image_channels = shapes[p + "conv_in.weight"][:2]
    levels = _count(shapes, p + "down.{}.block.0.conv1.weight")
    return VAEConfig(
        ch=ch,
        ch_mult=tuple(shapes[f"{p}down.{i}.block.0.conv1.weight"][0] // ch for i in range(levels)),
        num_res_blocks=_count(shapes, p + "down.0.block.{}.conv1.weight"),
        z_channels=shapes[VAE_PREFIX + "post_quant_conv.weight"][0],
        image_channels=image_channels,
    )


def _text_config(shapes: Mapping[str, Sequence[int]]) -> TextConfig:
    p = TEXT_PREFIX
    vocab_size, width = shapes[p + "token_embedding.weight"]
    return TextConfig(
        width=width,
        layers=_count(shapes, p + "transformer.resblocks.{}.ln_1.weight"),
        heads=max(1, width // HEAD_WIDTH),
        context_length=shapes[p + "positional_embedding"][0],
        vocab_size=vocab_size,
        output_dim=shapes[p + "text_projection"][1],
    )


def infer_config(shapes: Mapping[str, Sequence[int]]) -> EngineConfig:
    """The config whose model has these tensor shapes (name -> shape), e.g. of a checkpoint.

    Raises KeyError when a tensor that tells a size is absent."""
    shapes = {name: tuple(shape) for name, shape in shapes.items()}
    return EngineConfig(unet=_unet_config(shapes), vae=_vae_config(shapes), text=_text_config(shapes))


def _check_is_depth_checkpoint(path: Path, shapes: Mapping[str, Sequence[int]]) -> None:
    conv_in = shapes.get(UNET_PREFIX + "input_blocks.0.0.weight")
    if conv_in is None:
        raise WeightsError(
            f"{path.name} is not a Stable Diffusion checkpoint in the original (ldm) layout: it has "
            f"no UNet weights under '{UNET_PREFIX}'. Use 512-depth-ema.ckpt or .safetensors from "
            "stabilityai/stable-diffusion-2-depth."
        )
    in_channels = conv_in[1]
    if in_channels != LATENT_CHANNELS + 1:
        context_key = next((k for k in shapes if k.endswith("attn2.to_k.weight")), None)
        kind = {4: "a text-to-image model", 9: "an inpainting model", 7: "the x4 upscaler"}.get(
            in_channels, "another kind of model"
        )
        family = {768: " (Stable Diffusion 1.x)", 1024: " (Stable Diffusion 2.x)"}.get(
            shapes[context_key][1] if context_key else 0, ""
        )
        raise WeightsError(
            f"{path.name} is not a depth checkpoint: its UNet takes {in_channels} input channels, "
            f"so it is {kind}{family}, while the depth model takes 5 (4 latent + 1 depth). Select "
            "512-depth-ema (.ckpt or .safetensors) from stabilityai/stable-diffusion-2-depth."
        )
    if not any(k.startswith(DEPTH_MODEL_PREFIX) for k in shapes):
        raise WeightsError(
            f"{path.name} has a depth UNet but no depth-estimator weights ('{DEPTH_MODEL_PREFIX}*'): "
            "it is not a complete 512-depth-ema checkpoint. Download the full file again."
        )


def _list_keys(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return f"{len(names)}: {shown}" + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _check_keys(path: Path, model: SD2DepthModel, shapes: Mapping[str, Sequence[int]]) -> None:
    """Same names and shapes as the model, else a WeightsError listing what differs."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    file_keys = [k for k in shapes if not k.startswith(DEPTH_MODEL_PREFIX)]
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in file_keys if k not in expected]
    wrong = [
        f"{k} {tuple(shapes[k])} (expected {expected[k]})"
        for k in file_keys
        if k in expected and tuple(shapes[k]) != expected[k]
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_list_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_list_keys(unexpected)}")
    if wrong:
        problems.append(f"tensors of the wrong shape {_list_keys(wrong)}")
    if problems:
        raise WeightsError(
            f"{path.name} does not match the SD2 depth model: "
            + "; ".join(problems)
            + ". The file is damaged or was changed by a converter; use the original 512-depth-ema file."
        )


def _check_schedule(path: Path, model: SD2DepthModel) -> None:
    for name, expected in noise_schedule(model.config).items():
        if not torch.allclose(getattr(model, name).float().cpu(), expected, rtol=1e-3, atol=1e-6):
            raise WeightsError(
                f"{path.name}: its noise schedule ('{name}') is not SD2's scaled-linear schedule "
                f"({model.config.beta_start} to {model.config.beta_end}, {model.config.num_train_timesteps} "
                "steps), so it is not the 512-depth-ema model."
            )


def load_checkpoint(
    path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[SD2DepthModel, DepthEstimator]:
    """Load a 512-depth-ema .ckpt/.safetensors strictly: the SD2 depth model and its MiDaS estimator.

    Every tensor in the file must be used and every model tensor present with its shape, else a
    WeightsError says what differs. Weights are cast to `dtype` (an fp16 file loads as fp32 by
    default); the noise-schedule buffers stay float32. The model is built on the meta device and
    takes the file's tensors over (assign=True), so a 5 GB file is not held twice.
    """
    path = Path(path)
    checkpoint = open_checkpoint(path)
    _check_is_depth_checkpoint(path, checkpoint.shapes)
    try:
        config = infer_config(checkpoint.shapes)
    except KeyError as error:
        raise WeightsError(
            f"{path.name} does not have the SD2 depth model's layout: it lacks {error}, which tells "
            "the model's sizes. Use the original 512-depth-ema file."
        ) from error
    model = build_model(config, device="meta", dtype=dtype)
    _check_keys(path, model, checkpoint.shapes)

    schedule = set(noise_schedule(config))
    state = {}
    for name in checkpoint.shapes:  # read and convert one at a time so two copies never coexist
        if not name.startswith(DEPTH_PREFIX):  # the depth net's tensors: DepthEstimator reads them
            tensor = checkpoint.tensor(name)
            state[name] = tensor.to(device=device, dtype=torch.float32 if name in schedule else dtype)
    model.load_state_dict(state, strict=True, assign=True)
    model.eval().requires_grad_(False)
    _check_schedule(path, model)
    model.is_demo = DEMO_METADATA_KEY in checkpoint.metadata

    depth = DepthEstimator.from_file(path, "dpt_hybrid", device=device, dtype=dtype)
    return model, depth


def write_demo_checkpoint(path: str | Path, *, config: EngineConfig = TINY, seed: int = 0) -> Path:
    """Write a checkpoint with random weights in the 512-depth-ema layout, tiny by default.

    `.safetensors` or `.ckpt` by suffix. It includes a tiny random MiDaS net from the depth core
    and is marked as a demo (safetensors metadata / a top-level entry of the .ckpt), so the whole
    path from file to image can run and be tested without the real 5 GB download.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", ".ckpt"):
        raise ValueError(f"demo checkpoint must end in .safetensors or .ckpt, not {path.name!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = dict(build_model(config).state_dict())
        state.update(_tiny_depth_state_dict())
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".safetensors":
        save_file(
            {k: v.contiguous() for k, v in state.items()}, str(path), metadata={DEMO_METADATA_KEY: DEMO_NOTE}
        )
    else:
        torch.save({"state_dict": state, DEMO_METADATA_KEY: DEMO_NOTE}, path)
    return path


def _tiny_depth_state_dict() -> dict[str, torch.Tensor]:
    """The depth core's tiny MiDaS DPT-Hybrid with random weights, named as in an SD checkpoint."""
    depth_net = build_dpt("dpt_hybrid", tiny=True)
    return {DEPTH_MODEL_PREFIX + name: tensor for name, tensor in depth_net.state_dict().items()}
