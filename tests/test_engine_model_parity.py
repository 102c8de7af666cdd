"""Parity of the engine's model with Stability's own `ldm` code, on the same random tiny weights.

Runs only when `SD_WEBUI_DIR` points at an A1111 checkout with
`repositories/stable-diffusion-stability-ai`. The `ldm` side runs in a subprocess with the WebUI's
Python (`SD_WEBUI_PYTHON`, else `$SD_WEBUI_DIR/venv/bin/python`, else a `venv` beside the
checkout): it builds ldm's UNetModel, AutoencoderKL and FrozenOpenCLIPEmbedder(layer="penultimate")
at TINY sizes, loads the tensors of a demo checkpoint that this side writes, runs them on inputs
that this side wrote, and saves the outputs for this side to compare with its own. That side
runs the source of `run_ldm` alone, so it needs nothing from this project (nor pytest).
"""

import dataclasses
import inspect
import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from support.webui import webui_checkout, webui_python

PROMPTS = ["a photo of a cat", "", "an oil painting of " + "a very long prompt " * 20]
LDM_REPO = Path("repositories") / "stable-diffusion-stability-ai"


@pytest.mark.webui
def test_tiny_model_matches_stability_ldm(tmp_path):
    webui = webui_checkout() or Path("/nonexistent")
    python = webui_python(webui)
    if not (webui / LDM_REPO / "ldm").is_dir() or python is None:
        pytest.skip("SD_WEBUI_DIR is not set, or has no stable-diffusion-stability-ai checkout or venv")

    from lib_depth2img.engine import TINY, load_checkpoint, write_demo_checkpoint

    write_demo_checkpoint(tmp_path / "weights.safetensors", config=TINY, seed=3)
    model, _ = load_checkpoint(tmp_path / "weights.safetensors")
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "latents": torch.randn(2, 4, 8, 8, generator=generator),
        "depth": torch.rand(2, 1, 8, 8, generator=generator) * 2 - 1,
        "timesteps": torch.tensor([999, 10]),
        "context": torch.randn(2, 77, TINY.unet.context_dim, generator=generator),
        "images": torch.rand(2, 3, 64, 64, generator=generator) * 2 - 1,
    }
    save_file(inputs, str(tmp_path / "inputs.safetensors"))
    config = {"engine": dataclasses.asdict(TINY), "prompts": PROMPTS, "ldm_repo": str(webui / LDM_REPO)}
    (tmp_path / "config.json").write_text(json.dumps(config))

    script = inspect.getsource(run_ldm) + f"\nrun_ldm({str(tmp_path)!r})\n"
    result = subprocess.run(
        [str(python), "-c", script], check=False, capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ldm = load_file(tmp_path / "ldm_outputs.safetensors")

    ours = {
        "tokens": model.text_encoder.tokenize(PROMPTS),
        "text_context": model.encode_prompts(PROMPTS),
        "eps": model.predict_noise(
            inputs["latents"], inputs["timesteps"], inputs["context"], inputs["depth"]
        ),
        "latents": model.encode_images(inputs["images"]),
        "decoded": model.decode_latents(inputs["latents"]),
    }
    assert torch.equal(ours["tokens"], ldm["tokens"])
    for name in ("text_context", "eps", "latents", "decoded"):
        assert ours[name].shape == ldm[name].shape, name
        torch.testing.assert_close(ours[name], ldm[name], atol=1e-4, rtol=1e-4, msg=name)


def run_ldm(work_dir: str) -> None:
    """The subprocess: Stability's modules at the engine's sizes, fed the same weights and inputs."""
    import json
    import sys
    from pathlib import Path

    import torch
    from safetensors.torch import load_file, save_file

    work_dir = Path(work_dir)
    config = json.loads((work_dir / "config.json").read_text())
    sys.path.insert(0, config["ldm_repo"])
    import open_clip
    from ldm.models.autoencoder import AutoencoderKL
    from ldm.modules.diffusionmodules.openaimodel import UNetModel
    from ldm.modules.encoders.modules import FrozenOpenCLIPEmbedder

    unet_cfg, vae_cfg, text_cfg = (config["engine"][k] for k in ("unet", "vae", "text"))
    weights = load_file(work_dir / "weights.safetensors")
    inputs = load_file(work_dir / "inputs.safetensors")

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}

    unet = UNetModel(
        image_size=32,
        in_channels=unet_cfg["in_channels"],
        out_channels=unet_cfg["out_channels"],
        model_channels=unet_cfg["model_channels"],
        attention_resolutions=list(unet_cfg["attention_resolutions"]),
        num_res_blocks=unet_cfg["num_res_blocks"],
        channel_mult=list(unet_cfg["channel_mult"]),
        num_head_channels=unet_cfg["num_head_channels"],
        use_spatial_transformer=True,
        use_linear_in_transformer=True,
        transformer_depth=unet_cfg["transformer_depth"],
        context_dim=unet_cfg["context_dim"],
        legacy=False,
    )
    unet.load_state_dict(part("model.diffusion_model."), strict=True)

    ddconfig = {
        "double_z": True,
        "z_channels": vae_cfg["z_channels"],
        "resolution": 256,
        "in_channels": vae_cfg["image_channels"],
        "out_ch": vae_cfg["image_channels"],
        "ch": vae_cfg["ch"],
        "ch_mult": list(vae_cfg["ch_mult"]),
        "num_res_blocks": vae_cfg["num_res_blocks"],
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    vae = AutoencoderKL(ddconfig, {"target": "torch.nn.Identity"}, embed_dim=vae_cfg["z_channels"])
    vae.load_state_dict(part("first_stage_model."), strict=True)

    # FrozenOpenCLIPEmbedder downloads ViT-H-14; hand it an untrained CLIP of the tiny text size instead.
    def tiny_clip(*args, **kwargs):
        vision = {"layers": 1, "width": 64, "head_width": 64, "patch_size": 16, "image_size": 32}
        text = {k: text_cfg[k] for k in ("context_length", "vocab_size", "width", "heads", "layers")}
        return open_clip.CLIP(embed_dim=text_cfg["output_dim"], vision_cfg=vision, text_cfg=text), None, None

    open_clip.create_model_and_transforms = tiny_clip
    text_encoder = FrozenOpenCLIPEmbedder(device="cpu", layer="penultimate")
    text_encoder.model.load_state_dict(part("cond_stage_model.model."), strict=True)

    scale = config["engine"]["latent_scale"]
    with torch.no_grad():
        x = torch.cat([inputs["latents"], inputs["depth"]], dim=1)
        outputs = {
            "tokens": open_clip.tokenize(config["prompts"]),
            "text_context": text_encoder(config["prompts"]),
            "eps": unet(x, inputs["timesteps"], context=inputs["context"]),
            "latents": vae.encode(inputs["images"]).mean * scale,
            "decoded": vae.decode(inputs["latents"] / scale),
        }
    save_file({k: v.contiguous() for k, v in outputs.items()}, str(work_dir / "ldm_outputs.safetensors"))
