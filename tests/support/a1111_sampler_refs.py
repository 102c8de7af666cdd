"""Writes tests/data/a1111_samplers.npz: what A1111 v1.10.1's own sampler code returns.

Run it with A1111's Python, from the repository root:

    SD_WEBUI_DIR=/path/to/stable-diffusion-webui  $SD_WEBUI_DIR/venv/bin/python tests/support/a1111_sampler_refs.py

It loads, from the A1111 checkout, k-diffusion (its `repositories/k-diffusion`, commit ab527a9a)
and A1111's own functions and classes that decide the result: `rng.py` whole (ImageRNG, slerp,
per-seed generators, eta noise seed delta), the Brownian-tree seeding patch and `TorchHijack`
from `sd_samplers_common.py`, `setup_img2img_steps`, `CFGDenoiser.combine_denoised`, the DDIM of
`sd_samplers_timesteps_impl.py` and the `uniform` schedule of `sd_schedulers.py`. The glue around
them (`KDiffusionSampler.sample_img2img`, `CompVisSampler.sample_img2img`, their txt2img `sample`,
the mask blend of `CFGDenoiser.forward` and `StableDiffusionProcessingImg2Img.sample`) is
restated here line for line, with A1111's default options on a CPU ("RNG: CPU"). The model is
`tiny_eps`, so the arrays are small and the test runs anywhere without A1111.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.support.tiny_eps import make_weights, tiny_eps
from tests.support.webui import webui_checkout

OUTPUT = REPO / "tests/data/a1111_samplers.npz"
LATENT_SHAPE = (4, 8, 8)
SEEDS = [101, 102]
CFG_SCALE = 7.0

CASES = [
    # name, sampler, schedule type, steps, strength (None: txt2img), extras
    *[(f"{s} img2img", s, "Automatic", 6, 0.75, {}) for s in (
        "Euler", "Euler a", "Heun", "LMS", "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DDIM")],
    ("Euler Karras", "Euler", "Karras", 5, 0.6, {}),
    ("Euler a Exponential", "Euler a", "Exponential", 5, 0.6, {}),
    ("Heun Karras", "Heun", "Karras", 4, 0.8, {}),
    ("LMS Karras", "LMS", "Karras", 7, 0.9, {}),
    ("DPM++ 2M Exponential", "DPM++ 2M", "Exponential", 5, 0.6, {}),
    ("DPM++ 2M Uniform", "DPM++ 2M", "Uniform", 5, 0.6, {}),
    ("DPM++ SDE Exponential", "DPM++ SDE", "Exponential", 4, 1.0, {}),
    ("DPM++ 2M SDE Karras", "DPM++ 2M SDE", "Karras", 5, 0.5, {}),
    ("DDIM 3 steps full strength", "DDIM", "Automatic", 3, 1.0, {}),
    ("DDIM low strength", "DDIM", "Automatic", 6, 0.1, {}),
    ("DPM++ 2M low strength", "DPM++ 2M", "Automatic", 6, 0.1, {}),
    ("Euler a txt2img", "Euler a", "Automatic", 4, None, {}),
    ("DPM++ 2M SDE txt2img", "DPM++ 2M SDE", "Automatic", 4, None, {}),
    ("DDIM txt2img", "DDIM", "Automatic", 4, None, {}),
    ("Euler a variation seed and ENSD", "Euler a", "Automatic", 5, 0.8,
     {"seeds": [101, 101], "subseeds": [7, 8], "subseed_strength": 0.3, "ensd": 31337}),
    ("Euler inpaint", "Euler", "Automatic", 5, 0.8, {"mask": True}),
    ("DDIM inpaint", "DDIM", "Automatic", 6, 0.8, {"mask": True}),
]

K_FUNCTIONS = {
    "Euler": ("sample_euler", None), "Euler a": ("sample_euler_ancestral", None),
    "Heun": ("sample_heun", None), "LMS": ("sample_lms", None), "DPM++ 2M": ("sample_dpmpp_2m", "karras"),
    "DPM++ SDE": ("sample_dpmpp_sde", "karras"), "DPM++ 2M SDE": ("sample_dpmpp_2m_sde", "exponential"),
}
"""A1111's `samplers_k_diffusion` rows used here: function and the schedule "Automatic" picks."""
BROWNIAN = {"DPM++ SDE", "DPM++ 2M SDE"}


def load_source(path: Path, names: list[str], namespace: dict) -> dict:
    """Exec the top-level functions/classes `names` of a source file in `namespace`."""
    tree = ast.parse(path.read_text())
    nodes = [n for n in tree.body if getattr(n, "name", None) in names]
    exec(compile(ast.Module(body=nodes, type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102  (A1111's own functions, as the reference)
    return namespace


def method_source(path: Path, class_name: str, method: str, namespace: dict):
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body if getattr(n, "name", None) == class_name)
    node = next(n for n in cls.body if getattr(n, "name", None) == method)
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102
    return namespace[method]


def a1111(webui: Path, ensd: int):
    """A1111's rng module (loaded whole over stand-ins of shared/devices), and its helpers."""
    opts = types.SimpleNamespace(randn_source="CPU", eta_noise_seed_delta=ensd)
    shared = types.SimpleNamespace(opts=opts, device=torch.device("cpu"))
    devices = types.SimpleNamespace(device=torch.device("cpu"), cpu=torch.device("cpu"))
    package = types.ModuleType("modules")
    package.__path__ = []
    for name, module in (("shared", shared), ("devices", devices), ("rng_philox", types.SimpleNamespace())):
        setattr(package, name, module)
    sys.modules["modules"] = package
    spec = importlib.util.spec_from_file_location("modules.rng", webui / "modules/rng.py")
    rng = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rng)
    common = webui / "modules/sd_samplers_common.py"
    helpers = load_source(common, ["setup_img2img_steps", "TorchHijack", "replace_torchsde_browinan"],
                          {"torch": torch, "opts": types.SimpleNamespace(img2img_fix_steps=False),
                           "devices": devices})
    helpers["replace_torchsde_browinan"]()  # A1111 seeds torchsde's nodes with its randn_local
    return rng, helpers


def main() -> None:
    webui = webui_checkout()
    if webui is None:
        raise SystemExit("set SD_WEBUI_DIR to an A1111 v1.10.1 checkout")
    sys.path.insert(0, str(webui / "repositories/k-diffusion"))
    import k_diffusion.external
    import k_diffusion.sampling

    g = torch.Generator().manual_seed(20240601)
    weights = make_weights(7)
    arrays = {f"weight_{k}": v.numpy() for k, v in weights.items()}
    cond = torch.randn((1, 77, 16), generator=g)
    uncond = torch.randn((1, 77, 16), generator=g)
    depth = torch.rand((1, 1, *LATENT_SHAPE[1:]), generator=g) * 2 - 1
    init_latent = torch.randn((1, *LATENT_SHAPE), generator=g)
    repaint = torch.zeros((1, 1, *LATENT_SHAPE[1:]))
    repaint[..., :, 3:] = 1
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - betas, 0).float()
    arrays.update(cond=cond.numpy(), uncond=uncond.numpy(), depth=depth.numpy(),
                  init_latent=init_latent.numpy(), repaint=repaint.numpy())

    class TinyLDM:
        """The parts of ldm's LatentDiffusion that the samplers touch."""

        def __init__(self):
            self.alphas_cumprod = alphas_cumprod

        def apply_model(self, x, t, cond):
            return tiny_eps(weights, x, t, cond["c_crossattn"][0], cond["c_concat"][0])

    ldm = TinyLDM()
    combine = method_source(webui / "modules/sd_samplers_cfg_denoiser.py", "CFGDenoiser", "combine_denoised",
                            {"torch": torch})
    ddim = load_source(webui / "modules/sd_samplers_timesteps_impl.py", ["ddim"], {
        "torch": torch, "tqdm": __import__("tqdm"), "k_diffusion": k_diffusion, "np": np,
        "float64": lambda x: torch.float64})["ddim"]
    uniform = load_source(webui / "modules/sd_schedulers.py", ["uniform"], {})["uniform"]

    class CFG(torch.nn.Module):
        """`CFGDenoiser.forward` for one prompt per image, batch_cond_uncond, no skipping."""

        def __init__(self, inner_model, mask_before_denoising, mask, nmask, init):
            super().__init__()
            self.inner_model, self.mask_before = inner_model, mask_before_denoising
            self.mask, self.nmask, self.init_latent = mask, nmask, init

        def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
            if self.mask_before and self.mask is not None:
                x = x * self.nmask + self.init_latent * self.mask
            batch = x.shape[0]
            x_in = torch.cat([torch.stack([x[i]]) for i in range(batch)] + [x])
            sigma_in = torch.cat([torch.stack([sigma[i]]) for i in range(batch)] + [sigma])
            image_cond_in = torch.cat([torch.stack([image_cond[i]]) for i in range(batch)] + [image_cond])
            cond_in = torch.cat([cond, uncond])
            x_out = self.inner_model(x_in, sigma_in, cond={"c_crossattn": [cond_in], "c_concat": [image_cond_in]})
            conds_list = [[(i, 1.0)] for i in range(batch)]
            denoised = combine(None, x_out, conds_list, uncond, cond_scale)
            if not self.mask_before and self.mask is not None:
                denoised = denoised * self.nmask + self.init_latent * self.mask
            return denoised

    class TimestepsDenoiser(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.inner_model = model

        def forward(self, input, timesteps, **kwargs):
            return self.inner_model.apply_model(input, timesteps, **kwargs)

    results, meta = {}, []
    for name, sampler, schedule_type, steps, strength, extras in CASES:
        seeds = extras.get("seeds", SEEDS)
        batch = len(seeds)
        rng, helpers = a1111(webui, extras.get("ensd", 0))
        p = types.SimpleNamespace(steps=steps, denoising_strength=strength)
        p.rng = rng.ImageRNG(LATENT_SHAPE, seeds, subseeds=extras.get("subseeds"),
                             subseed_strength=extras.get("subseed_strength", 0.0))
        x0 = init_latent.expand(batch, -1, -1, -1).clone()
        image_cond = depth.expand(batch, -1, -1, -1)
        mask = nmask = None
        if extras.get("mask"):
            nmask = repaint[0].expand(4, -1, -1).clone()
            mask = 1.0 - nmask
        extra_args = {"cond": cond.expand(batch, -1, -1), "uncond": uncond.expand(batch, -1, -1),
                      "image_cond": image_cond, "cond_scale": CFG_SCALE, "s_min_uncond": 0.0}
        k_diffusion.sampling.torch = helpers["TorchHijack"](p)
        noise = p.rng.next()
        if sampler == "DDIM":
            model = CFG(TimestepsDenoiser(ldm), True, mask, nmask, x0)
            timesteps = torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)
            if strength is None:
                samples = ddim(model, noise, timesteps, extra_args=extra_args, disable=True, eta=0.0)
            else:
                _, t_enc = helpers["setup_img2img_steps"](p, None)
                a = alphas_cumprod[timesteps[t_enc]]
                xi = x0 * torch.sqrt(a) + noise * torch.sqrt(1 - a)
                samples = ddim(model, xi, timesteps[:t_enc], extra_args=extra_args, disable=True, eta=0.0)
        else:
            function_name, automatic = K_FUNCTIONS[sampler]
            function = getattr(k_diffusion.sampling, function_name)
            wrapped = k_diffusion.external.CompVisDenoiser(ldm, quantize=False)
            model = CFG(wrapped, False, mask, nmask, x0)
            scheduler = automatic if schedule_type == "Automatic" else schedule_type.lower()
            sigma_min, sigma_max = wrapped.sigmas[0].item(), wrapped.sigmas[-1].item()
            if scheduler in (None, "uniform"):
                sigmas = uniform(steps, sigma_min, sigma_max, wrapped, torch.device("cpu")).cpu()
            else:
                schedule_function = getattr(k_diffusion.sampling, f"get_sigmas_{scheduler}")
                sigmas = schedule_function(n=steps, sigma_min=sigma_min, sigma_max=sigma_max, device="cpu").cpu()
            kwargs = {}
            parameters = inspect.signature(function).parameters
            if "eta" in parameters:
                kwargs["eta"] = 1.0
            if strength is None:
                x = noise * sigmas[0]
                walked = sigmas
            else:
                steps_, t_enc = helpers["setup_img2img_steps"](p, None)
                walked = sigmas[steps_ - t_enc - 1:]
                x = x0 + noise * walked[0]
            if sampler in BROWNIAN:
                start = x0 if strength is not None else x
                kwargs["noise_sampler"] = k_diffusion.sampling.BrownianTreeNoiseSampler(
                    start, sigmas[sigmas > 0].min(), sigmas.max(), seed=seeds)
            samples = function(model, x, walked, extra_args=extra_args, disable=True, **kwargs)
        if mask is not None:
            samples = samples * nmask + x0 * mask
        assert torch.isfinite(samples).all(), name
        key = f"case{len(meta)}"
        results[key] = samples.numpy()
        meta.append({"key": key, "name": name, "sampler": sampler, "schedule_type": schedule_type,
                     "steps": steps, "strength": strength, "seeds": seeds, **extras})
        print(f"{name}: mean |x| {float(samples.abs().mean()):.4f}")
    np.savez_compressed(OUTPUT, meta=np.array(json.dumps(meta)), cfg_scale=CFG_SCALE,
                        alphas_cumprod=alphas_cumprod.numpy(), **arrays, **results)
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes, {len(meta)} cases)")


if __name__ == "__main__":
    main()
