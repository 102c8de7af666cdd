"""Loading SD2-depth checkpoints: the demo files this project writes, and every way a file can be wrong."""

import builtins
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lib_depth2img.engine import TINY, build_model, load_checkpoint, write_demo_checkpoint
from lib_depth2img.errors import WeightsError
from lib_depth2img.estimators import DepthEstimator

UNET_CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("checkpoints")
    write_demo_checkpoint(folder / "demo.safetensors", seed=0)
    write_demo_checkpoint(folder / "demo.ckpt", seed=0)
    return folder


@pytest.fixture(scope="module")
def demo_state(demo_dir) -> dict[str, torch.Tensor]:
    return load_file(demo_dir / "demo.safetensors")


def write_variant(folder: Path, name: str, state: dict[str, torch.Tensor]) -> Path:
    path = folder / name
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"state_dict": state}, path)
    return path


@pytest.mark.parametrize("name", ["demo.safetensors", "demo.ckpt"])
def test_demo_checkpoint_loads_strictly_with_its_depth_estimator(demo_dir, demo_state, name):
    model, depth = load_checkpoint(demo_dir / name)
    assert model.config == TINY
    assert model.is_demo
    assert isinstance(depth, DepthEstimator)
    state = model.state_dict()
    non_depth = {k: v for k, v in demo_state.items() if not k.startswith("depth_model.")}
    assert state.keys() == non_depth.keys()
    assert all(torch.equal(state[k], non_depth[k]) for k in state)
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.training
    eps = model.predict_noise(
        torch.randn(1, 4, 8, 8), 500, model.encode_prompts(["a"]), torch.zeros(1, 1, 8, 8)
    )
    assert torch.isfinite(eps).all()


def test_demo_weights_depend_only_on_the_seed(demo_dir, demo_state, tmp_path):
    again = load_file(write_demo_checkpoint(tmp_path / "again.safetensors", seed=0))
    other = load_file(write_demo_checkpoint(tmp_path / "other.safetensors", seed=1))
    assert all(torch.equal(again[k], demo_state[k]) for k in demo_state)
    assert not torch.equal(other[UNET_CONV_IN], demo_state[UNET_CONV_IN])


def test_a_bare_state_dict_without_the_wrapper_loads_too(demo_state, tmp_path):
    path = tmp_path / "bare.ckpt"
    torch.save(demo_state, path)
    model, _ = load_checkpoint(path)
    assert not model.is_demo  # the demo mark lives beside the state dict


def test_half_precision_file_loads_as_float32(demo_state, tmp_path):
    half = {k: v.half() for k, v in demo_state.items()}
    for suffix in (".safetensors", ".ckpt"):
        model, _ = load_checkpoint(write_variant(tmp_path, "half" + suffix, half))
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        assert torch.equal(model.state_dict()[UNET_CONV_IN], half[UNET_CONV_IN].float())


def test_missing_key_is_named(demo_state, tmp_path):
    state = dict(demo_state)
    del state["model.diffusion_model.middle_block.1.norm.bias"]
    with pytest.raises(
        WeightsError, match=r"missing\.safetensors.*missing keys 1: model\.diffusion_model\.middle"
    ):
        load_checkpoint(write_variant(tmp_path, "missing.safetensors", state))


def test_many_missing_keys_are_counted_not_all_listed(demo_state, tmp_path):
    state = {k: v for k, v in demo_state.items() if "first_stage_model.decoder.up" not in k}
    with pytest.raises(WeightsError, match=r"missing keys \d+: .*more\)") as error:
        load_checkpoint(write_variant(tmp_path, "no_decoder.ckpt", state))
    assert str(error.value).count("first_stage_model.decoder.up") == 5


def test_unexpected_key_is_named(demo_state, tmp_path):
    state = dict(demo_state, **{"model.diffusion_model.extra.weight": torch.zeros(3)})
    with pytest.raises(WeightsError, match=r"unexpected keys 1: model\.diffusion_model\.extra\.weight"):
        load_checkpoint(write_variant(tmp_path, "unexpected.ckpt", state))


def test_wrong_shape_is_named(demo_state, tmp_path):
    name = "first_stage_model.quant_conv.bias"
    state = dict(demo_state, **{name: torch.zeros(5)})
    with pytest.raises(
        WeightsError, match=r"wrong shape 1: first_stage_model\.quant_conv\.bias \(5,\) \(expected \(8,\)\)"
    ):
        load_checkpoint(write_variant(tmp_path, "shape.safetensors", state))


def test_foreign_noise_schedule_is_refused(demo_state, tmp_path):
    state = dict(demo_state, betas=torch.linspace(1e-4, 2e-2, 1000))
    with pytest.raises(WeightsError, match="noise schedule"):
        load_checkpoint(write_variant(tmp_path, "schedule.safetensors", state))


def test_broken_depth_part_is_refused(demo_state, tmp_path):
    state = dict(demo_state)
    del state[next(k for k in state if k.startswith("depth_model.model.scratch."))]
    with pytest.raises(WeightsError):
        load_checkpoint(write_variant(tmp_path, "depth.safetensors", state))


@pytest.mark.parametrize("name", ["demo.safetensors", "demo.ckpt"])
def test_truncated_file_is_reported_as_damaged(demo_dir, tmp_path, name):
    data = (demo_dir / name).read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=f"{name} could not be read.*truncated or damaged"):
        load_checkpoint(path)


def test_garbage_file_is_reported_as_damaged(tmp_path):
    path = tmp_path / "garbage.ckpt"
    path.write_bytes(b"not a checkpoint at all" * 100)
    with pytest.raises(WeightsError, match="garbage.ckpt: unknown checkpoint type"):
        load_checkpoint(path)


def sd_txt2img_state(context_dim: int) -> dict[str, torch.Tensor]:
    """The telling tensors of a plain (non-depth) SD checkpoint: 4 input channels, no depth net."""
    return {
        UNET_CONV_IN: torch.zeros(320, 4, 3, 3),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(
            320, context_dim
        ),
        "first_stage_model.quant_conv.weight": torch.zeros(8, 8, 1, 1),
    }


@pytest.mark.parametrize(
    "context_dim, family", [(768, "Stable Diffusion 1.x"), (1024, "Stable Diffusion 2.x")]
)
def test_plain_sd_checkpoint_is_not_a_depth_checkpoint(tmp_path, context_dim, family):
    path = write_variant(tmp_path, "v1-5-pruned.safetensors", sd_txt2img_state(context_dim))
    with pytest.raises(WeightsError, match="v1-5-pruned.safetensors is not a depth checkpoint") as error:
        load_checkpoint(path)
    for part in ("4 input channels", "text-to-image", family, "512-depth-ema"):
        assert part in str(error.value)


def test_inpainting_checkpoint_is_not_a_depth_checkpoint(tmp_path):
    state = dict(sd_txt2img_state(768), **{UNET_CONV_IN: torch.zeros(320, 9, 3, 3)})
    with pytest.raises(WeightsError, match="not a depth checkpoint.*inpainting"):
        load_checkpoint(write_variant(tmp_path, "inpaint.ckpt", state))


def test_depth_unet_without_depth_net_is_incomplete(demo_state, tmp_path):
    state = {k: v for k, v in demo_state.items() if not k.startswith("depth_model.")}
    with pytest.raises(WeightsError, match="no depth-estimator weights"):
        load_checkpoint(write_variant(tmp_path, "nodepth.safetensors", state))


def test_file_without_a_unet_is_not_stable_diffusion(tmp_path):
    path = write_variant(tmp_path, "vae.safetensors", {"encoder.conv_in.weight": torch.zeros(128, 3, 3, 3)})
    with pytest.raises(WeightsError, match="not a Stable Diffusion checkpoint"):
        load_checkpoint(path)


class RunsCodeWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_pickle_that_runs_code_is_refused_without_running_it(demo_state, tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": demo_state, "callback": RunsCodeWhenUnpickled(marker)}, path)
    with pytest.raises(WeightsError, match="evil.ckpt was refused.*exec.*run code"):
        load_checkpoint(path)
    assert not marker.exists()


def test_missing_file_and_unknown_type_are_reported(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_checkpoint(tmp_path / "absent.safetensors")
    other = tmp_path / "model.bin"
    other.write_bytes(b"x")
    with pytest.raises(WeightsError, match="unknown checkpoint type"):
        load_checkpoint(other)


def test_demo_writer_refuses_other_suffixes(tmp_path):
    with pytest.raises(ValueError, match="safetensors or .ckpt"):
        write_demo_checkpoint(tmp_path / "demo.bin")


def test_loading_does_not_keep_meta_tensors(demo_dir):
    model, _ = load_checkpoint(demo_dir / "demo.safetensors")
    assert all(t.device.type == "cpu" for t in list(model.parameters()) + list(model.buffers()))
    assert build_model(TINY, device="meta").unet.out[2].weight.is_meta
