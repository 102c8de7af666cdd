"""The generation geometry: A1111's resize modes and rounding, the pixels the model sees, own maps."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lib_depth2img.depthmaps.geometry import (
    Geometry,
    GeometryRequest,
    fit_image,
    fit_map,
    flatten,
    resize_geometry,
    resize_image,
)
from lib_depth2img.errors import SettingsError

RAMP = np.linspace(0.0, 1.0, 11, dtype=np.float32)[None, :]  # one row, 0.0, 0.1 ... 1.0


@pytest.mark.parametrize(
    "mode, source, target, expected",
    [
        (0, (40, 30), (64, 64), ((64, 64), (0, 0))),
        (3, (40, 30), (64, 64), ((64, 64), (0, 0))),
        # crop: scale so the frame is covered, rounded down as A1111 rounds, centre, cut the excess
        (1, (40, 30), (64, 64), ((85, 64), (-10, 0))),
        (1, (30, 40), (64, 64), ((64, 85), (0, -10))),
        (1, (4000, 3000), (512, 512), ((682, 512), (-85, 0))),
        # fill: scale so the image fits (floor), centre, fill the borders
        (2, (40, 30), (64, 64), ((64, 48), (0, 8))),
        (2, (30, 40), (64, 64), ((48, 64), (8, 0))),
        (2, (1000, 1), (64, 64), ((64, 1), (0, 32))),  # never scaled below one pixel
    ],
)
def test_resize_geometry_follows_a1111(mode, source, target, expected):
    assert resize_geometry(source, target, mode) == expected


def test_unknown_resize_mode_lists_the_known_ones():
    with pytest.raises(SettingsError, match=r"'resize_mode' \(Resize mode\) must be one of 0 \(Just resize\), .*got 7"):
        Geometry(20, 20, 7)


def photo(width: int = 40, height: int = 30) -> Image.Image:
    rng = np.random.default_rng(width * 1000 + height)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_just_resize_is_lanczos_to_the_size():
    image = photo()
    fitted = fit_image(image, Geometry(64, 48))
    assert fitted.size == (64, 48) and fitted.mode == "RGB"
    assert fitted.tobytes() == image.resize((64, 48), Image.Resampling.LANCZOS).tobytes()


def test_latent_upscale_stretches_the_pixels_like_just_resize():
    image = photo()
    assert fit_image(image, Geometry(64, 64, 3)).tobytes() == fit_image(image, Geometry(64, 64, 0)).tobytes()


def test_crop_and_resize_keeps_the_middle_of_the_pixels():
    image = photo(40, 20)
    fitted = fit_image(image, Geometry(20, 20, 1))
    expected = image.resize((40, 20), Image.Resampling.LANCZOS).crop((10, 0, 30, 20))
    assert fitted.tobytes() == expected.tobytes()


def test_resize_and_fill_leaves_the_odd_line_black_like_a1111():
    fitted = np.asarray(resize_image(2, photo(40, 20), 40, 41))
    assert fitted.shape == (41, 40, 3)
    assert (fitted[-1] == 0).all() and fitted[-2].any()  # 41 - 20 = 21 border rows: 10 + 10 + one black


def test_only_masked_crops_then_resizes_and_fills():
    image = photo(100, 80)
    fitted = fit_image(image, Geometry(64, 64, 1, crop=(10, 20, 50, 60)))
    expected = resize_image(2, image.crop((10, 20, 50, 60)), 64, 64)
    assert fitted.tobytes() == expected.tobytes()


def test_transparency_is_flattened_on_the_background():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert flatten(rgba).getpixel((0, 0)) == (255, 255, 255)
    assert flatten(rgba, "#000000").getpixel((0, 0)) == (0, 0, 0)


def test_a_host_resize_is_used_for_the_pixels():
    calls = []

    def host_resize(mode, image, width, height):
        calls.append((mode, image.size, width, height))
        return image.resize((width, height))

    fit_image(photo(), Geometry(32, 32, 1), resize=host_resize)
    fit_image(photo(100, 80), Geometry(32, 32, 0, crop=(0, 0, 50, 50)), resize=host_resize)
    assert calls == [(1, (40, 30), 32, 32), (2, (50, 50), 32, 32)]


def test_just_resize_stretches_a_map():
    stretched = fit_map(np.tile(RAMP, (5, 1)), Geometry(22, 10, 0))
    assert stretched.shape == (10, 22)
    assert stretched[:, 0].max() < 0.05 and stretched[:, -1].min() > 0.95


def test_crop_and_resize_keeps_the_middle_of_a_map():
    wide = np.tile(np.linspace(0, 1, 40, dtype=np.float32), (20, 1))  # 40 x 20, ramp left to right
    square = fit_map(wide, Geometry(20, 20, 1))
    assert square.shape == (20, 20)
    assert square[:, 0].mean() == pytest.approx(0.25, abs=0.03)  # the left quarter was cut off
    assert square[:, -1].mean() == pytest.approx(0.75, abs=0.03)


def test_resize_and_fill_repeats_the_edges_of_a_map_instead_of_black():
    wide = np.full((20, 40), 0.5, np.float32)
    wide[0], wide[-1] = 0.9, 0.7  # distinctive top and bottom rows
    square = fit_map(wide, Geometry(40, 41, 2))  # 41: an odd border, where A1111 leaves a black line
    assert square.shape == (41, 40)
    assert square.min() > 0.4  # nothing black: a black line would read as the farthest depth
    np.testing.assert_allclose(square[:10], 0.9, atol=1e-6)
    np.testing.assert_allclose(square[-10:], 0.7, atol=1e-6)


def test_a_map_follows_the_image_geometry_whatever_its_own_resolution():
    """A depth map rendered at half the photo's size lands where the photo's pixels land."""
    image_size = (80, 40)
    full = np.tile(np.linspace(0, 1, 80, dtype=np.float32), (40, 1))
    half = full[::2, ::2]
    geometry = Geometry(32, 32, 1)
    np.testing.assert_allclose(fit_map(half, geometry, image_size), fit_map(full, geometry, image_size), atol=0.03)


def test_only_masked_cuts_the_same_region_from_a_map_of_another_resolution():
    full = np.tile(np.linspace(0, 1, 100, dtype=np.float32), (80, 1))  # the photo is 100 x 80
    half = np.ascontiguousarray(full[::2, ::2])
    geometry = Geometry(32, 32, crop=(60, 0, 100, 40))  # the right 40 columns, top half
    fitted = fit_map(half, geometry, (100, 80))
    assert fitted.shape == (32, 32)
    assert fitted.min() > 0.55 and fitted.max() <= 1.0  # only values from x >= 60


def test_resizing_never_leaves_the_source_value_range():
    spikes = np.zeros((16, 16), np.float32)
    spikes[::2, ::2] = 1.0
    for mode in (0, 1, 2):
        resized = fit_map(spikes, Geometry(37, 23, mode))
        assert resized.min() >= 0.0 and resized.max() <= 1.0


def test_same_size_is_returned_unchanged():
    depth = np.random.default_rng(0).random((8, 6), dtype=np.float32)
    np.testing.assert_array_equal(fit_map(depth, Geometry(6, 8, 1)), depth)


def test_resize_by_takes_the_size_from_the_image_as_a1111_does():
    request = GeometryRequest(width=512, height=512, scale_by=0.35)
    assert request.size_for(photo(1001, 333)) == (350, 116)
    assert GeometryRequest(width=512, height=384).size_for(photo()) == (512, 384)
    with pytest.raises(SettingsError, match=r"'scale_by' \(Resize by\) must be a number of at least 0\.05, got nan"):
        GeometryRequest(width=8, height=8, scale_by=float("nan"))
