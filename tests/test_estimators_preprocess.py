"""MiDaS preprocessing: the "minimal" resize rule, input normalisation, output upsampling."""

import numpy as np
import pytest
import torch
from PIL import Image

from lib_depth2img.errors import ImageError
from lib_depth2img.estimators.preprocess import (
    image_to_rgb_array,
    net_input_size,
    to_depth_map,
    to_network_input,
)

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("width", "height", "net_size", "expected"),
    [
        # square: scale 0.75 / 1.5 on both sides
        (512, 512, 384, (384, 384)),
        (256, 256, 384, (384, 384)),
        # 768x512: scales 0.5 (w) and 0.75 (h); 0.75 is closer to 1 -> height 384, width 576
        (768, 512, 384, (576, 384)),
        # 1920x1080: scales 0.2 and 0.356 -> height 384, width 682.7 -> 21.3 * 32 -> 672
        (1920, 1080, 384, (672, 384)),
        # 300x200: scales 1.28 and 1.92; 1.28 is closer -> width 384, height 256
        (300, 200, 384, (384, 256)),
        # tie: 256x768 has scales 1.5 and 0.5, both 0.5 away from 1 -> the height's wins: 128x384
        (256, 768, 384, (128, 384)),
        # halves round to even like numpy: 400/32 = 12.5 -> 12; 432/32 = 13.5 -> 14
        (400, 384, 384, (384, 384)),
        (432, 384, 384, (448, 384)),
        # BEiT-512: 1024x768 has scales 0.5 and 0.667 -> height 512, width 682.7 -> 672
        (1024, 768, 512, (672, 512)),
        # already a multiple of 32 at net size: unchanged
        (384, 384, 384, (384, 384)),
        # a thin strip would round its short side to 0 in MiDaS; it gets 32 here
        (10000, 100, 384, (384, 32)),
    ],
)
def test_net_input_size_follows_the_minimal_rule(width, height, net_size, expected):
    assert net_input_size(width, height, net_size) == expected


def test_net_input_size_lands_one_side_on_net_size_and_rounds_the_other():
    for width in range(40, 2000, 97):
        for height in range(40, 2000, 89):
            net_width, net_height = net_input_size(width, height, 384)
            assert net_width % 32 == 0 and net_height % 32 == 0
            assert 384 in (net_width, net_height)  # the fitted side scales exactly onto the net size
            if net_height == 384:
                assert abs(net_width - width * 384 / height) <= 16 or net_width == 32
            else:
                assert abs(net_height - height * 384 / width) <= 16 or net_height == 32


def test_network_input_is_normalised_to_minus_one_one_at_the_rule_size():
    white = np.full((200, 300, 3), 255, dtype=np.uint8)
    black = np.zeros((200, 300, 3), dtype=np.uint8)
    x_white = to_network_input(white, 384, CPU, torch.float32)
    x_black = to_network_input(black, 384, CPU, torch.float32)
    assert x_white.shape == (1, 3, 256, 384)
    assert torch.allclose(x_white, torch.ones_like(x_white))
    assert torch.allclose(x_black, -torch.ones_like(x_black))


def test_network_input_keeps_channel_order_and_casts_to_the_model_dtype():
    red = np.zeros((64, 64, 3), dtype=np.uint8)
    red[..., 0] = 255
    x = to_network_input(red, 64, CPU, torch.bfloat16)
    assert x.dtype == torch.bfloat16
    assert torch.all(x[0, 0] == 1) and torch.all(x[0, 1] == -1) and torch.all(x[0, 2] == -1)


def test_network_input_is_resized_bicubic():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)
    x = to_network_input(rgb, 64, CPU, torch.float32)
    pixels = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    expected = torch.nn.functional.interpolate(pixels, size=x.shape[-2:], mode="bicubic", align_corners=False)
    assert torch.allclose(x, expected * 2 - 1, atol=1e-6)


def test_depth_map_is_upsampled_to_the_image_size_float32_and_non_negative():
    step = torch.zeros(32, 32, dtype=torch.bfloat16)
    step[:, 16:] = 10  # a sharp edge makes bicubic undershoot below zero
    depth = to_depth_map(step, 100, 75)
    assert depth.shape == (100, 75) and depth.dtype == np.float32
    assert depth.min() >= 0 and depth.max() > 9


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "I;16", "F", "CMYK"])
def test_any_image_mode_becomes_rgb(mode):
    image = Image.new("RGB", (7, 5), (10, 20, 30)).convert(mode)
    rgb = image_to_rgb_array(image)
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8 and rgb.flags.writeable


def test_unusable_images_raise_image_error():
    with pytest.raises(ImageError, match="empty"):
        image_to_rgb_array(Image.new("RGB", (0, 10)))
    with pytest.raises(ImageError, match="PIL image"):
        image_to_rgb_array(np.zeros((4, 4, 3), dtype=np.uint8))
