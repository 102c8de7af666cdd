"""DepthEstimator: depth maps of PIL images, batches, dtypes and devices, on tiny random weights."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from lib_depth2img.errors import ImageError, SettingsError
from lib_depth2img.estimators import DepthEstimator, build_dpt


@pytest.fixture(scope="module")
def state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_dpt("dpt_hybrid", tiny=True).state_dict()


@pytest.fixture(scope="module")
def weights_file(state_dict, tmp_path_factory) -> Path:
    """The seeded tiny network as a standalone MiDaS file, loaded the way users' files are."""
    path = tmp_path_factory.mktemp("weights") / "tiny-hybrid.safetensors"
    save_file(state_dict, str(path))
    return path


@pytest.fixture()
def estimator(weights_file) -> DepthEstimator:
    return DepthEstimator.from_file(weights_file)


def photo(width: int = 80, height: int = 48, seed: int = 0) -> Image.Image:
    """A smooth scene with an object, so depth maps have structure."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    scene = np.stack(
        [cols / width, rows / height, np.hypot(cols - width / 2, rows - height / 2) < height / 4], -1
    )
    noise = rng.normal(0, 0.05, scene.shape)
    return Image.fromarray((np.clip(scene + noise, 0, 1) * 255).astype(np.uint8))


@pytest.mark.parametrize("size", [(80, 48), (33, 97), (64, 64), (1, 1)])
def test_depth_map_has_the_image_size_and_is_float32_non_negative_and_finite(estimator, size):
    depth = estimator.estimate(photo(*size))
    assert depth.shape == (size[1], size[0]) and depth.dtype == np.float32
    assert np.isfinite(depth).all() and depth.min() >= 0


def test_depth_map_follows_the_image(estimator):
    assert estimator.estimate(photo()).std() > 0
    assert not np.allclose(estimator.estimate(photo(seed=0)), estimator.estimate(photo(seed=1)))


def test_estimate_is_deterministic(estimator):
    np.testing.assert_array_equal(estimator.estimate(photo()), estimator.estimate(photo()))


def test_net_size_can_be_overridden_and_is_checked(estimator):
    batches = []
    estimator.model.register_forward_pre_hook(lambda module, args: batches.append(tuple(args[0].shape[-2:])))
    assert estimator.estimate(photo(160, 96), net_size=128).shape == (96, 160)
    assert batches == [
        (64, 128)
    ]  # scale 128/160 = 0.8 is closer to 1 than 128/96: width 128, height 76.8 -> 64
    for bad in (31, 64.0, True, "384"):
        with pytest.raises(SettingsError, match="net size"):
            estimator.estimate(photo(), net_size=bad)
    assert estimator.checked_net_size(0) == estimator.checked_net_size(None) == estimator.net_size


def test_each_estimator_bounds_its_resolution_with_a_clear_message(estimator):
    limit = estimator.spec.max_net_size
    assert estimator.checked_net_size(limit) == limit
    with pytest.raises(SettingsError, match=f"dpt_hybrid estimator runs at up to {limit} px .* got an estimator "
                                            f"resolution of {limit + 32}"):
        estimator.estimate(photo(), net_size=limit + 32)


def test_progress_is_reported_per_transformer_block_and_can_stop_the_estimate(estimator):
    reports = []
    estimator.estimate(photo(), progress=lambda done, total: reports.append((done, total)))
    blocks = len(estimator.model.pretrained.model.blocks)
    assert reports == [(done, blocks) for done in range(1, blocks + 1)]

    class Stop(Exception):
        pass

    def stop(done, total):
        raise Stop

    with pytest.raises(Stop):
        estimator.estimate(photo(), progress=stop)
    assert estimator.estimate(photo()).shape == (48, 80)  # no hook left behind


def test_a_photo_far_larger_than_the_network_is_shrunk_without_aliasing(estimator):
    """A fine stripe pattern (2 px period) averages to flat gray once filtered; a bare bicubic
    shrink by 10x would sample it into strong false stripes."""
    stripes = np.zeros((480, 800, 3), np.uint8)
    stripes[:, ::2] = 255
    inputs = []
    estimator.model.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    estimator.estimate(Image.fromarray(stripes))
    assert float(inputs[0].std()) < 0.05


def test_mixed_image_modes(estimator):
    for mode in ("RGBA", "L", "P"):
        assert estimator.estimate(photo().convert(mode)).shape == (48, 80)
    with pytest.raises(ImageError):
        estimator.estimate(Image.new("RGB", (0, 0)))


def test_bfloat16_network_returns_float32_close_to_float32(weights_file, estimator):
    low = DepthEstimator.from_file(weights_file, dtype=torch.bfloat16)
    assert low.dtype == torch.bfloat16 and all(p.dtype == torch.bfloat16 for p in low.model.parameters())
    depth_low, depth = low.estimate(photo()), estimator.estimate(photo())
    assert depth_low.dtype == np.float32
    assert np.corrcoef(depth_low.ravel(), depth.ravel())[0, 1] > 0.95


def test_to_moves_the_network_and_returns_the_estimator(estimator):
    assert estimator.to("cpu") is estimator
    assert estimator.device == torch.device("cpu")
    assert estimator.to(torch.device("meta")).device.type == "meta"


def test_estimate_builds_no_autograd_graph(estimator):
    outputs = []
    estimator.model.register_forward_hook(lambda module, args, output: outputs.append(output))
    estimator.estimate(photo())
    assert outputs[0].is_inference() and not outputs[0].requires_grad
