"""Stand-in for `modules.processing`: the processing classes and `process_images` in A1111's order.

The VAE is a fixed 8x average-pool/upsample and the UNet a fake that checks the image
conditioning the way the real one would use it (concatenated to the latent for "hybrid" models:
4 + its channels must equal the UNet's in_channels, same batch and spatial size) and records it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ldm.models.diffusion.ddpm import LatentDepth2ImageDiffusion
from modules import devices, images, masking, scripts, sd_models, shared
from modules.infotext_utils import quote
from PIL import Image, ImageOps

opt_C = 4
opt_f = 8


def images_tensor_to_samples(image, approximation=None, model=None):
    """Images in [0, 1] -> latents (the stub's VAE encode, counted on the model)."""
    model = model or shared.sd_model
    model.vae_encodes += 1
    pooled = F.avg_pool2d(image.float() * 2 - 1, opt_f)
    return torch.cat([pooled, pooled.mean(dim=1, keepdim=True)], dim=1)


def decode_latent_batch(model, batch, target_device=None, check_for_nans=False):
    upsampled = F.interpolate(batch[:, :3].float(), scale_factor=opt_f, mode="nearest")
    return [sample.clamp(-1, 1) for sample in upsampled]


def create_binary_mask(image, round=True):
    """An RGBA mask with transparency: its alpha (thresholded at 128 when `round`); else gray as it is."""
    if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
        alpha = image.split()[-1].convert("L")
        return alpha.point(lambda x: 255 if x > 128 else 0) if round else alpha
    return image.convert("L")


def txt2img_image_conditioning(sd_model, x, width, height):
    if sd_model.model.conditioning_key in {"hybrid", "concat"}:  # inpainting models (and, wrongly, depth)
        gray = torch.ones(x.shape[0], 3, height, width) * 0.5
        image_conditioning = images_tensor_to_samples(gray, model=sd_model)
        return F.pad(image_conditioning, (0, 0, 0, 0, 1, 0), value=1.0).to(x.dtype)
    return x.new_zeros(x.shape[0], 5, 1, 1)


class ImageRNG:
    def __init__(
        self, shape, seeds, subseeds=None, subseed_strength=0.0, seed_resize_from_h=0, seed_resize_from_w=0
    ):
        self.shape = tuple(shape)
        self.seeds = seeds

    def next(self):
        return torch.stack(
            [torch.randn(self.shape, generator=torch.Generator().manual_seed(int(s))) for s in self.seeds]
        )


class FakeSampler:
    def __init__(self, model):
        self.model = model

    def _unet(self, x, image_conditioning):
        model = self.model
        if model.fail_sampling is not None:
            raise model.fail_sampling
        if model.model.conditioning_key == "hybrid":
            ic = image_conditioning
            if (
                x.shape[1] + ic.shape[1] != model.in_channels
                or ic.shape[0] != x.shape[0]
                or ic.shape[2:] != x.shape[2:]
            ):
                raise RuntimeError(
                    f"UNet input mismatch: latent {tuple(x.shape)}, image conditioning {tuple(ic.shape)}, "
                    f"UNet in_channels {model.in_channels}"
                )
            model.unet_calls.append(ic.detach().clone())
            return x * 0.5 + ic.mean(dim=1, keepdim=True)
        model.unet_calls.append(None)
        return x * 0.5

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        return self._unet(x, image_conditioning)

    def sample_img2img(
        self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None
    ):
        return self._unet(x + noise * 0.1, image_conditioning)


def create_sampler(name, model):
    return FakeSampler(model)


@dataclass(repr=False)
class StableDiffusionProcessing:
    sd_model: object = None
    outpath_samples: str = None
    outpath_grids: str = None
    prompt: str = ""
    negative_prompt: str = ""
    styles: list = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    extra_generation_params: dict[str, Any] = None
    overlay_images: list = None
    denoising_strength: float = None
    override_settings: dict[str, Any] = None
    override_settings_restore_afterwards: bool = True

    scripts_value: scripts.ScriptRunner = field(default=None, init=False)
    script_args_value: list = field(default=None, init=False)
    scripts_setup_complete: bool = field(default=False, init=False)
    comments: dict = None
    sampler: Any = field(default=None, init=False)
    is_using_inpainting_conditioning: bool = field(default=False, init=False)
    paste_to: tuple | None = field(default=None, init=False)
    is_hr_pass: bool = field(default=False, init=False)
    rng: ImageRNG | None = field(default=None, init=False)
    color_corrections: list = field(default=None, init=False)
    all_prompts: list = field(default=None, init=False)
    all_negative_prompts: list = field(default=None, init=False)
    all_seeds: list = field(default=None, init=False)
    all_subseeds: list = field(default=None, init=False)
    iteration: int = field(default=0, init=False)
    prompts: list = field(default=None, init=False)
    negative_prompts: list = field(default=None, init=False)
    seeds: list = field(default=None, init=False)
    subseeds: list = field(default=None, init=False)
    sd_model_name: str = field(default=None, init=False)
    sd_model_hash: str = field(default=None, init=False)
    is_api: bool = field(default=False, init=False)

    def __post_init__(self):
        self.comments = {}
        self.styles = self.styles or []
        self.extra_generation_params = self.extra_generation_params or {}
        self.override_settings = self.override_settings or {}
        self.script_args = self.script_args or {}

    @property
    def sd_model(self):  # noqa: F811  (A1111 shadows the field with a property too)
        return shared.sd_model

    @sd_model.setter
    def sd_model(self, value):
        pass

    @property
    def scripts(self):
        return self.scripts_value

    @scripts.setter
    def scripts(self, value):
        self.scripts_value = value
        if self.scripts_value and self.script_args_value and not self.scripts_setup_complete:
            self.setup_scripts()

    @property
    def script_args(self):
        return self.script_args_value

    @script_args.setter
    def script_args(self, value):
        self.script_args_value = value
        if self.scripts_value and self.script_args_value and not self.scripts_setup_complete:
            self.setup_scripts()

    def setup_scripts(self):
        """The scripts' `setup` hook, once, as soon as `p` has both its scripts and their args."""
        self.scripts_setup_complete = True
        self.scripts.setup_scrips(self, is_ui=not self.is_api)

    def txt2img_image_conditioning(self, x, width=None, height=None):
        self.is_using_inpainting_conditioning = self.sd_model.model.conditioning_key in {"hybrid", "concat"}
        return txt2img_image_conditioning(self.sd_model, x, width or self.width, height or self.height)

    def depth2img_image_conditioning(self, source_image):
        """A1111's native depth: MiDaS once per batch item on the first image, a VAE encode for the size,
        normalised over the whole batch without epsilon."""
        midas_in = F.interpolate(
            source_image[:1].float(), size=(384, 384), mode="bicubic", align_corners=False
        )
        midas_in = midas_in.repeat(self.batch_size, 1, 1, 1)
        conditioning_image = images_tensor_to_samples(source_image * 0.5 + 0.5)
        conditioning = F.interpolate(
            self.sd_model.depth_model(midas_in),
            size=conditioning_image.shape[2:],
            mode="bicubic",
            align_corners=False,
        )
        depth_min, depth_max = torch.aminmax(conditioning)
        return 2.0 * (conditioning - depth_min) / (depth_max - depth_min) - 1.0

    def inpainting_image_conditioning(
        self, source_image, latent_image, image_mask=None, round_image_mask=True
    ):
        self.is_using_inpainting_conditioning = True
        mask = torch.ones(source_image.shape[0], 1, *latent_image.shape[-2:])
        encoded = images_tensor_to_samples(source_image * 0.5 + 0.5)
        return torch.cat([mask, encoded], dim=1)

    def img2img_image_conditioning(self, source_image, latent_image, image_mask=None, round_image_mask=True):
        source_image = devices.cond_cast_float(source_image)
        if isinstance(self.sd_model, LatentDepth2ImageDiffusion):
            return self.depth2img_image_conditioning(source_image)
        if self.sd_model.model.conditioning_key in {"hybrid", "concat"}:
            return self.inpainting_image_conditioning(
                source_image, latent_image, image_mask, round_image_mask
            )
        return latent_image.new_zeros(latent_image.shape[0], 5, 1, 1)

    def init(self, all_prompts, all_seeds, all_subseeds):
        pass

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        raise NotImplementedError()

    def close(self):
        self.sampler = None

    def save_samples(self) -> bool:
        return shared.opts.samples_save and not self.do_not_save_samples

    def get_token_merging_ratio(self, for_hr=False):
        return 0


@dataclass(repr=False)
class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    enable_hr: bool = False
    denoising_strength: float = 0.75
    hr_scale: float = 2.0
    hr_upscaler: str = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0

    hr_upscale_to_x: int = field(default=0, init=False)
    hr_upscale_to_y: int = field(default=0, init=False)
    truncate_x: int = field(default=0, init=False)
    truncate_y: int = field(default=0, init=False)
    latent_scale_mode: dict = field(default=None, init=False)

    def calculate_target_resolution(self):
        if self.hr_resize_x == 0 and self.hr_resize_y == 0:
            self.hr_upscale_to_x = int(self.width * self.hr_scale)
            self.hr_upscale_to_y = int(self.height * self.hr_scale)
            return
        # one side given: the other follows the first pass's aspect ratio, nothing is truncated
        if self.hr_resize_y == 0:
            self.hr_upscale_to_x = self.hr_resize_x
            self.hr_upscale_to_y = self.hr_resize_x * self.height // self.width
            return
        if self.hr_resize_x == 0:
            self.hr_upscale_to_x = self.hr_resize_y * self.width // self.height
            self.hr_upscale_to_y = self.hr_resize_y
            return
        # both given with another aspect ratio: scale to cover, then truncate the latent
        if self.width / self.height < self.hr_resize_x / self.hr_resize_y:
            self.hr_upscale_to_x = self.hr_resize_x
            self.hr_upscale_to_y = self.hr_resize_x * self.height // self.width
        else:
            self.hr_upscale_to_x = self.hr_resize_y * self.width // self.height
            self.hr_upscale_to_y = self.hr_resize_y
        self.truncate_x = (self.hr_upscale_to_x - self.hr_resize_x) // opt_f
        self.truncate_y = (self.hr_upscale_to_y - self.hr_resize_y) // opt_f

    def init(self, all_prompts, all_seeds, all_subseeds):
        if self.enable_hr:
            self.extra_generation_params["Denoising strength"] = self.denoising_strength
            is_latent = (self.hr_upscaler or "Latent").startswith("Latent")
            self.latent_scale_mode = {"mode": "bilinear", "antialias": False} if is_latent else None
            self.calculate_target_resolution()

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        self.sampler = create_sampler(self.sampler_name, self.sd_model)
        x = self.rng.next()
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(
                p=self, x=x, noise=x, c=conditioning, uc=unconditional_conditioning
            )
        samples = self.sampler.sample(
            self,
            x,
            conditioning,
            unconditional_conditioning,
            image_conditioning=self.txt2img_image_conditioning(x),
        )
        if not self.enable_hr:
            return samples
        decoded = None
        if self.latent_scale_mode is None:
            decoded = torch.stack(decode_latent_batch(self.sd_model, samples)).float()
        return self.sample_hr_pass(samples, decoded, seeds, subseeds, subseed_strength, prompts)

    def sample_hr_pass(self, samples, decoded_samples, seeds, subseeds, subseed_strength, prompts):
        if shared.state.interrupted:
            return samples
        self.is_hr_pass = True
        target_width, target_height = self.hr_upscale_to_x, self.hr_upscale_to_y
        if self.latent_scale_mode is not None:
            samples = F.interpolate(
                samples, size=(target_height // opt_f, target_width // opt_f), mode="bilinear"
            )
            if getattr(self, "inpainting_mask_weight", shared.opts.inpainting_mask_weight) < 1.0:
                decoded = torch.stack(decode_latent_batch(self.sd_model, samples)).float()
                image_conditioning = self.img2img_image_conditioning(decoded, samples)
            else:
                image_conditioning = self.txt2img_image_conditioning(samples)
        else:
            lowres = torch.clamp((decoded_samples + 1.0) / 2.0, min=0.0, max=1.0)
            batch_images = []
            for x_sample in lowres:
                image = Image.fromarray((255.0 * np.moveaxis(x_sample.numpy(), 0, 2)).astype(np.uint8))
                image = images.resize_image(0, image, target_width, target_height)
                batch_images.append(np.moveaxis(np.array(image).astype(np.float32) / 255.0, 2, 0))
            decoded_samples = torch.from_numpy(np.array(batch_images))
            samples = images_tensor_to_samples(decoded_samples)
            image_conditioning = self.img2img_image_conditioning(decoded_samples, samples)
        samples = samples[
            :,
            :,
            self.truncate_y // 2 : samples.shape[2] - (self.truncate_y + 1) // 2,
            self.truncate_x // 2 : samples.shape[3] - (self.truncate_x + 1) // 2,
        ]
        noise = ImageRNG(samples.shape[1:], self.seeds).next()
        if self.scripts is not None:
            self.scripts.before_hr(self)
            self.scripts.process_before_every_sampling(p=self, x=samples, noise=noise, c=None, uc=None)
        samples = self.sampler.sample_img2img(
            self, samples, noise, None, None, image_conditioning=image_conditioning
        )
        self.is_hr_pass = False
        return samples


@dataclass(repr=False)
class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    init_images: list = None
    resize_mode: int = 0
    denoising_strength: float = 0.75
    mask: Any = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    mask_blur: int = 4  # A1111 keeps mask_blur_x and mask_blur_y; its UI and API set both to this

    image_mask: Any = field(default=None, init=False)
    nmask: torch.Tensor = field(default=None, init=False)
    image_conditioning: torch.Tensor = field(default=None, init=False)
    mask_for_overlay: Image = field(default=None, init=False)
    init_latent: torch.Tensor = field(default=None, init=False)

    def __post_init__(self):
        super().__post_init__()
        self.image_mask = self.mask
        self.mask = None

    def init(self, all_prompts, all_seeds, all_subseeds):
        self.extra_generation_params["Denoising strength"] = self.denoising_strength
        self.sampler = create_sampler(self.sampler_name, self.sd_model)
        crop_region = None
        image_mask = self.image_mask
        if image_mask is not None:
            image_mask = create_binary_mask(image_mask, round=self.mask_round)
            if self.inpainting_mask_invert:
                image_mask = ImageOps.invert(image_mask)
            if self.mask_blur > 0:  # x then y, with A1111's kernel size
                import cv2

                kernel = 2 * int(2.5 * self.mask_blur + 0.5) + 1
                np_mask = cv2.GaussianBlur(np.array(image_mask), (kernel, 1), self.mask_blur)
                image_mask = Image.fromarray(cv2.GaussianBlur(np_mask, (1, kernel), self.mask_blur))
            if self.inpaint_full_res:
                self.mask_for_overlay = image_mask
                mask = image_mask.convert("L")
                crop_region = masking.get_crop_region_v2(mask, self.inpaint_full_res_padding)
                if crop_region:
                    crop_region = masking.expand_crop_region(
                        crop_region, self.width, self.height, mask.width, mask.height
                    )
                    x1, y1, x2, y2 = crop_region
                    image_mask = images.resize_image(2, mask.crop(crop_region), self.width, self.height)
                    self.paste_to = (x1, y1, x2 - x1, y2 - y1)
                    self.extra_generation_params["Inpaint area"] = "Only masked"
                else:
                    crop_region = None
                    image_mask = None
                    self.inpaint_full_res = False
            else:
                image_mask = images.resize_image(self.resize_mode, image_mask, self.width, self.height)
        imgs = []
        for img in self.init_images:
            image = images.flatten(img, shared.opts.img2img_background_color)
            if crop_region is None and self.resize_mode != 3:
                image = images.resize_image(self.resize_mode, image, self.width, self.height)
            if crop_region is not None:
                image = images.resize_image(2, image.crop(crop_region), self.width, self.height)
            imgs.append(np.moveaxis(np.array(image).astype(np.float32) / 255.0, 2, 0))
        if len(imgs) == 1:
            batch_images = np.expand_dims(imgs[0], axis=0).repeat(self.batch_size, axis=0)
        elif len(imgs) <= self.batch_size:
            self.batch_size = len(imgs)
            batch_images = np.array(imgs)
        else:
            raise RuntimeError(
                f"bad number of images passed: {len(imgs)}; expecting {self.batch_size} or less"
            )
        image = torch.from_numpy(batch_images)
        self.init_latent = images_tensor_to_samples(image, None, self.sd_model)
        if self.resize_mode == 3:
            self.init_latent = F.interpolate(
                self.init_latent, size=(self.height // opt_f, self.width // opt_f), mode="bilinear"
            )
        if image_mask is not None:
            latmask = (
                np.array(
                    image_mask.convert("L").resize(tuple(reversed(self.init_latent.shape[2:]))),
                    dtype=np.float32,
                )
                / 255
            )
            self.mask = torch.from_numpy(1.0 - np.around(latmask))
            self.nmask = torch.from_numpy(np.around(latmask))
        self.image_conditioning = self.img2img_image_conditioning(
            image * 2 - 1, self.init_latent, image_mask, self.mask_round
        )

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        x = self.rng.next()
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(
                p=self, x=self.init_latent, noise=x, c=conditioning, uc=unconditional_conditioning
            )
        samples = self.sampler.sample_img2img(
            self,
            self.init_latent,
            x,
            conditioning,
            unconditional_conditioning,
            image_conditioning=self.image_conditioning,
        )
        if self.mask is not None:
            samples = samples * self.nmask + self.init_latent * self.mask
        return samples


class Processed:
    def __init__(
        self,
        p: StableDiffusionProcessing,
        images_list,
        seed=-1,
        info="",
        subseed=None,
        all_prompts=None,
        all_negative_prompts=None,
        all_seeds=None,
        all_subseeds=None,
        index_of_first_image=0,
        infotexts=None,
        comments="",
    ):
        self.images = images_list
        self.prompt = p.prompt
        self.seed = seed
        self.info = info
        self.width = p.width
        self.height = p.height
        self.batch_size = p.batch_size
        self.sd_model_name = p.sd_model_name
        self.extra_generation_params = p.extra_generation_params
        self.index_of_first_image = index_of_first_image
        self.all_prompts = all_prompts or p.all_prompts or [self.prompt]
        self.all_seeds = all_seeds or p.all_seeds or [self.seed]
        self.infotexts = infotexts or [info] * len(images_list)


def create_infotext(
    p,
    all_prompts,
    all_seeds,
    all_subseeds,
    comments=None,
    iteration=0,
    position_in_batch=0,
    use_main_prompt=False,
    index=None,
    all_negative_prompts=None,
):
    if use_main_prompt:
        index = 0
    elif index is None:
        index = position_in_batch + iteration * p.batch_size
    generation_params = {
        "Steps": p.steps,
        "Seed": p.all_seeds[0] if use_main_prompt else all_seeds[index],
        "Size": f"{p.width}x{p.height}",
        "Model hash": p.sd_model_hash,
        "Model": p.sd_model_name,
        "Denoising strength": p.extra_generation_params.get("Denoising strength"),
        **p.extra_generation_params,
    }
    text = ", ".join(
        [k if k == v else f"{k}: {quote(v)}" for k, v in generation_params.items() if v is not None]
    )
    return f"{all_prompts[index]}\n{text}".strip()


def process_images(p: StableDiffusionProcessing) -> Processed:
    opts = shared.opts
    if p.scripts is not None:
        p.scripts.before_process(p)

    stored_opts = {
        k: opts.data[k] if k in opts.data else opts.get_default(k)
        for k in p.override_settings
        if k in opts.data
    }
    try:
        if sd_models.checkpoint_aliases.get(p.override_settings.get("sd_model_checkpoint")) is None:
            p.override_settings.pop("sd_model_checkpoint", None)
            sd_models.reload_model_weights()

        for k, v in p.override_settings.items():
            opts.set(k, v, is_api=True, run_callbacks=False)
            if k == "sd_model_checkpoint":
                sd_models.reload_model_weights()

        res = process_images_inner(p)
    finally:
        if p.override_settings_restore_afterwards:
            for k, v in stored_opts.items():
                setattr(opts, k, v)
    return res


def process_images_inner(p: StableDiffusionProcessing) -> Processed:
    state = shared.state
    seed = p.seed if p.seed != -1 else 1234
    p.sd_model_name = shared.sd_model.sd_checkpoint_info.name_for_extra
    p.sd_model_hash = shared.sd_model.sd_model_hash
    n_images = p.batch_size * p.n_iter
    p.all_prompts = [p.prompt] * n_images
    p.all_negative_prompts = [p.negative_prompt] * n_images
    p.all_seeds = [int(seed) + x for x in range(n_images)]
    p.all_subseeds = list(p.all_seeds)

    if p.scripts is not None:
        p.scripts.process(p)

    infotexts = []
    output_images = []
    with torch.no_grad(), p.sd_model.ema_scope():
        p.init(p.all_prompts, p.all_seeds, p.all_subseeds)

        for n in range(p.n_iter):
            p.iteration = n
            if state.interrupted or state.stopping_generation:
                break
            sd_models.reload_model_weights()
            p.prompts = p.all_prompts[n * p.batch_size : (n + 1) * p.batch_size]
            p.negative_prompts = p.all_negative_prompts[n * p.batch_size : (n + 1) * p.batch_size]
            p.seeds = p.all_seeds[n * p.batch_size : (n + 1) * p.batch_size]
            p.subseeds = p.all_subseeds[n * p.batch_size : (n + 1) * p.batch_size]
            p.rng = ImageRNG((opt_C, p.height // opt_f, p.width // opt_f), p.seeds)

            if p.scripts is not None:
                p.scripts.before_process_batch(
                    p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds
                )
                p.scripts.process_batch(
                    p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds
                )

            samples_ddim = p.sample(
                conditioning=None,
                unconditional_conditioning=None,
                seeds=p.seeds,
                subseeds=p.subseeds,
                subseed_strength=p.subseed_strength,
                prompts=p.prompts,
            )
            x_samples_ddim = torch.stack(decode_latent_batch(p.sd_model, samples_ddim)).float()
            x_samples_ddim = torch.clamp((x_samples_ddim + 1.0) / 2.0, min=0.0, max=1.0)
            state.nextjob()

            if p.scripts is not None:
                p.scripts.postprocess_batch(p, x_samples_ddim, batch_number=n)
                p.prompts = p.all_prompts[n * p.batch_size : (n + 1) * p.batch_size]
                p.negative_prompts = p.all_negative_prompts[n * p.batch_size : (n + 1) * p.batch_size]
                batch_params = scripts.PostprocessBatchListArgs(list(x_samples_ddim))
                p.scripts.postprocess_batch_list(p, batch_params, batch_number=n)
                x_samples_ddim = batch_params.images

            for i, x_sample in enumerate(x_samples_ddim):
                image = Image.fromarray((255.0 * np.moveaxis(x_sample.numpy(), 0, 2)).astype(np.uint8))
                if p.scripts is not None:
                    pp = scripts.PostprocessImageArgs(image)
                    p.scripts.postprocess_image(p, pp)
                    image = pp.image
                text = create_infotext(
                    p, p.all_prompts, p.all_seeds, p.all_subseeds, iteration=n, position_in_batch=i
                )
                if p.save_samples():
                    images.save_image(
                        image, p.outpath_samples, "", p.seeds[i], p.prompts[i], "png", info=text, p=p
                    )
                infotexts.append(text)
                image.info["parameters"] = text
                output_images.append(image)

        index_of_first_image = 0
        if shared.opts.return_grid and len(output_images) > 1 and not p.do_not_save_grid:
            grid = images.image_grid(output_images, p.batch_size)
            text = create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, use_main_prompt=True)
            infotexts.insert(0, text)
            output_images.insert(0, grid)
            index_of_first_image = 1

    res = Processed(
        p,
        images_list=output_images,
        seed=p.all_seeds[0],
        info=infotexts[0] if infotexts else "",
        index_of_first_image=index_of_first_image,
        infotexts=infotexts,
    )
    if p.scripts is not None:
        p.scripts.postprocess(p, res)
    return res
