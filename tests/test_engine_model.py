"""The engine's SD2-depth model: full-size layout against the checkpoint facts, tiny forward passes."""

from pathlib import Path

import pytest
import torch

from lib_depth2img.engine import (
    FULL,
    TINY,
    attention_backend,
    build_model,
    get_attention_backend,
    infer_config,
    noise_schedule,
)
from lib_depth2img.engine.layers import attention

LAYOUT_FILE = Path(__file__).parent / "data" / "512-depth-ema.layout.tsv"
PARTS = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")


def read_layout() -> dict[str, tuple[int, ...]]:
    layout = {}
    for line in LAYOUT_FILE.read_text().splitlines():
        name, shape = line.split("\t")
        layout[name] = tuple(int(n) for n in shape.strip("()").split(",") if n)
    return layout


@pytest.fixture(scope="module")
def layout() -> dict[str, tuple[int, ...]]:
    return read_layout()


@pytest.fixture(scope="module")
def full_meta_shapes() -> dict[str, tuple[int, ...]]:
    model = build_model(FULL, device="meta")
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_model(TINY)


@pytest.mark.parametrize("prefix", PARTS)
def test_full_model_has_every_checkpoint_tensor_with_its_shape(layout, full_meta_shapes, prefix):
    expected = {k: v for k, v in layout.items() if k.startswith(prefix)}
    ours = {k: v for k, v in full_meta_shapes.items() if k.startswith(prefix)}
    assert sorted(set(expected) - set(ours)) == []  # missing
    assert sorted(set(ours) - set(expected)) == []  # extra
    assert {k: (ours[k], expected[k]) for k in ours if ours[k] != expected[k]} == {}


def test_full_model_holds_exactly_the_non_depth_part_of_the_checkpoint(layout, full_meta_shapes):
    non_depth = {k: v for k, v in layout.items() if not k.startswith("depth_model.")}
    assert full_meta_shapes == non_depth  # the 3 parts plus the 12 noise-schedule buffers


def test_full_model_on_meta_allocates_nothing():
    model = build_model(FULL, device="meta")
    assert {t.device.type for t in model.state_dict().values()} == {"meta"}
    assert sum(t.numel() for t in model.parameters()) > 800_000_000


def test_sizes_are_inferred_from_the_checkpoint_shapes(layout):
    assert infer_config(layout) == FULL


def test_tiny_sizes_survive_the_round_trip_through_shapes(tiny):
    assert infer_config({k: t.shape for k, t in tiny.state_dict().items()}) == TINY


def test_noise_schedule_is_sd2_scaled_linear(tiny):
    schedule = noise_schedule(FULL)
    assert len(schedule) == 12
    assert schedule["betas"][0].item() == pytest.approx(0.00085)
    assert schedule["betas"][-1].item() == pytest.approx(0.012)
    assert schedule["alphas_cumprod"][-1].item() == pytest.approx(0.0047, abs=1e-4)
    assert torch.equal(tiny.alphas_cumprod, schedule["alphas_cumprod"])
    assert tiny.alphas_cumprod.dtype == torch.float32
    assert tiny.latent_scale == 0.18215


def test_text_encoding_has_one_context_per_prompt(tiny):
    context = tiny.encode_prompts(["a", "b"])
    assert context.shape == (2, 77, TINY.text.width)
    assert torch.isfinite(context).all()
    assert not torch.allclose(context[0], context[1])


def test_text_encoding_is_causal_and_skips_the_last_block(tiny):
    encoder = tiny.text_encoder
    tokens = encoder.tokenize(["a red house", "a red car"])
    context = encoder(tokens)
    # Tokens 0..2 ("<start> a red") are equal, and with a causal mask so are their outputs.
    assert torch.allclose(context[0, :3], context[1, :3], atol=1e-6)
    assert not torch.allclose(context[0, 3], context[1, 3])
    # "penultimate": the last transformer block does not take part.
    last = encoder.model.transformer.resblocks[-1]
    saved = {k: v.clone() for k, v in last.state_dict().items()}
    with torch.no_grad():
        for p in last.parameters():
            p.add_(1.0)
    try:
        assert torch.equal(encoder(tokens), context)
    finally:
        last.load_state_dict(saved)


@pytest.mark.parametrize("height, width", [(64, 64), (64, 96)])
def test_images_encode_to_one_eighth_and_decode_back(tiny, height, width):
    images = torch.rand(2, 3, height, width) * 2 - 1
    latents = tiny.encode_images(images)
    assert latents.shape == (2, 4, height // 8, width // 8)
    decoded = tiny.decode_latents(latents)
    assert decoded.shape == images.shape
    assert torch.isfinite(latents).all() and torch.isfinite(decoded).all()


def test_encoding_is_the_scaled_posterior_mean(tiny):
    images = torch.rand(1, 3, 64, 64) * 2 - 1
    moments = tiny.vae.quant_conv(tiny.vae.encoder(images))
    assert torch.allclose(tiny.encode_images(images), moments[:, :4] * 0.18215, atol=1e-6)


def test_noise_prediction_takes_the_depth_as_fifth_channel(tiny):
    torch.manual_seed(1)
    latents = torch.randn(2, 4, 8, 12)
    context = tiny.encode_prompts(["a", "b"])
    depth = torch.rand(2, 1, 8, 12) * 2 - 1
    eps = tiny.predict_noise(latents, torch.tensor([999, 10]), context, depth)
    assert eps.shape == latents.shape
    assert torch.isfinite(eps).all()
    direct = tiny.unet(torch.cat([latents, depth], dim=1), torch.tensor([999, 10]), context)
    assert torch.allclose(eps, direct)
    assert not torch.allclose(eps, tiny.predict_noise(latents, torch.tensor([999, 10]), context, -depth))
    # One timestep for the whole batch, fractional ones too.
    same = tiny.predict_noise(latents, 500, context, depth)
    assert torch.allclose(same, tiny.predict_noise(latents, torch.tensor([500.0, 500.0]), context, depth))
    with pytest.raises(ValueError, match="depth"):
        tiny.predict_noise(latents, 500, context, depth[:, :, :4])


@pytest.mark.parametrize("height, width", [(10, 12), (9, 13)])
def test_noise_prediction_works_for_any_multiple_of_8_pixels(tiny, height, width):
    """80x96 or 72x104 pixels: the downsamples round odd sides up, the decoder must fit the skips."""
    latents = torch.randn(1, 4, height, width)
    eps = tiny.predict_noise(latents, 500, tiny.encode_prompts(["a"]), torch.zeros(1, 1, height, width))
    assert eps.shape == latents.shape and torch.isfinite(eps).all()


def test_sdpa_and_plain_attention_agree(tiny):
    torch.manual_seed(2)
    q, k, v = (torch.randn(2, 3, 40, 16) for _ in range(3))
    with attention_backend("plain"):
        plain = attention(q, k, v)
    assert torch.allclose(attention(q, k, v), plain, atol=1e-5)

    latents, depth = torch.randn(2, 4, 8, 8), torch.rand(2, 1, 8, 8)
    context = tiny.encode_prompts(["a", "b"])
    eps = tiny.predict_noise(latents, 300, context, depth)
    images = tiny.decode_latents(latents)
    with attention_backend("plain"):
        assert get_attention_backend() == "plain"
        assert torch.allclose(tiny.predict_noise(latents, 300, context, depth), eps, atol=1e-5)
        assert torch.allclose(tiny.decode_latents(latents), images, atol=1e-5)
    assert get_attention_backend() == "sdpa"


def test_half_precision_model_stays_close_to_float32(tiny):
    half = build_model(TINY, dtype=torch.bfloat16)
    half.load_state_dict(tiny.state_dict())
    assert half.unet.input_blocks[0][0].weight.dtype == torch.bfloat16
    assert half.alphas_cumprod.dtype == torch.float32
    latents, depth = torch.randn(1, 4, 8, 8), torch.rand(1, 1, 8, 8)
    context = half.encode_prompts(["a"])
    assert context.dtype == torch.bfloat16
    eps = half.predict_noise(latents, 300, context, depth)
    assert eps.dtype == torch.float32  # comes back in the latents' dtype
    reference = tiny.predict_noise(latents, 300, tiny.encode_prompts(["a"]), depth)
    assert torch.isfinite(eps).all()
    assert torch.nn.functional.cosine_similarity(eps.flatten(), reference.flatten(), dim=0) > 0.99
