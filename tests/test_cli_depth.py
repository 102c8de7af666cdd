"""`python -m lib_depth2img depth`: files on disk, messages and exit codes, with tiny real weights.

Runs use `--net-size 64` so that the tiny network costs milliseconds per image.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lib_depth2img import cli


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """run_cli(*argv) -> (exit code, stderr lines), through the real `main` with only this subcommand."""
    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", ("depth",))

    def run(*argv: object) -> tuple[int, list[str]]:
        code = cli.main(["depth", *map(str, argv), "--net-size", "64"])
        return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]

    return run


@pytest.fixture
def photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (48, 72, 3), dtype=np.uint8)


def test_good_inputs_are_written_and_bad_ones_reported(
    run_cli, save_image, photo, tmp_path, tiny_depth_weights
):
    good = [save_image("in/first.png", photo), save_image("in/second.jpg", photo[:40, :30])]
    truncated = save_image("in/truncated.png", photo)
    truncated.write_bytes(truncated.read_bytes()[:300])
    empty = tmp_path / "in/empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "in/notes.png"
    text.write_text("not a picture")
    same_name = save_image("elsewhere/first.jpg", photo)
    out = tmp_path / "out"

    code, errors = run_cli(
        good[0],
        truncated,
        empty,
        tmp_path / "missing.png",
        text,
        good[1],
        same_name,
        "--weights",
        tiny_depth_weights,
        "-o",
        out,
    )

    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["first_depth.png", "second_depth.png"]  # no temp files
    with Image.open(out / "first_depth.png") as first, Image.open(out / "second_depth.png") as second:
        assert (first.mode, first.size, second.size) == ("L", (72, 48), (30, 40))
        assert np.asarray(first).min() == 0 and np.asarray(first).max() == 255  # normalised to full range
    assert errors == [
        (
            f"error: {truncated}: the image data is damaged or incomplete (image file is truncated); "
            "export or upload it again."
        ),
        f"error: {empty}: the file is empty (0 bytes); export or upload the image again.",
        f"error: {tmp_path / 'missing.png'}: file not found; check the path.",
        (
            f"error: {text}: not an image that can be read (PNG, JPEG, WebP, TIFF, BMP ...), or its header "
            "is damaged; check that the file is an image and export it again."
        ),
        (
            f"error: {same_name}: its depth map first_depth.png would overwrite the one of {good[0]}; "
            "rename one of them or run them separately."
        ),
        f"wrote 2 depth maps to {out}; 5 of 7 failed",
    ]


def test_folder_16bit_and_adjustments(
    run_cli, save_image, photo, tmp_path, tiny_depth_weights, exif_rotated_jpeg
):
    save_image("shots/a.png", photo)
    save_image("shots/b.webp", photo[:, ::-1])
    (tmp_path / "shots/c.jpg").write_bytes(exif_rotated_jpeg)  # a phone photo taken upright
    (tmp_path / "shots/readme.txt").write_text("ignored: not an image name")
    plain, inverted = tmp_path / "plain", tmp_path / "inverted"

    assert run_cli(tmp_path / "shots", "--weights", tiny_depth_weights, "-o", plain, "--16bit") == (
        0,
        [f"wrote 3 depth maps to {plain}"],
    )
    code, _ = run_cli(
        tmp_path / "shots/a.png", "--weights", tiny_depth_weights, "-o", inverted, "--16bit", "--invert"
    )
    assert code == 0

    assert sorted(p.name for p in plain.iterdir()) == ["a_depth.png", "b_depth.png", "c_depth.png"]
    with Image.open(plain / "a_depth.png") as normal, Image.open(inverted / "a_depth.png") as flipped:
        assert normal.mode in ("I;16", "I") and normal.size == (72, 48)
        normal_levels, inverted_levels = np.asarray(normal, np.int64), np.asarray(flipped, np.int64)
    assert len(np.unique(normal_levels)) > 256  # really 16-bit, not 8-bit scaled up
    np.testing.assert_allclose(normal_levels + inverted_levels, 65535, atol=1)
    with Image.open(plain / "c_depth.png") as upright:
        assert upright.size == (20, 40)  # as the photo is shown, not as it is stored


def test_missing_weights_fail_at_once_in_one_line(run_cli, save_image, photo, tmp_path):
    code, errors = run_cli(
        save_image("a.png", photo), "--weights", tmp_path / "nowhere.ckpt", "-o", tmp_path / "out"
    )
    assert code == 2
    assert errors == [
        f"error: depth weights not found: {tmp_path / 'nowhere.ckpt'} does not exist or is not a file."
    ]
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_without_a_depth_model_fails_at_once(run_cli, save_image, photo, tmp_path):
    import torch
    from safetensors.torch import save_file

    txt2img = tmp_path / "v2-1_512-ema-pruned.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2)}, str(txt2img))
    code, errors = run_cli(save_image("a.png", photo), "--weights", txt2img, "-o", tmp_path / "out")
    assert code == 2 and len(errors) == 1
    assert errors[0].startswith(f"error: {txt2img} is a Stable Diffusion checkpoint without a depth model")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--gamma", "20"], "error: Depth2img: 'gamma' (Gamma) must be a number between 0.1 and 10, got 20."),
        (
            ["--far-clip", "0.8", "--near-clip", "0.2"],
            "error: Depth2img: far clip (0.8) must be below near clip (0.2).",
        ),
    ],
)
def test_bad_settings_fail_before_anything_is_loaded(run_cli, tmp_path, flags, message):
    assert run_cli("a.png", "--weights", "never-read.ckpt", "-o", tmp_path / "out", *flags) == (2, [message])
    assert not (tmp_path / "out").exists()


def test_a_folder_without_images_is_an_error(run_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    code, errors = run_cli(tmp_path / "empty", "--weights", "never-read.ckpt", "-o", tmp_path / "out")
    assert code == 2 and errors[0].startswith(f"error: {tmp_path / 'empty'} holds no images (.bmp, .gif")


def test_help_takes_defaults_and_bounds_from_the_settings_table(monkeypatch, capsys):
    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", ("depth",))
    with pytest.raises(SystemExit):
        cli.main(["depth", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "(0.1..10, default: 1)" in help_text and "(0..64, default: 0)" in help_text
    assert "--16bit" in help_text and "dpt_hybrid" in help_text
