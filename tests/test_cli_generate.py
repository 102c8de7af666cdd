"""`python -m lib_depth2img generate` and `make-demo-checkpoint`, end to end on a tiny checkpoint."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from lib_depth2img.cli import main
from lib_depth2img.cli.generate import natural_key
from lib_depth2img.depthmaps.values import normalize_depth
from lib_depth2img.engine import load_checkpoint
from lib_depth2img.images import load_image
from lib_depth2img.infotext import Infotext, read_infotext

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, str]:
    """The checkpoint every test uses, written by `make-demo-checkpoint`, and what the command printed."""
    path = tmp_path_factory.mktemp("ckpt") / "demo.ckpt"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["make-demo-checkpoint", str(path)]) == 0
    return path, printed.getvalue()


@pytest.fixture
def ckpt(demo) -> Path:
    return demo[0]


def noise_image(seed: int, size=(64, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def gradient(size=(64, 64), reverse=False) -> Image.Image:
    row = np.linspace(255, 0, size[0]) if reverse else np.linspace(0, 255, size[0])
    return Image.fromarray(np.tile(row.astype(np.uint8), (size[1], 1)))


def save(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def generate(ckpt: Path, out: Path, *args: str) -> int:
    return main(["generate", "--ckpt", str(ckpt), "--prompt", "a castle, at night", "--steps", "2",
                 "-o", str(out), *args])


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int32)


def test_demo_checkpoint_says_what_it_is(demo):
    path, printed = demo
    assert "RANDOM weights" in printed and "DEMO" in printed and str(path) in printed
    model, _ = load_checkpoint(path)
    assert model.is_demo


def test_img2img_writes_a_png_with_its_parameters(ckpt, tmp_path, capsys):
    init = save(noise_image(0), tmp_path / "photo.png")
    out = tmp_path / "out"
    args = ["--init", str(init), "--seed", "5", "--strength", "0.8", "--sampler", "Euler a"]
    assert generate(ckpt, out, *args) == 0
    assert files(out) == ["photo-5.png"]  # and no temporary files left behind
    info = Infotext.parse(read_infotext(out / "photo-5.png"))
    assert info.prompt == "a castle, at night"
    expected = {"Seed": "5", "Sampler": "Euler a", "Steps": "2", "Denoising strength": "0.8", "Model": "demo",
                "Size": "64x64"}
    assert {key: info.params[key] for key in expected} == expected
    captured = capsys.readouterr()
    assert "photo: wrote 1 image(s), seeds 5" in captured.out
    assert "demo checkpoint with random weights" in captured.err


def test_same_seed_same_bytes_other_seed_other_image(ckpt, tmp_path):
    init = save(noise_image(1), tmp_path / "in.png")
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        assert generate(ckpt, tmp_path / name, "--init", str(init), "--seed", seed) == 0
    assert (tmp_path / "a/in-7.png").read_bytes() == (tmp_path / "b/in-7.png").read_bytes()
    assert not np.array_equal(pixels(tmp_path / "a/in-7.png"), pixels(tmp_path / "c/in-8.png"))


def test_random_seed_is_reported_and_used(ckpt, tmp_path, capsys):
    init = save(noise_image(1), tmp_path / "in.png")
    assert generate(ckpt, tmp_path / "out", "--init", str(init), "--steps", "1") == 0
    lines = capsys.readouterr().err.splitlines()
    seed = next(line.split(": ")[1] for line in lines if line.startswith("seed: "))
    assert files(tmp_path / "out") == [f"in-{seed}.png"]


def test_batch_writes_one_file_per_seed(ckpt, tmp_path):
    init = save(noise_image(2), tmp_path / "in.png")
    assert generate(ckpt, tmp_path / "out", "--init", str(init), "--seed", "10", "--batch", "3") == 0
    assert files(tmp_path / "out") == ["in-10.png", "in-11.png", "in-12.png"]
    images = [pixels(tmp_path / "out" / name) for name in files(tmp_path / "out")]
    assert not np.array_equal(images[0], images[1]) and not np.array_equal(images[1], images[2])


def test_inpaint_keeps_pixels_outside_the_mask(ckpt, tmp_path):
    init = save(noise_image(3), tmp_path / "in.png")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (32, 0, 64, 64))  # repaint the right half
    mask_path = save(mask, tmp_path / "mask.png")
    assert generate(ckpt, tmp_path / "out", "--init", str(init), "--mask", str(mask_path), "--seed", "1",
                    "--strength", "1", "--mask-blur", "4") == 0
    result, original = pixels(tmp_path / "out/in-1.png"), pixels(init)
    assert np.array_equal(result[:, :16], original[:, :16])  # left of the blurred, dilated edge
    assert not np.array_equal(result[:, 40:], original[:, 40:])


def test_own_depth_maps_matched_by_stem(ckpt, tmp_path):
    for stem, seed in (("a", 4), ("b", 5)):
        save(noise_image(seed), tmp_path / "frames" / f"{stem}.png")
    save(gradient(), tmp_path / "depths/a.png")
    save(gradient(reverse=True), tmp_path / "depths/b.png")
    args = ["--init", str(tmp_path / "frames"), "--depth", str(tmp_path / "depths"), "--save-depth"]
    assert generate(ckpt, tmp_path / "out", *args, "--seed", "2", "--steps", "1") == 0
    assert files(tmp_path / "out") == ["a-2.png", "a-depth.png", "b-2.png", "b-depth.png"]
    for stem in ("a", "b"):
        saved = load_image(tmp_path / f"out/{stem}-depth.png")
        assert saved.mode == "I;16"
        expected = np.asarray(Image.open(tmp_path / f"depths/{stem}.png"), dtype=np.float64) / 255
        assert np.allclose(np.asarray(saved, dtype=np.float64) / 65535, expected, atol=1e-4)


def test_txt2img_from_depth_maps_alone(ckpt, tmp_path):
    save(gradient(), tmp_path / "depths/near_right.png")
    save(gradient((64, 70), reverse=True), tmp_path / "depths/near_left.png")
    assert generate(ckpt, tmp_path / "out", "--depth", str(tmp_path / "depths"), "--seed", "3",
                    "--strength", "0.2") == 0
    assert files(tmp_path / "out") == ["near_left-3.png", "near_right-3.png"]
    assert Image.open(tmp_path / "out/near_left-3.png").size == (64, 64)  # 64x70 rounded down to 8
    params = Infotext.parse(read_infotext(tmp_path / "out/near_right-3.png")).params
    assert params["Denoising strength"] == "1"  # txt2img: always from pure noise


def test_sequence_normalisation_uses_one_range_for_all_frames(ckpt, tmp_path, capsys):
    frames = [noise_image(20), Image.fromarray((np.asarray(noise_image(21)) // 3 + 80).astype(np.uint8))]
    for name, frame in zip(("frame10.png", "frame2.png"), frames, strict=True):
        save(frame, tmp_path / "frames" / name)
    common = ["--init", str(tmp_path / "frames"), "--seed", "1", "--steps", "1", "--save-depth",
              "--net-size", "64"]
    assert generate(ckpt, tmp_path / "image", *common) == 0
    assert generate(ckpt, tmp_path / "sequence", *common, "--normalize", "sequence") == 0
    printed = capsys.readouterr().out
    assert printed.index("frame2:") < printed.index("frame10:")  # natural order

    _, estimator = load_checkpoint(ckpt)
    names = ("frame10", "frame2")
    raws = {name: estimator.estimate(frame, net_size=64) for name, frame in zip(names, frames, strict=True)}
    low, high = min(float(r.min()) for r in raws.values()), max(float(r.max()) for r in raws.values())
    for name, raw in raws.items():
        assert np.allclose(saved_depth(tmp_path / "image", name), normalize_depth(raw), atol=2e-5)
        assert np.allclose(saved_depth(tmp_path / "sequence", name), (raw - low) / (high - low), atol=2e-5)
    # the frame with less depth contrast keeps its smaller span instead of being stretched to 0..1
    low_contrast = saved_depth(tmp_path / "sequence", "frame2"), saved_depth(tmp_path / "image", "frame2")
    assert np.ptp(low_contrast[0]) < np.ptp(low_contrast[1])


def saved_depth(folder: Path, stem: str) -> np.ndarray:
    return np.asarray(Image.open(folder / f"{stem}-depth.png"), dtype=np.float64) / 65535


def test_natural_order():
    names = ["frame10.png", "frame2.png", "Frame1.png", "frame2b.png"]
    ordered = sorted(names, key=lambda name: natural_key(Path(name)))
    assert ordered == ["Frame1.png", "frame2.png", "frame2b.png", "frame10.png"]


BAD_INPUTS = {
    "missing init": (["--init", "{tmp}/missing.png"], "missing.png: file not found"),
    "folder without images": (["--init", "{tmp}/empty"], "holds no images"),
    "mask of another size": (
        ["--init", "{tmp}/in.png", "--mask", "{tmp}/small_mask.png"],
        "mask is 32x32 but the init image is 64x64",
    ),
    "no depth map for a frame": (["--init", "{tmp}/in.png", "--depth", "{tmp}/empty"], "holds no images"),
    "absurd size": (["--init", "{tmp}/in.png", "--width", "100000", "--height", "64"], "between 64 and 2048"),
    "size not a multiple of 8": (["--init", "{tmp}/in.png", "--width", "100"], "multiple of 8"),
    "steps 0": (["--init", "{tmp}/in.png", "--steps", "0"], "between 1 and 150"),
    "strength above 1": (["--init", "{tmp}/in.png", "--strength", "1.5"], "between 0 and 1"),
    "strength below 0": (["--init", "{tmp}/in.png", "--strength", "-0.5"], "between 0 and 1"),
    "clips crossed": (["--init", "{tmp}/in.png", "--far-clip", "0.9", "--near-clip", "0.1"], "far clip"),
    "nothing to start from": ([], "Give --init images, --depth maps"),
    "not an image": (["--init", "{tmp}/notes.png"], "not an image"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_fail_clearly_and_write_nothing(ckpt, tmp_path, capsys, case):
    save(noise_image(0), tmp_path / "in.png")
    save(Image.new("L", (32, 32), 255), tmp_path / "small_mask.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.png").write_text("not a picture")
    args, message = BAD_INPUTS[case]
    out = tmp_path / "out"
    assert generate(ckpt, out, *(arg.format(tmp=tmp_path) for arg in args)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert files(out) == []


@pytest.mark.parametrize("content", [b"", b"definitely not a checkpoint", None])
def test_bad_checkpoint_fails_clearly_and_writes_nothing(tmp_path, capsys, content):
    ckpt = tmp_path / "model.safetensors"
    if content is not None:
        ckpt.write_bytes(content)
    init = save(noise_image(0), tmp_path / "in.png")
    assert generate(ckpt, tmp_path / "out", "--init", str(init)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "model.safetensors" in err[0]
    assert files(tmp_path / "out") == []


# -- --params-from -------------------------------------------------------------------------------------


def test_params_from_an_engine_png_renders_the_same_image(ckpt, tmp_path):
    """Round trip: every parameter of the first PNG (the sampler, schedule type, variation seed,
    ENSD, depth settings ...) comes back from its info, so the second render is byte-identical."""
    init = save(noise_image(4), tmp_path / "in.png")
    first = ["--init", str(init), "--seed", "11", "--sampler", "Euler a", "--schedule-type", "Karras",
             "--variation-seed", "3", "--variation-strength", "0.4", "--ensd", "7", "--gamma", "1.5",
             "--strength", "0.9", "--cfg", "5.5", "--negative", "fog"]
    assert generate(ckpt, tmp_path / "a", *first) == 0
    png = tmp_path / "a/in-11.png"
    assert main(["generate", "--ckpt", str(ckpt), "--params-from", str(png), "--init", str(init),
                 "-o", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b/in-11.png").read_bytes() == png.read_bytes()
    params = Infotext.parse(read_infotext(png)).params
    assert {key: params[key] for key in ("Sampler", "Schedule type", "Variation seed", "ENSD", "RNG",
                                         "Depth2img gamma")} == {
        "Sampler": "Euler a", "Schedule type": "Karras", "Variation seed": "3", "ENSD": "7", "RNG": "CPU",
        "Depth2img gamma": "1.5"}


def test_flags_override_params_from(ckpt, tmp_path):
    init = save(noise_image(5), tmp_path / "in.png")
    assert generate(ckpt, tmp_path / "a", "--init", str(init), "--seed", "11", "--sampler", "Heun") == 0
    assert main(["generate", "--ckpt", str(ckpt), "--params-from", str(tmp_path / "a/in-11.png"), "--init",
                 str(init), "--seed", "12", "--steps", "1", "--invert", "-o", str(tmp_path / "b")]) == 0
    info = Infotext.parse(read_infotext(tmp_path / "b/in-12.png"))
    params = info.params
    assert info.prompt == "a castle, at night"  # from the PNG
    assert (params["Seed"], params["Steps"], params["Sampler"], params["Depth2img invert"]) == (
        "12", "1", "Heun", "True")


def test_params_from_names_what_it_cannot_honour(ckpt, tmp_path, capsys):
    init = save(noise_image(6), tmp_path / "in.png")
    a1111 = Image.new("RGB", (64, 64))
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a room <lora:film:1>\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 3, "
                                "Size: 64x64, Hires upscale: 2, Refiner: xl_refiner, Denoising strength: 0.5")
    a1111.save(tmp_path / "a1111.png", pnginfo=info)
    args = ["generate", "--ckpt", str(ckpt), "--params-from", str(tmp_path / "a1111.png"), "--init", str(init),
            "-o", str(tmp_path / "out")]
    assert main(args) == 2
    error = capsys.readouterr().err
    for entry in ("Hires upscale: 2", "Refiner: xl_refiner", "<lora:film:1>", "--ignore-unsupported"):
        assert entry in error
    assert files(tmp_path / "out") == []
    assert main([*args, "--ignore-unsupported"]) == 0
    assert "warning:" in capsys.readouterr().err and files(tmp_path / "out") == ["in-3.png"]


def test_a_folder_of_frames_with_one_seed_or_seed_plus_index(ckpt, tmp_path):
    for index in range(3):
        save(noise_image(10 + index), tmp_path / "frames" / f"frame{index}.png")
    assert generate(ckpt, tmp_path / "same", "--init", str(tmp_path / "frames"), "--seed", "5", "--steps", "1") == 0
    assert files(tmp_path / "same") == ["frame0-5.png", "frame1-5.png", "frame2-5.png"]
    assert generate(ckpt, tmp_path / "index", "--init", str(tmp_path / "frames"), "--seed", "5", "--steps", "1",
                    "--frame-seed", "index") == 0
    assert files(tmp_path / "index") == ["frame0-5.png", "frame1-6.png", "frame2-7.png"]
