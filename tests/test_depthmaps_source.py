"""Where depth comes from: own map, cache or estimator; each distinct image estimated once."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lib_depth2img.depthmaps.cache import DepthCache
from lib_depth2img.depthmaps.geometry import Geometry, fit_image
from lib_depth2img.depthmaps.source import DepthOrigin, depth_for_images, estimate_raw_depths
from lib_depth2img.depthmaps.values import sequence_range
from lib_depth2img.errors import SettingsError
from lib_depth2img.settings import Depth2imgArgs

SETTINGS = Depth2imgArgs(enabled=True)


def must_not_load():
    raise AssertionError("the estimator was loaded although the user gave a depth map")


def test_estimated_depth_is_normalised_at_the_image_size(gradient_image, counting_estimator):
    result = depth_for_images([gradient_image], SETTINGS, lambda: counting_estimator)[0]
    assert result.origin is DepthOrigin.ESTIMATOR
    assert result.depth.shape == (48, 64) and result.depth.dtype == np.float32
    assert result.depth[:, 0].max() == 0.0 and result.depth[:, -1].min() == 1.0  # dark = far, bright = near
    assert not result.depth.flags.writeable


def test_adjustments_apply_to_the_estimate(gradient_image, counting_estimator):
    inverted = depth_for_images([gradient_image], Depth2imgArgs(invert=True), lambda: counting_estimator)[0]
    assert inverted.depth[0, 0] == 1.0 and inverted.depth[0, -1] == 0.0


def test_second_request_comes_from_the_cache(gradient_image, counting_estimator):
    cache = DepthCache()
    first = depth_for_images([gradient_image], SETTINGS, lambda: counting_estimator, cache)[0]
    again = depth_for_images([gradient_image.copy()], SETTINGS, lambda: counting_estimator, cache)[0]
    assert (first.origin, again.origin) == (DepthOrigin.ESTIMATOR, DepthOrigin.CACHE)
    assert counting_estimator.calls == 1
    np.testing.assert_array_equal(first.depth, again.depth)


def test_a_batch_of_copies_is_estimated_once(gradient_image, counting_estimator):
    batch = [gradient_image.copy() for _ in range(4)]  # what A1111 hands over: copies of one image
    results = depth_for_images(batch, SETTINGS, lambda: counting_estimator)
    assert counting_estimator.calls == 1
    assert len(results) == 4 and all(result.depth is results[0].depth for result in results)


def test_distinct_images_are_each_estimated(gradient_image, counting_estimator):
    mirrored = gradient_image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    results = depth_for_images(
        [gradient_image, mirrored, gradient_image], SETTINGS, lambda: counting_estimator
    )
    assert counting_estimator.calls == 2
    assert results[0].depth[0, 0] == 0.0 and results[1].depth[0, 0] == 1.0
    assert results[2].depth is results[0].depth


def test_resolution_setting_reaches_the_estimator_and_the_cache_key(gradient_image, counting_estimator):
    cache = DepthCache()
    depth_for_images([gradient_image], SETTINGS, lambda: counting_estimator, cache)
    depth_for_images([gradient_image], Depth2imgArgs(net_size=512), lambda: counting_estimator, cache)
    assert counting_estimator.net_sizes == [384, 512]  # 0 means the estimator's own 384
    assert cache.misses == 2


def test_rgba_and_gray_init_images_are_estimated_as_rgb(counting_estimator):
    rgba = Image.new("RGBA", (8, 8), (200, 100, 0, 0))
    result = depth_for_images([rgba], SETTINGS, lambda: counting_estimator)[0]
    assert result.depth.shape == (8, 8)
    gray = Image.new("L", (8, 8), 3)
    assert depth_for_images([gray], SETTINGS, lambda: counting_estimator)[0].depth.shape == (8, 8)


def test_depth_is_estimated_on_the_pixels_the_model_sees(gradient_image, counting_estimator):
    geometry = Geometry(32, 32, 1)
    result = depth_for_images([gradient_image], SETTINGS, lambda: counting_estimator, geometry=geometry)[0]
    assert result.depth.shape == (32, 32)
    assert counting_estimator.images[-1].tobytes() == fit_image(gradient_image, geometry).tobytes()
    assert result.depth[:, 0].min() == 0.0 and result.depth[:, -1].max() == 1.0  # normalised after the crop


def test_a_host_gives_its_own_pixels(gradient_image, counting_estimator):
    seen = []

    def host_fit(image, geometry):
        seen.append(geometry)
        return image.resize(geometry.size)

    geometry = Geometry(40, 24, 2)
    depth_for_images([gradient_image], SETTINGS, lambda: counting_estimator, geometry=geometry, fit=host_fit)
    assert seen == [geometry] and counting_estimator.images[-1].size == (40, 24)


def test_own_map_is_used_without_loading_the_estimator(gradient_image, save_image):
    own = save_image("own.png", np.full((24, 32), 128, np.uint8))  # half the init size
    result = depth_for_images([gradient_image], Depth2imgArgs(depth_image=str(own)), must_not_load)[0]
    assert result.origin is DepthOrigin.OWN_MAP
    assert result.depth.shape == (48, 64)  # fitted to the init image
    np.testing.assert_allclose(result.depth, 128 / 255, atol=1e-6)  # its gray levels kept, not stretched


def test_own_map_gets_the_adjustments(gradient_image):
    own = Image.fromarray(np.array([[0, 255]], np.uint8))
    result = depth_for_images([None], Depth2imgArgs(depth_image=own, invert=True), None)[0]
    np.testing.assert_allclose(result.depth, [[1.0, 0.0]])


def test_own_map_without_init_image_keeps_its_size_or_takes_the_given_one():
    own = Image.new("L", (30, 20), 200)
    assert depth_for_images([None], Depth2imgArgs(depth_image=own), None)[0].depth.shape == (20, 30)
    sized = depth_for_images([None, None], Depth2imgArgs(depth_image=own), None, geometry=Geometry(64, 48))
    assert sized[0].depth.shape == (48, 64) and sized[1].depth is sized[0].depth


def test_own_map_follows_the_resize_mode_like_the_init_image():
    own = np.zeros((20, 40), np.uint8)
    own[:, 25:] = 255  # a near object covering the right 15 of 40 columns
    photo = Image.new("RGB", (80, 40))  # the map describes the photo, at half its resolution
    settings = Depth2imgArgs(depth_image=own)
    cropped = depth_for_images([photo], settings, None, geometry=Geometry(20, 20, 1))[0].depth
    assert cropped.shape == (20, 20)
    assert (cropped[:, 15:] == 1.0).all() and (cropped[:, :15] == 0.0).all()  # columns 10..29 kept
    stretched = depth_for_images([photo], settings, None, geometry=Geometry(20, 20, 0))[0].depth
    assert stretched[:, 14].mean() > 0.9 and stretched[:, 11].mean() < 0.1  # 25/40 of the width


def test_nothing_to_estimate_from_is_a_clear_error(counting_estimator):
    with pytest.raises(
        SettingsError, match="needs an init image to estimate depth from, or your own depth map"
    ):
        depth_for_images([None], SETTINGS, lambda: counting_estimator)
    with pytest.raises(SettingsError, match="no depth estimator"):
        depth_for_images([Image.new("RGB", (4, 4))], SETTINGS, None)


def test_a_sequence_shares_one_normalisation_range(counting_estimator):
    frames = [Image.new("RGB", (4, 4), (level, level, level)) for level in (50, 100, 200)]
    for frame, level in zip(frames, (50, 100, 200), strict=True):
        frame.putpixel((0, 0), (level // 2,) * 3)
    cache = DepthCache()
    raws = [raw for raw, _ in estimate_raw_depths(frames, counting_estimator, cache=cache)]
    low, high = sequence_range(raws)
    results = depth_for_images(
        frames, SETTINGS, lambda: counting_estimator, cache, normalize_range=(low, high)
    )
    assert counting_estimator.calls == 3 and {r.origin for r in results} == {DepthOrigin.CACHE}
    brightness = [float(result.depth[1, 1]) for result in results]
    assert brightness[0] < brightness[1] < brightness[2] == 1.0  # frames keep their relative depth
