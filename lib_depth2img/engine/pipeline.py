"""Depth-to-image generation with the standalone engine: img2img, inpaint and txt2img from depth.

    pipe = Depth2ImgPipeline.from_checkpoint("512-depth-ema.safetensors")
    result = pipe(GenerationRequest(prompt="an oil painting", init_image=photo, denoising_strength=1.0))
    result.images[0].save("out.png", pnginfo=png_info(result.infotexts[0]))

What a call does, in A1111 v1.10.1's order and with its semantics:
1. the depth map of the init image (own map | cache | estimator, see `depth_source`), adjusted;
   the estimator visits the GPU only for that and goes back to the CPU;
2. the init image fitted to the size (A1111's resize modes) and VAE-encoded to a posterior
   sample, as A1111 does (`init_encoding_noise`); the mask blurred, fitted and reduced to the
   latent size (rounded to 0/1, as A1111 does);
3. A1111's noise (`samplers.ImageNoise`): one generator per image seeded `seed + index`, with
   its variation seed, eta noise seed delta and "RNG" source; the init latent noised to the first
   level of A1111's img2img plan for the sampler and schedule type (no init image: pure noise);
4. the sampler, with A1111's classifier-free guidance (cond and uncond in one batched UNet call)
   and, when inpainting, the init latent kept outside the mask at every step;
5. VAE decode, and pixels made as A1111 makes them (clamped, times 255, truncated to uint8);
   when inpainting, the init image composited back outside the (dilated) mask.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..depthmaps.cache import DepthCache
from ..depthmaps.geometry import Geometry, GeometryRequest, fit_image, fit_map
from ..depthmaps.source import depth_for_images, estimate_raw_depths
from ..depthmaps.values import depth_conditioning, depth_to_preview, gaussian_blur, sequence_range
from ..errors import SettingsError
from ..estimators import DepthEstimator
from ..images import load_image
from ..infotext import build_infotext, model_hash
from ..settings import EMBEDDED_ESTIMATOR, Depth2imgArgs
from ..specs import Settings, setting, setting_from
from .denoiser import GuidedDenoiser
from .model import LATENT_CHANNELS, SD2DepthModel, load_checkpoint
from .samplers import (
    DEFAULT_SAMPLER,
    SAMPLER_NAMES,
    SCHEDULE_TYPES,
    ImageNoise,
    ProgressCallback,
    SamplerChoice,
    choose_sampler,
    plan_for,
    run_sampler,
)
from .schedule import AUTOMATIC, NoiseSchedule

LATENT_FACTOR = 8  # VAE downscale: latents are H/8 x W/8
MIN_SIDE, MAX_SIDE = 64, 2048  # A1111's width/height slider bounds
MAX_SEED = 2**32 - 1  # A1111's seeds are 32-bit
_SIZE_HINT = (
    "A multiple of 8. Not given: the input's, rounded down to 8; with only one of width and height "
    "given, the other keeps the aspect ratio."
)


@dataclass(frozen=True)
class GenerationRequest(Settings):
    """One generation job. Invalid values raise `SettingsError` when the request is built.

    Without `init_image` this is txt2img from your own depth map (`depth.depth_image`): the
    strength is 1.0 and the size defaults to the depth map's. `width`/`height` default to the
    init image's size rounded down to a multiple of 8 (the size A1111's latents give); when only
    one is given the other keeps the source's aspect ratio. `mask`: white = repaint, same size
    as the init image. `depth_range`: one (lo, hi) for the raw estimates of all frames of a
    sequence (`depthmaps.values.sequence_range`), instead of each map's own min..max.
    """

    prompt: str = setting("", "Prompt", hint="What to generate.")
    negative_prompt: str = setting("", "Negative prompt", hint="What to avoid.")
    init_image: Image.Image | None = None
    mask: Image.Image | None = None
    depth: Depth2imgArgs = field(default_factory=lambda: Depth2imgArgs(enabled=True))
    width: int | None = setting(None, "Width", minimum=MIN_SIDE, maximum=MAX_SIDE, step=8, hint=_SIZE_HINT)
    height: int | None = setting(None, "Height", minimum=MIN_SIDE, maximum=MAX_SIDE, step=8, hint=_SIZE_HINT)
    steps: int = setting(20, "Sampling steps", "Steps", minimum=1, maximum=150, step=1)  # A1111's slider
    sampler: str = setting(
        DEFAULT_SAMPLER, "Sampling method", "Sampler", hint=f"A1111's name: {', '.join(SAMPLER_NAMES)}."
    )
    schedule_type: str = setting(
        AUTOMATIC, "Schedule type", "Schedule type", hint=f"{', '.join(SCHEDULE_TYPES)} (Automatic: the sampler's own)."
    )
    cfg_scale: float = setting(
        7.0, "CFG scale", "CFG scale", minimum=0.0, maximum=30.0, step=0.5,  # A1111's slider: 1..30
        hint="Classifier-free guidance: how closely the image follows the prompt.",
    )
    denoising_strength: float = setting(
        0.75, "Denoising strength", "Denoising strength", minimum=0.0, maximum=1.0, step=0.01,  # A1111's slider
        hint="1 replaces all content; the depth keeps the composition. Without an init image: 1.",
    )
    seed: int = setting(-1, "Seed", "Seed", minimum=-1, maximum=MAX_SEED, hint="-1 draws a random one.")
    batch_size: int = setting(
        1, "Batch size", minimum=1, maximum=16, step=1,  # A1111's slider stops at 8
        hint="Images per input, with seeds seed, seed + 1, ...",
    )
    mask_blur: int = setting_from(
        GeometryRequest, "mask_blur", infotext="Mask blur", hint="Softens the mask's edge, in pixels."
    )
    resize_mode: int = setting_from(Geometry, "resize_mode")
    depth_range: tuple[float, float] | None = None
    variation_seed: int = setting(
        -1, "Variation seed", "Variation seed", minimum=-1, maximum=MAX_SEED,
        hint="A1111's variation seed; -1 draws a random one.",
    )
    variation_strength: float = setting(
        0.0, "Variation strength", "Variation seed strength", minimum=0.0, maximum=1.0, step=0.01,  # A1111's slider
        hint="How far toward the variation seed's noise.",
    )
    eta_noise_seed_delta: int = setting(
        0, "Eta noise seed delta", "ENSD", minimum=0, maximum=MAX_SEED,
        hint="A1111's ENSD: shifts the ancestral samplers' step noise.",
    )
    rng: str = setting(
        "CPU", "RNG source", "RNG", choices=("CPU", "GPU"),  # A1111's "NV" is not supported
        hint="Where the noise is drawn, as A1111's 'Random number generator source': CPU (the same "
        "image on every device) or GPU (the model's device).",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        choose_sampler(self.sampler, self.schedule_type)
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and value % LATENT_FACTOR:
                raise SettingsError(f"{self.spec(name).label} must be a multiple of 8, got {value}.")
        if not isinstance(self.depth, Depth2imgArgs):
            raise SettingsError("depth must be a Depth2imgArgs; build it with Depth2imgArgs.from_values().")
        for name in ("init_image", "mask"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), Image.Image):
                raise SettingsError(f"{name} must be a PIL image; decode files with images.load_image first.")
        if self.init_image is None:
            if self.depth.depth_image is None:
                raise SettingsError("Give an init image, your own depth map, or both.")
            if self.mask is not None:
                raise SettingsError("A mask needs an init image to inpaint; give the init image too.")
        elif self.mask is not None and self.mask.size != self.init_image.size:
            raise SettingsError(
                f"The mask is {_wxh(self.mask.size)} but the init image is {_wxh(self.init_image.size)}; "
                "use a mask of the same size as the init image."
            )
        if not all(MIN_SIDE <= side <= MAX_SIDE for side in self.size):
            source = "init image" if self.init_image is not None else "depth map"
            raise SettingsError(
                f"The {source} is {_wxh(self._source_size())}, which gives a {_wxh(self.size)} result; "
                f"sides must be {MIN_SIDE} to {MAX_SIDE}. Set width and height (multiples of 8) explicitly."
            )

    @property
    def geometry(self) -> Geometry:
        """Where the init image's pixels go: the result's size and the resize mode."""
        return Geometry(*self.size, self.resize_mode)

    @property
    def is_txt2img(self) -> bool:
        return self.init_image is None

    @property
    def strength(self) -> float:
        """The denoising strength actually used: 1.0 without an init image."""
        return 1.0 if self.is_txt2img else float(self.denoising_strength)

    @property
    def sampler_choice(self) -> SamplerChoice:
        return choose_sampler(self.sampler, self.schedule_type)

    @cached_property
    def size(self) -> tuple[int, int]:
        """(width, height) of the result."""
        if self.width is not None and self.height is not None:
            return self.width, self.height
        source_width, source_height = self._source_size()
        if self.width is not None:
            return self.width, _round8(source_height * self.width / source_width)
        if self.height is not None:
            return _round8(source_width * self.height / source_height), self.height
        return source_width // LATENT_FACTOR * LATENT_FACTOR, source_height // LATENT_FACTOR * LATENT_FACTOR

    def _source_size(self) -> tuple[int, int]:
        if self.init_image is not None:
            return self.init_image.size
        return load_image(self.depth.depth_image, name="your depth map").size


@dataclass
class GenerationResult:
    """The images (with the init image composited back outside the mask when inpainting), the
    seed of each, the depth map used as an 8-bit preview, each image's A1111 parameters text,
    and the depth map itself (float32 H x W in [0, 1], white = near; save it with 16 bits)."""

    images: list[Image.Image]
    seeds: list[int]
    depth_preview: Image.Image
    infotexts: list[str]
    depth: np.ndarray


class Depth2ImgPipeline:
    """The SD2-depth model, its depth estimator(s) and an optional depth cache, ready to generate.

    `estimator` is the MiDaS of the checkpoint (`Depth2imgArgs.estimator == "embedded"`);
    `other_estimators` adds estimators by their registry name (e.g. "dpt_large").
    """

    def __init__(
        self,
        model: SD2DepthModel,
        estimator: DepthEstimator | None,
        cache: DepthCache | None = None,
        *,
        other_estimators: dict[str, DepthEstimator] | None = None,
        checkpoint_path: str | Path | None = None,
    ) -> None:
        self.model = model
        self.estimators = dict(other_estimators or {})
        if estimator is not None:
            self.estimators[EMBEDDED_ESTIMATOR] = estimator
        self.cache = cache
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.schedule = NoiseSchedule(model.alphas_cumprod)
        if self.offloads_estimators:
            for depth_estimator in self.estimators.values():
                depth_estimator.to("cpu")

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        cache: DepthCache | None = None,
    ) -> Depth2ImgPipeline:
        """Load a 512-depth-ema .ckpt/.safetensors (or a demo file); `WeightsError` if it is not one."""
        model, estimator = load_checkpoint(path, device=device, dtype=dtype)
        return cls(model, estimator, cache, checkpoint_path=path)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def offloads_estimators(self) -> bool:
        """On CUDA the estimators wait on the CPU and visit the GPU only to estimate."""
        return self.device.type == "cuda"

    @property
    def model_name(self) -> str | None:
        return self.checkpoint_path.stem if self.checkpoint_path is not None else None

    @torch.inference_mode()
    def __call__(
        self,
        request: GenerationRequest,
        *,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        """Run one request. `progress(done, total)` is called after each sampling step; setting
        `cancel` stops the job between two steps with `GenerationCancelled`."""
        width, height = request.size
        latent_size = (height // LATENT_FACTOR, width // LATENT_FACTOR)
        batch = request.batch_size
        seeds, variation_seeds = batch_seeds(request)

        depth = self._depth(request)
        depth_cond = depth_conditioning([depth], latent_size, device=self.device).expand(batch, -1, -1, -1)

        init_pixels = init_latent = mask = None
        if request.init_image is not None:
            init_pixels = np.asarray(fit_image(request.init_image, request.geometry), dtype=np.float32) / 255
            pixels = _to_model_input(init_pixels, self.device).expand(batch, -1, -1, -1)
            init_latent = self.model.encode_images(pixels, init_encoding_noise(seeds, latent_size))
        if request.mask is not None:
            mask = _Mask(request.mask, request.geometry, request.mask_blur, self.device)

        choice = request.sampler_choice
        plan = plan_for(choice, self.schedule, request.steps, None if request.is_txt2img else request.strength)
        noise = ImageNoise(
            seeds, (LATENT_CHANNELS, *latent_size), device=self.device,
            draw_device="cpu" if request.rng == "CPU" else self.device,
            variation_seeds=variation_seeds, variation_strength=request.variation_strength,
            eta_noise_seed_delta=request.eta_noise_seed_delta,
        )
        context = self.model.encode_prompts([request.prompt, request.negative_prompt]).float()
        denoiser = GuidedDenoiser(
            self.model, self.schedule, context, depth_cond, request.cfg_scale, init_latent=init_latent,
            keep=None if mask is None else mask.latent_keep, blend_model_input=choice.sampler.blends_model_input,
        )
        latents = run_sampler(choice.sampler, denoiser, plan, noise, init_latent, progress=progress, cancel=cancel)
        if mask is not None:
            latents = latents * (1 - mask.latent_keep) + init_latent * mask.latent_keep

        images = _to_pil(self.model.decode_latents(latents))
        if mask is not None:
            original = Image.fromarray(_to_uint8(init_pixels))
            images = [Image.composite(image, original, mask.overlay) for image in images]
        infotexts = [
            self._infotext(request, choice, seed, variation_seed, (width, height))
            for seed, variation_seed in zip(seeds, variation_seeds, strict=True)
        ]
        return GenerationResult(images, seeds, depth_to_preview(depth), infotexts, depth)

    def depth_range(self, requests: Iterable[GenerationRequest]) -> tuple[float, float]:
        """One (lo, hi) over the raw depth estimates of all `requests`' init images, for their
        `depth_range`.

        For the frames of a video: normalising every frame by the same range keeps a gray level
        at the same distance in every frame, where per-frame min..max makes the depth flicker.
        The range is the min and max over all frames (`depthmaps.values.sequence_range`). Requests are
        consumed one at a time; their estimates (at each request's geometry) go to the cache, so
        generating reuses them.
        """
        with self.estimator_visit() as load:

            def raw(request: GenerationRequest) -> np.ndarray:
                estimator = load(request.depth.estimator)
                pixels = fit_image(request.init_image, request.geometry)
                return estimate_raw_depths([pixels], estimator, net_size=request.depth.net_size or None,
                                           cache=self.cache)[0][0]

            return sequence_range(raw(request) for request in requests)

    def _depth(self, request: GenerationRequest) -> np.ndarray:
        """The adjusted depth map at the result's geometry (estimated only when there is no own map)."""
        with self.estimator_visit() as load:
            return depth_for_images(
                [request.init_image], request.depth, lambda: load(request.depth.estimator), self.cache,
                geometry=request.geometry, normalize_range=request.depth_range,
            )[0].depth

    @contextlib.contextmanager
    def estimator_visit(self) -> Iterator[Callable[[str], DepthEstimator]]:
        """Yields a loader of estimators by name that moves them to the model's device; on CUDA
        they go back to the CPU afterwards, so MiDaS does not hold GPU memory while the UNet runs."""
        used: list[DepthEstimator] = []

        def load(name: str) -> DepthEstimator:
            estimator = self._estimator(name).to(self.device)
            used.append(estimator)
            return estimator

        try:
            yield load
        finally:
            if self.offloads_estimators and used:
                for estimator in used:
                    estimator.to("cpu")
                torch.cuda.empty_cache()

    def _estimator(self, name: str) -> DepthEstimator:
        if name not in self.estimators:
            available = ", ".join(self.estimators) or "none"
            raise SettingsError(
                f"Depth estimator {name!r} is not loaded here (available: {available}); choose one of "
                "those, or give your own depth map."
            )
        return self.estimators[name]

    def _infotext(
        self, request: GenerationRequest, choice: SamplerChoice, seed: int, variation_seed: int,
        size: tuple[int, int],
    ) -> str:
        """The parameters as A1111 writes them, in its order, so that its PNG Info and "Send to
        img2img" read them and regenerate this image (with "RNG: CPU" when that was the source)."""
        varied = request.variation_strength != 0
        params = {
            "Steps": request.steps,
            "Sampler": choice.sampler.name,
            "Schedule type": choice.infotext_schedule_type,
            "CFG scale": request.cfg_scale,
            "Seed": seed,
            "Size": f"{size[0]}x{size[1]}",
            "Model hash": model_hash(self.checkpoint_path) if self.checkpoint_path is not None else None,
            "Model": self.model_name,
            "Variation seed": variation_seed if varied else None,
            "Variation seed strength": request.variation_strength if varied else None,
            "Denoising strength": request.strength,
            "ENSD": request.eta_noise_seed_delta
            if request.eta_noise_seed_delta and choice.sampler.noise == "ancestral" else None,
            "RNG": "CPU" if request.rng == "CPU" else None,
            "Mask blur": request.mask_blur if request.mask is not None and request.mask_blur else None,
            **dataclasses.replace(request.depth, enabled=True).to_infotext(),
        }
        return build_infotext(request.prompt, request.negative_prompt, params)


class _Mask:
    """An inpaint mask prepared as A1111 does ("Inpaint masked", "original" content, whole picture).

    The mask (white = repaint; an RGBA mask with transparency uses its alpha, rounded) is blurred
    by `blur` pixels, fitted to the size; the latent mask is its bicubic reduction to the latent
    size rounded to 0/1; the overlay mask is the fitted mask doubled and clipped (A1111's
    `mask_for_overlay`), so the original is pasted back only where the mask is below half.
    """

    def __init__(self, image: Image.Image, geometry: Geometry, blur: int, device: torch.device) -> None:
        if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
            values = (np.asarray(image.getchannel("A"), dtype=np.float32) > 128).astype(np.float32)
        else:
            values = np.asarray(image.convert("L"), dtype=np.float32) / 255
        if blur > 0:
            values = gaussian_blur(values, blur)
        values = fit_map(values, geometry)
        size = geometry.size
        self.overlay = Image.fromarray(_to_uint8(np.clip(values * 2, 0, 1)), mode="L")
        latent_size = (size[0] // LATENT_FACTOR, size[1] // LATENT_FACTOR)
        reduced = Image.fromarray(values, mode="F").resize(latent_size, Image.Resampling.BICUBIC)
        repaint = torch.from_numpy(np.around(np.clip(np.asarray(reduced), 0, 1)))
        self.latent_keep = (1 - repaint)[None, None].to(device, torch.float32)


def batch_seeds(request: GenerationRequest) -> tuple[list[int], list[int]]:
    """Each image's seed and variation seed, as A1111 numbers them: seed + index and variation
    seed + index; with a variation strength every image keeps the seed and only the variation
    seed counts up."""
    seed, variation_seed = resolve_seed(request.seed), resolve_seed(request.variation_seed)
    varied = request.variation_strength != 0
    indices = range(request.batch_size)
    return [seed + (0 if varied else i) for i in indices], [variation_seed + i for i in indices]


def init_encoding_noise(seeds: list[int], latent_size: tuple[int, int]) -> torch.Tensor:
    """The noise of A1111's init-image encoding, one draw per batch image, on the CPU.

    A1111 encodes the init image to a sample of the VAE posterior, drawn from torch's global
    generator, which its previous job left seeded with that job's last seed (`ImageRNG` seeds it
    for every image). Rendering again what A1111 rendered is that case: the previous job was the
    same job, so the generator starts at this batch's last seed. (A1111's very first job after
    start draws from whatever state start-up left; that image it cannot reproduce itself.)
    """
    generator = torch.Generator("cpu").manual_seed(int(seeds[-1]))
    shape = (1, LATENT_CHANNELS, *latent_size)
    return torch.cat([torch.randn(shape, generator=generator) for _ in seeds])


def resolve_seed(seed: int) -> int:
    """-1 means a random seed, drawn as A1111 does; any other seed is kept."""
    return int(random.randrange(MAX_SEED)) if seed == -1 else int(seed)


def _to_model_input(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].to(device) * 2 - 1


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(values, 0, 1) * 255).astype(np.uint8)


def _to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Decoded images as A1111 makes its pixels: clamp((x + 1) / 2, 0, 1) * 255, truncated."""
    pixels = torch.clamp((images.float() + 1.0) / 2.0, min=0.0, max=1.0).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray((255.0 * item).astype(np.uint8)) for item in pixels]


def _round8(value: float) -> int:
    return max(LATENT_FACTOR, round(value / LATENT_FACTOR) * LATENT_FACTOR)


def _wxh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"
