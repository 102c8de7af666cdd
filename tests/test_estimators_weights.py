"""Loading depth weights the way users have them, strictly, and refusing everything else clearly."""

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from lib_depth2img.errors import WeightsError
from lib_depth2img.estimators import (
    DepthEstimator,
    build_dpt,
    load_depth_state_dict,
    weights_id,
    write_tiny_depth_weights,
)
from lib_depth2img.estimators.beit import relative_position_index

SD_PREFIX = "depth_model.model."


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    """Tiny hybrid weights (seed 0) in every form users have them."""
    folder = tmp_path_factory.mktemp("depth-weights")
    write_tiny_depth_weights(folder / "sd-depth.ckpt")
    write_tiny_depth_weights(folder / "sd-depth.safetensors")
    write_tiny_depth_weights(folder / "midas.pt", prefix="")
    write_tiny_depth_weights(folder / "midas.safetensors", prefix="")
    state_dict = torch.load(folder / "midas.pt", weights_only=True)
    torch.save(
        {"model": state_dict, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5}]}},
        folder / "midas-opt.pt",
    )
    torch.save(state_dict, folder / "midas-legacy.pt", _use_new_zipfile_serialization=False)
    return folder


@pytest.fixture(scope="module")
def tiny_state_dict(weights_dir) -> dict[str, torch.Tensor]:
    return torch.load(weights_dir / "midas.pt", weights_only=True)


def image() -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8))


FORMS = [
    "sd-depth.ckpt",
    "sd-depth.safetensors",
    "midas.pt",
    "midas.safetensors",
    "midas-opt.pt",
    "midas-legacy.pt",
]


@pytest.mark.parametrize("file_name", FORMS)
def test_every_form_loads_with_midas_names(weights_dir, tiny_state_dict, file_name):
    loaded = load_depth_state_dict(weights_dir / file_name)
    assert loaded.keys() == tiny_state_dict.keys()
    assert all(torch.equal(loaded[name], tiny_state_dict[name]) for name in loaded)


def test_every_form_gives_the_same_estimator(weights_dir):
    depths = [DepthEstimator.from_file(weights_dir / name).estimate(image()) for name in FORMS]
    for depth in depths[1:]:
        np.testing.assert_array_equal(depth, depths[0])


def test_written_tiny_weights_are_reproducible(tmp_path, weights_dir):
    write_tiny_depth_weights(tmp_path / "again.safetensors")
    again, first = load_file(tmp_path / "again.safetensors"), load_file(weights_dir / "sd-depth.safetensors")
    assert again.keys() == first.keys() and all(torch.equal(again[k], first[k]) for k in again)


def test_only_the_depth_tensors_of_an_sd_checkpoint_are_taken(tmp_path, tiny_state_dict):
    full_checkpoint = {SD_PREFIX + name: tensor for name, tensor in tiny_state_dict.items()}
    full_checkpoint["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(320, 5, 3, 3)
    full_checkpoint["first_stage_model.decoder.conv_in.weight"] = torch.zeros(512, 4, 3, 3)
    save_file(full_checkpoint, tmp_path / "sd.safetensors")
    torch.save({"state_dict": full_checkpoint, "global_step": 1}, tmp_path / "sd.ckpt")
    for path in (tmp_path / "sd.safetensors", tmp_path / "sd.ckpt"):
        assert load_depth_state_dict(path).keys() == tiny_state_dict.keys()


def test_ckpt_files_are_memory_mapped_and_weights_only(weights_dir, monkeypatch):
    calls = []
    real_load = torch.load

    def spying_load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spying_load)
    load_depth_state_dict(weights_dir / "sd-depth.ckpt")
    assert calls[0]["weights_only"] is True and calls[0]["mmap"] is True


def test_a_loaded_estimator_holds_exactly_the_file_weights(weights_dir, tiny_state_dict):
    estimator = DepthEstimator.from_file(weights_dir / "sd-depth.safetensors")
    loaded = estimator.model.state_dict()
    assert loaded.keys() == tiny_state_dict.keys()
    assert all(torch.equal(loaded[name], tiny_state_dict[name]) for name in loaded)
    assert not estimator.model.training and not any(p.requires_grad for p in estimator.model.parameters())
    assert (estimator.name, estimator.device, estimator.dtype) == (
        "dpt_hybrid",
        torch.device("cpu"),
        torch.float32,
    )
    assert estimator.tiny and estimator.net_size == 64  # tiny networks aim at the size they are built for


@pytest.mark.parametrize("name", ["dpt_large", "dpt_beit_large_512"])
def test_the_other_estimators_load_from_both_kinds_of_file(tmp_path, name):
    write_tiny_depth_weights(tmp_path / "sd.ckpt", name)
    write_tiny_depth_weights(tmp_path / "midas.safetensors", name, prefix="")
    first = DepthEstimator.from_file(tmp_path / "sd.ckpt", name).estimate(image())
    second = DepthEstimator.from_file(tmp_path / "midas.safetensors", name).estimate(image())
    np.testing.assert_array_equal(first, second)


def test_beit_files_from_timm_0_6_carry_position_indices_that_are_recomputed(tmp_path):
    write_tiny_depth_weights(tmp_path / "beit.pt", "dpt_beit_large_512", prefix="")
    state_dict = torch.load(tmp_path / "beit.pt", weights_only=True)
    for block in range(4):
        state_dict[f"pretrained.model.blocks.{block}.attn.relative_position_index"] = relative_position_index(
            (4, 4)
        )
    torch.save(state_dict, tmp_path / "beit-timm06.pt")
    estimator = DepthEstimator.from_file(tmp_path / "beit-timm06.pt", "dpt_beit_large_512")
    reference = DepthEstimator.from_file(tmp_path / "beit.pt", "dpt_beit_large_512")
    np.testing.assert_array_equal(estimator.estimate(image()), reference.estimate(image()))


def test_weights_id_names_the_estimator_and_changes_with_the_file(tmp_path):
    path = tmp_path / "w.safetensors"
    write_tiny_depth_weights(path)
    first = weights_id(path, "dpt_hybrid")
    assert first.startswith("dpt_hybrid:") and str(path.resolve()) in first
    assert weights_id(path, "dpt_large") != first
    time.sleep(0.01)
    write_tiny_depth_weights(path, "dpt_large")
    assert weights_id(path, "dpt_hybrid") != first
    assert DepthEstimator.from_file(path, "dpt_large").weights_id == weights_id(path, "dpt_large")


# -- refusals ---------------------------------------------------------------------------------


def test_missing_tensor(tmp_path, tiny_state_dict):
    broken = dict(tiny_state_dict)
    del broken["scratch.refinenet2.out_conv.bias"]
    torch.save(broken, tmp_path / "missing.pt")
    with pytest.raises(WeightsError, match=r"missing.pt.*missing 1: scratch\.refinenet2\.out_conv\.bias"):
        DepthEstimator.from_file(tmp_path / "missing.pt")


def test_unexpected_tensor(tmp_path, tiny_state_dict):
    save_file(tiny_state_dict | {"scratch.extra.weight": torch.zeros(3)}, tmp_path / "extra.safetensors")
    with pytest.raises(WeightsError, match=r"extra.safetensors.*unexpected 1: scratch\.extra\.weight"):
        DepthEstimator.from_file(tmp_path / "extra.safetensors")


def test_wrong_shape(tmp_path, tiny_state_dict):
    broken = dict(tiny_state_dict)
    broken["scratch.layer1_rn.weight"] = torch.zeros(32, 128, 1, 1)
    torch.save({"state_dict": {SD_PREFIX + k: v for k, v in broken.items()}}, tmp_path / "shape.ckpt")
    with pytest.raises(
        WeightsError,
        match=r"wrong shape 1: scratch\.layer1_rn\.weight is \(32, 128, 1, 1\), expected \(32, 128, 3, 3\)",
    ):
        DepthEstimator.from_file(tmp_path / "shape.ckpt")


def test_many_problems_are_summarised(tmp_path, tiny_state_dict):
    torch.save(
        {k: v for k, v in tiny_state_dict.items() if not k.startswith("scratch.")}, tmp_path / "half.pt"
    )
    with pytest.raises(WeightsError, match=r"missing \d+: .* and \d+ more"):
        DepthEstimator.from_file(tmp_path / "half.pt")


def test_weights_of_another_estimator_are_named(tmp_path):
    write_tiny_depth_weights(tmp_path / "large.ckpt", "dpt_large")
    with pytest.raises(WeightsError, match="weights for dpt_large; choose that estimator"):
        DepthEstimator.from_file(tmp_path / "large.ckpt", "dpt_hybrid")


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_truncated_file(tmp_path, weights_dir, suffix):
    whole = (weights_dir / f"sd-depth{suffix}").read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(WeightsError, match=rf"cut\{suffix}.*truncated or damaged"):
        DepthEstimator.from_file(tmp_path / f"cut{suffix}")


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_empty_file(tmp_path, suffix):
    (tmp_path / f"empty{suffix}").write_bytes(b"")
    with pytest.raises(WeightsError, match=r"empty \(0 bytes\)"):
        DepthEstimator.from_file(tmp_path / f"empty{suffix}")


def test_absent_file(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        DepthEstimator.from_file(tmp_path / "nothing.ckpt")


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_sd_checkpoint_without_depth_model(tmp_path, suffix):
    sd15 = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
        "first_stage_model.encoder.conv_in.weight": torch.zeros(128, 3, 3, 3),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.zeros(1, 77),
    }
    path = tmp_path / f"v1-5-pruned{suffix}"
    save_file(sd15, path) if suffix == ".safetensors" else torch.save({"state_dict": sd15}, path)
    with pytest.raises(
        WeightsError, match=r"no depth_model.* tensors.*not a depth checkpoint.*512-depth-ema"
    ):
        DepthEstimator.from_file(path)


def test_file_without_any_depth_model(tmp_path):
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match=r"holds no depth model.*encoder\.weight"):
        load_depth_state_dict(tmp_path / "other.pt")


class RunsAShellCommand:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_pickle_that_runs_code_is_refused_without_running_it(tmp_path, tiny_state_dict):
    marker = tmp_path / "pwned"
    payload = {SD_PREFIX + k: v for k, v in tiny_state_dict.items()} | {
        "callback": RunsAShellCommand(f"touch {marker}")
    }
    torch.save({"state_dict": payload}, tmp_path / "evil.ckpt")
    with pytest.raises(WeightsError, match=r"evil\.ckpt was refused.*could run code"):
        DepthEstimator.from_file(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_unknown_estimator_name():
    with pytest.raises(ValueError, match="dpt_hybrid, dpt_large, dpt_beit_large_512"):
        build_dpt("dpt_swin2")


def test_loading_does_not_go_through_a_replaced_module_load_state_dict(tmp_path, monkeypatch):
    """A1111 replaces `Module.load_state_dict` process-wide while it loads a checkpoint (with a
    function that takes no `assign`); a preview clicked meanwhile must still load its estimator."""
    path = tmp_path / "depth.safetensors"
    write_tiny_depth_weights(path)

    def replaced(*args, **kwargs):
        raise TypeError("load_state_dict() got an unexpected keyword argument 'assign'")

    monkeypatch.setattr(torch.nn.Module, "load_state_dict", replaced)
    estimator = DepthEstimator.from_file(path)
    assert not any(t.is_meta for t in estimator.model.state_dict().values())
    assert estimator.estimate(Image.new("RGB", (64, 48), (120, 80, 40))).shape == (48, 64)
