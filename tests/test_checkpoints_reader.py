"""The one checkpoint reader: the same names and tensors from every format, key names without tensors."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lib_depth2img.checkpoints.reader import open_checkpoint, read_keys
from lib_depth2img.engine import load_checkpoint, write_demo_checkpoint
from lib_depth2img.errors import WeightsError

STATE = {"model.diffusion_model.a": torch.arange(6.0).reshape(2, 3), "depth_model.model.b": torch.ones(4)}


def write(path: Path) -> Path:
    """`STATE` as `.safetensors`, a zip `.ckpt` (Lightning-wrapped) or a legacy pre-zip `.ckpt`."""
    if path.suffix == ".safetensors":
        save_file(STATE, str(path), metadata={"note": "hi"})
    else:
        wrapped = {"state_dict": STATE, "note": "hi", "global_step": 7}
        torch.save(wrapped, path, _use_new_zipfile_serialization="legacy" not in path.name)
    return path


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("m.safetensors", "safetensors"), ("m.ckpt", "torch-zip"), ("m-legacy.ckpt", "torch-legacy")],
)
def test_every_format_gives_the_same_keys_tensors_and_metadata(tmp_path, name, fmt):
    path = write(tmp_path / name)
    assert read_keys(path) == (fmt, set(STATE))
    checkpoint = open_checkpoint(path)
    assert checkpoint.shapes == {"model.diffusion_model.a": (2, 3), "depth_model.model.b": (4,)}
    assert checkpoint.metadata == {"note": "hi"}
    assert all(torch.equal(checkpoint.tensor(key), value) for key, value in STATE.items())


def test_a_legacy_ckpt_loads_in_the_engine(tmp_path):
    """Legacy (pre-zip) files cannot be memory-mapped; the reader reads them whole instead."""
    demo = write_demo_checkpoint(tmp_path / "demo.ckpt")
    legacy = tmp_path / "demo-legacy.ckpt"
    torch.save(torch.load(demo, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    assert read_keys(legacy)[0] == "torch-legacy"
    model, depth = load_checkpoint(legacy)
    assert model.is_demo and depth.name == "dpt_hybrid"


def test_format_comes_from_the_bytes_not_the_name(tmp_path):
    misnamed = write(tmp_path / "m.safetensors").rename(tmp_path / "really-safetensors.ckpt")
    assert open_checkpoint(misnamed).metadata == {"note": "hi"}
    other = tmp_path / "model.bin"
    other.write_bytes(b"x" * 20)
    with pytest.raises(WeightsError, match="model.bin: unknown checkpoint type"):
        open_checkpoint(other)
