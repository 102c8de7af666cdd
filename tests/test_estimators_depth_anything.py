"""Depth Anything V1/V2: the released layout, timm's DINOv2, and numbers against the official code.

`data/depth_anything.layout.tsv` and `data/depth_anything_reference.npz` were written by
`data/make_depth_anything_reference.py` running the official code (see there): full-size networks
built on the meta device for the layout, and a small network with seeded random weights for the
numbers, on square and non-square inputs, on and off the stored position grid.
"""

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from support.seeded_weights import seeded_state_dict

from lib_depth2img.estimators import ESTIMATORS, DepthEstimator, build_dpt
from lib_depth2img.estimators.dinov2 import dinov2_position_embedding
from lib_depth2img.estimators.preprocess import net_input_size, to_network_input
from lib_depth2img.estimators.registry import resolution_note
from lib_depth2img.estimators.timm_parts import timm_parts

DATA = Path(__file__).parent / "data"
REFERENCE = np.load(DATA / "depth_anything_reference.npz")
NET_SIZES = {"square_stored_grid": 70, "square": 56, "wide": 42, "tall": 56}
"""The net size each reference image was prepared at (its `CASES` in the generating script)."""
FAMILIES = {"v2": "depth_anything_v2_vits", "v1": "depth_anything_vits"}
DEPTH_ANYTHING = [name for name in ESTIMATORS if name.startswith("depth_anything")]
RELATIVE_TOLERANCE = 1e-4


def relative_difference(ours: np.ndarray, reference: np.ndarray) -> float:
    assert ours.shape == reference.shape
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def official_layout() -> dict[str, dict[str, tuple[int, ...]]]:
    layout: dict[str, dict[str, tuple[int, ...]]] = {}
    for line in (DATA / "depth_anything.layout.tsv").read_text().splitlines():
        estimator, name, shape = line.split("\t")
        layout.setdefault(estimator, {})[name] = tuple(int(n) for n in shape.split(","))
    return layout


def shapes_of(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def reference_estimator(name: str) -> DepthEstimator:
    """The tiny network with the reference's seeded weights, given as the official state dict
    (mask token included), through the same loading path as a weights file."""
    shapes = shapes_of(build_dpt(name, device="meta", tiny=True))
    shapes["pretrained.mask_token"] = (1, shapes["pretrained.cls_token"][-1])
    weights = seeded_state_dict(shapes, int(REFERENCE["seed"]))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{name}.safetensors"
        save_file({key: tensor.contiguous() for key, tensor in weights.items()}, str(path))
        return DepthEstimator.from_file(path, name)


def test_every_estimator_has_the_official_tensors_minus_the_mask_token():
    layout = official_layout()
    assert sorted(layout) == sorted(DEPTH_ANYTHING)
    for name in DEPTH_ANYTHING:
        official = dict(layout[name])
        assert official.pop("pretrained.mask_token")
        assert shapes_of(build_dpt(name, device="meta")) == official, name
    assert {name: len(layout[name]) for name in ("depth_anything_v2_vits", "depth_anything_v2_vitl")} == {
        "depth_anything_v2_vits": 239,
        "depth_anything_v2_vitl": 407,
    }


@pytest.mark.parametrize("name", ["depth_anything_v2_vits", "depth_anything_v2_vitb", "depth_anything_v2_vitl"])
def test_the_encoder_is_timms_registered_dinov2(name):
    timm_parts()  # makes `import timm` safe
    import timm

    spec = ESTIMATORS[name]
    with torch.device("meta"):
        reference = timm.create_model(spec.timm_model, pretrained=False, dynamic_img_size=True, num_classes=0)
    ours = {key[len("pretrained.") :]: shape for key, shape in shapes_of(build_dpt(name, device="meta")).items()
            if key.startswith("pretrained.")}
    assert ours == shapes_of(reference)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("case", list(NET_SIZES))
def test_numbers_match_the_official_code(family, case):
    estimator = reference_estimator(FAMILIES[family])
    image = REFERENCE[f"image/{case}"]
    prepared = to_network_input(image, NET_SIZES[case], torch.device("cpu"), torch.float32, estimator.spec.input_rule)
    assert relative_difference(prepared[0].numpy(), REFERENCE[f"input/{case}"]) < RELATIVE_TOLERANCE
    with torch.inference_mode():
        raw = estimator.model(torch.from_numpy(REFERENCE[f"input/{case}"])[None])[0].numpy()
    assert relative_difference(raw, REFERENCE[f"{family}/{case}/raw"]) < RELATIVE_TOLERANCE
    depth = estimator.estimate(Image.fromarray(image), NET_SIZES[case])
    assert relative_difference(depth, REFERENCE[f"{family}/{case}/depth"]) < RELATIVE_TOLERANCE


def test_the_reference_tells_v1_from_v2_by_the_final_resize():
    assert relative_difference(REFERENCE["v1/wide/depth"], REFERENCE["v2/wide/depth"]) > 100 * RELATIVE_TOLERANCE


def test_position_embedding_is_resized_as_dinov2_does_not_as_timm_does():
    timm_parts()
    from timm.layers import resample_abs_pos_embed

    torch.manual_seed(0)
    stored = torch.randn(1, 1 + 37 * 37, 8)
    assert dinov2_position_embedding(stored, (37, 37)) is stored
    for grid in [(37, 52), (40, 40)]:
        ours = dinov2_position_embedding(stored, grid)
        assert ours.shape == (1, 1 + grid[0] * grid[1], 8)
        timms = resample_abs_pos_embed(stored, list(grid), num_prefix_tokens=1)
        assert (ours - timms).abs().max() > 0.05  # the difference the parity test depends on


@pytest.mark.parametrize(
    ("width", "height", "net_size", "expected"),
    [
        (1920, 1080, 518, (924, 518)),  # short side 518, long side a multiple of 14
        (1080, 1920, 518, (518, 924)),
        (640, 640, 518, (518, 518)),
        (512, 512, 512, (518, 518)),  # 512 is no multiple of 14: rounded up, never below
        (1000, 600, 510, (854, 518)),  # 36 x 14 = 504 would fall below 510
    ],
)
def test_depth_anything_sizes_follow_the_lower_bound_rule(width, height, net_size, expected):
    assert net_input_size(width, height, net_size, ESTIMATORS["depth_anything_v2_vits"].input_rule) == expected


def test_a_resolution_that_is_no_multiple_of_14_is_reported():
    assert resolution_note("depth_anything_v2_vitb", 512) == (
        "depth_anything_v2_vitb works at multiples of 14 px: resolution 512 is used as 518."
    )
    assert resolution_note("depth_anything_v2_vitb", 518) == ""
    assert resolution_note("dpt_hybrid", 384) == ""


def test_licences_are_those_of_the_released_weights():
    licences = {name: ESTIMATORS[name].licence for name in DEPTH_ANYTHING}
    assert licences["depth_anything_v2_vits"] == "Apache-2.0"
    assert "CC-BY-NC-4.0" in licences["depth_anything_v2_vitb"] and "CC-BY-NC-4.0" in licences["depth_anything_v2_vitl"]
    assert {licences[f"depth_anything_vit{size}"] for size in "sbl"} == {"Apache-2.0"}


def official_tiny_state_dict(name: str) -> dict[str, torch.Tensor]:
    return {key: tensor.contiguous() for key, tensor in reference_estimator(name).model.state_dict().items()} | {
        "pretrained.mask_token": torch.zeros(1, 64)
    }


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_official_files_load_strictly_with_their_mask_token(tmp_path, suffix):
    weights = official_tiny_state_dict("depth_anything_v2_vits")
    path = tmp_path / f"depth_anything_v2_vits{suffix}"
    if suffix == ".pth":
        torch.save(weights, path)
    else:
        save_file(weights, str(path))
    estimator = DepthEstimator.from_file(path, "depth_anything_v2_vits")
    assert estimator.tiny and estimator.net_size == 70
    expected = reference_estimator("depth_anything_v2_vits").estimate(Image.fromarray(REFERENCE["image/wide"]))
    assert np.array_equal(estimator.estimate(Image.fromarray(REFERENCE["image/wide"])), expected)


def test_a_truncated_file_names_the_missing_tensors(tmp_path):
    from lib_depth2img.errors import WeightsError

    weights = official_tiny_state_dict("depth_anything_v2_vits")
    del weights["depth_head.scratch.output_conv2.2.weight"], weights["depth_head.scratch.output_conv2.2.bias"]
    torch.save(weights, tmp_path / "cut.pth")
    with pytest.raises(WeightsError, match=r"missing 2: depth_head\.scratch\.output_conv2\.2\.weight"):
        DepthEstimator.from_file(tmp_path / "cut.pth", "depth_anything_v2_vits")


def test_depth_anything_weights_given_for_midas_say_which_estimators_they_fit(tmp_path):
    from lib_depth2img.errors import WeightsError

    torch.save(official_tiny_state_dict("depth_anything_v2_vits"), tmp_path / "da.pth")
    with pytest.raises(WeightsError, match="depth_anything_v2_vits or depth_anything_v2_vitb") as error:
        DepthEstimator.from_file(tmp_path / "da.pth", "dpt_hybrid")
    assert "depth_anything_vits" in str(error.value)
