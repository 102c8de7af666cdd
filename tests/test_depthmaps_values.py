"""Depth-map values: reading your own map, normalisation, adjustments, preview files, conditioning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lib_depth2img.depthmaps.values import (
    apply_adjustments,
    depth_conditioning,
    depth_to_16bit,
    depth_to_preview,
    gaussian_blur,
    load_depth_map,
    normalize_depth,
    sequence_range,
)
from lib_depth2img.errors import ImageError, SettingsError
from lib_depth2img.settings import DepthAdjustments

RAMP = np.linspace(0.0, 1.0, 11, dtype=np.float32)[None, :]  # one row, 0.0, 0.1 ... 1.0


# -- reading your own depth map -------------------------------------------------------------------


def test_one_pixel_depth_map_works(save_image):
    assert load_depth_map(save_image("dot16.png", np.full((1, 1), 65535, np.uint16))).tolist() == [[1.0]]


def test_8bit_depth_map_is_divided_by_255(save_image):
    path = save_image("depth.png", np.array([[0, 51, 255]], np.uint8))
    depth = load_depth_map(path)
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, [[0.0, 0.2, 1.0]], atol=1e-6)


def test_16bit_depth_map_keeps_16bit_precision(save_image):
    levels = np.array([[0, 1, 2, 65534, 65535]], np.uint16)
    depth = load_depth_map(save_image("depth16.png", levels))
    np.testing.assert_allclose(depth * 65535, levels, atol=1e-2)
    assert len(np.unique(depth)) == 5  # neighbouring 16-bit levels stay apart


def test_32bit_integer_depth_map(save_image):
    sixteen_bit_range = Image.fromarray(np.array([[0, 32768, 65535]], np.int32), mode="I")
    np.testing.assert_allclose(load_depth_map(sixteen_bit_range), [[0, 32768 / 65535, 1]], atol=1e-6)
    wide_range = Image.fromarray(np.array([[-100, 0, 100]], np.int32), mode="I")
    np.testing.assert_allclose(load_depth_map(wide_range), [[0, 0.5, 1]], atol=1e-6)


def test_float_tiff_depth_map(save_image):
    unit = np.array([[0.0, 0.25, 1.0]], np.float32)
    np.testing.assert_allclose(load_depth_map(save_image("unit.tif", Image.fromarray(unit, "F"))), unit)
    metres = np.array([[2.0, 4.0, 10.0]], np.float32)
    np.testing.assert_allclose(
        load_depth_map(save_image("metres.tif", Image.fromarray(metres, "F"))), [[0.0, 0.25, 1.0]]
    )
    broken = np.array([[0.0, np.inf]], np.float32)
    with pytest.raises(ImageError, match="NaN or infinite"):
        load_depth_map(save_image("inf.tif", Image.fromarray(broken, "F")))


def test_colour_depth_maps_use_luma_in_float(save_image):
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 10, 10]]], np.uint8)
    expected = [[0.299, 0.587, 0.114, 10 / 255]]
    np.testing.assert_allclose(load_depth_map(save_image("rgb.png", rgb)), expected, atol=1e-5)
    rgba = np.concatenate([rgb, np.zeros((1, 4, 1), np.uint8)], axis=2)  # alpha is ignored
    np.testing.assert_allclose(load_depth_map(save_image("rgba.png", rgba)), expected, atol=1e-5)


def test_bilevel_depth_map_is_zero_or_one():
    bilevel = Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1")
    np.testing.assert_array_equal(load_depth_map(bilevel), [[0.0, 1.0]])


def test_palette_depth_map_uses_its_palette_colours(save_image):
    palette_image = Image.fromarray(np.array([[0, 1]], np.uint8), mode="P")
    palette_image.putpalette([255, 255, 255, 0, 0, 0])  # index 0 is white, index 1 black
    np.testing.assert_allclose(load_depth_map(save_image("palette.png", palette_image)), [[1.0, 0.0]])


def test_depth_map_errors_name_the_file(tmp_path):
    with pytest.raises(ImageError, match=r"gone\.png: file not found"):
        load_depth_map(tmp_path / "gone.png")
    with pytest.raises(ImageError, match=r"^your map: the file is empty"):
        load_depth_map(b"", name="your map")


# -- normalisation -------------------------------------------------------------------------------


def test_normalize_maps_min_to_far_and_max_to_near():
    depth = normalize_depth(np.array([[100.0, 350.0, 600.0]]))
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, [[0.0, 0.5, 1.0]])


def test_normalize_with_a_fixed_range_clips_outside_it():
    np.testing.assert_allclose(
        normalize_depth(np.array([[0.0, 5.0, 20.0]]), range=(0.0, 10.0)), [[0.0, 0.5, 1.0]]
    )


def test_flat_map_normalises_to_all_far():
    depth = normalize_depth(np.full((4, 4), 3.0))
    assert np.isfinite(depth).all() and (depth == 0).all()


def test_sequence_range_spans_every_frame():
    frames = [np.array([[2.0, 5.0]]), np.array([[1.0, 4.0]]), np.array([[3.0, 9.0]])]
    assert sequence_range(frames) == (1.0, 9.0)
    normalised = [normalize_depth(frame, range=sequence_range(frames)) for frame in frames]
    assert normalised[0][0, 1] == pytest.approx(0.5)  # 5 is half way in 1..9 in every frame


# -- adjustments ---------------------------------------------------------------------------------


def test_identity_adjustments_change_nothing():
    np.testing.assert_array_equal(apply_adjustments(RAMP, DepthAdjustments()), RAMP)


def test_invert_swaps_near_and_far():
    np.testing.assert_allclose(
        apply_adjustments(RAMP, DepthAdjustments(invert=True)), RAMP[:, ::-1], atol=1e-6
    )


def test_clip_flattens_outside_and_renormalises_inside():
    clipped = apply_adjustments(RAMP, DepthAdjustments(far_clip=0.2, near_clip=0.6))
    np.testing.assert_allclose(clipped, [[0, 0, 0, 0.25, 0.5, 0.75, 1, 1, 1, 1, 1]], atol=1e-6)


def test_gamma_below_one_spreads_the_far_range():
    adjusted = apply_adjustments(RAMP, DepthAdjustments(gamma=0.5))
    np.testing.assert_allclose(adjusted, np.sqrt(RAMP), atol=1e-6)
    assert adjusted[0, 1] - adjusted[0, 0] > 0.3  # the farthest tenth now covers a third


def test_adjustments_apply_in_the_documented_order():
    # invert first (0.3 -> 0.7), then clip [0.5, 0.9] (-> 0.5), then gamma 2 (-> 0.25)
    adjusted = apply_adjustments(
        np.array([[0.3]], np.float32), DepthAdjustments(invert=True, far_clip=0.5, near_clip=0.9, gamma=2.0)
    )
    assert adjusted[0, 0] == pytest.approx(0.25)


def test_adjustments_stay_in_float():
    close_levels = np.array([[0.5, 0.5 + 1e-4]], np.float32)  # the same 8-bit level
    adjusted = apply_adjustments(close_levels, DepthAdjustments(far_clip=0.1, near_clip=0.9, gamma=1.5))
    assert adjusted.dtype == np.float32 and adjusted[0, 1] > adjusted[0, 0]


def test_clip_bounds_in_the_wrong_order_are_a_settings_error():
    with pytest.raises(SettingsError, match=r"far clip \(0\.7\) must be below near clip \(0\.3\)"):
        DepthAdjustments(far_clip=0.7, near_clip=0.3)


def test_blur_softens_an_edge_and_keeps_borders_and_mean():
    step = np.zeros((32, 32), np.float32)
    step[:, 16:] = 1.0
    blurred = apply_adjustments(step, DepthAdjustments(blur=2.0))
    assert blurred.dtype == np.float32 and blurred.shape == step.shape
    assert 0.3 < blurred[0, 15] < 0.5 < blurred[0, 16] < 0.7  # the edge becomes a ramp ...
    assert blurred[:, 0].max() < 1e-6 and blurred[:, -1].min() > 1 - 1e-6  # ... borders keep their value
    assert blurred.mean() == pytest.approx(0.5, abs=1e-5)
    np.testing.assert_allclose(gaussian_blur(np.full((5, 7), 0.4, np.float32), 3.0), 0.4, atol=1e-6)


def test_blur_radius_is_the_standard_deviation_in_pixels():
    dot = np.zeros((41, 41), np.float32)
    dot[20, 20] = 1.0
    profile = gaussian_blur(dot, 4.0)[20]
    np.testing.assert_allclose(profile[24] / profile[20], np.exp(-0.5), rtol=1e-3)  # one sigma away


# -- preview images ------------------------------------------------------------------------------


def test_preview_is_8bit_gray_white_near():
    preview = depth_to_preview(RAMP)
    assert preview.mode == "L" and preview.size == (11, 1)
    assert [preview.getpixel((x, 0)) for x in (0, 5, 10)] == [0, 128, 255]


def test_16bit_png_round_trips_with_16bit_precision(tmp_path):
    depth = np.array([[0.0, 1 / 65535, 0.5, 1.0]], np.float32)
    image = depth_to_16bit(depth)
    assert image.mode == "I;16"
    image.save(tmp_path / "depth.png")
    with Image.open(tmp_path / "depth.png") as saved:
        assert saved.mode in ("I;16", "I")
    np.testing.assert_allclose(load_depth_map(tmp_path / "depth.png"), depth, atol=1 / 65535 / 2)


# -- conditioning --------------------------------------------------------------------------------


def test_conditioning_shape_dtype_and_per_sample_range():
    near_ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (48, 1))
    far_scale = near_ramp * 1000.0 + 50.0  # another scale entirely, same shape of scene
    conditioning = depth_conditioning([near_ramp, far_scale], (6, 8), dtype=torch.float16, device="cpu")
    assert conditioning.shape == (2, 1, 6, 8) and conditioning.dtype == torch.float16
    for sample in conditioning.float():
        # max is 0.998 (the epsilon), rounded to float16
        assert sample.min() == pytest.approx(-1.0) and sample.max() == pytest.approx(1.0, abs=3e-3)
    # the scale is gone; only the 0.001 epsilon (relative to a range of 1 vs 1000) tells them apart
    torch.testing.assert_close(conditioning[0], conditioning[1], atol=3e-3, rtol=0)


def test_conditioning_uses_the_training_formula():
    depth = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)  # already at latent size: no resampling
    conditioning = depth_conditioning([depth], (2, 2))
    expected = 2 * (depth - 0.0) / (1.0 - 0.0 + 0.001) - 1
    np.testing.assert_allclose(conditioning[0, 0].numpy(), expected, atol=1e-6)


def test_flat_map_conditioning_is_exactly_minus_one():
    conditioning = depth_conditioning([np.full((40, 40), 0.3, np.float32)], (5, 5))
    assert torch.isfinite(conditioning).all()
    assert (conditioning == -1.0).all()


@pytest.mark.filterwarnings("error")
def test_read_only_maps_are_accepted_without_warnings():
    depth = np.random.default_rng(2).random((16, 16), dtype=np.float32)
    depth.setflags(write=False)  # as depth_source and the cache hand them out
    assert depth_conditioning([depth], (2, 2)).shape == (1, 1, 2, 2)
    assert apply_adjustments(depth, DepthAdjustments(blur=1.0)).flags.writeable


def test_conditioning_resizes_maps_of_any_size_to_the_latent_size():
    maps = [np.random.default_rng(1).random((h, w), dtype=np.float32) for h, w in [(64, 64), (30, 50)]]
    assert depth_conditioning(maps, (8, 8)).shape == (2, 1, 8, 8)
