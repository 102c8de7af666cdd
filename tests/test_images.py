"""Decoding users' images: every source kind, every bit depth, and every way a file can be bad.

Reading a depth map file into values is tested with the depth-map maths (test_depthmaps_values.py)."""

from __future__ import annotations

import base64
import io
import os
import stat

import numpy as np
import pytest
from PIL import Image

from lib_depth2img.errors import Depth2imgError, ImageError
from lib_depth2img.images import load_image, save_atomically


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


# -- sources -----------------------------------------------------------------------------------


def test_every_source_kind_gives_the_same_pixels(save_image):
    pixels = np.arange(12 * 10 * 3, dtype=np.uint8).reshape(10, 12, 3)
    path = save_image("picture.png", pixels)
    encoded = base64.b64encode(path.read_bytes()).decode()
    sources = [
        path,
        str(path),
        path.read_bytes(),
        encoded,
        f"data:image/png;base64,{encoded}",
        pixels,
        Image.fromarray(pixels),
    ]
    for source in sources:
        image = load_image(source)
        assert image.size == (12, 10)
        np.testing.assert_array_equal(np.asarray(image), pixels)


def test_one_by_one_image_works(save_image):
    image = load_image(save_image("dot.png", np.full((1, 1), 7, np.uint8)))
    assert image.size == (1, 1) and image.getpixel((0, 0)) == 7


def test_exif_orientation_is_applied_once(exif_rotated_jpeg):
    upright = load_image(exif_rotated_jpeg)
    assert upright.size == (20, 40)  # rotated to portrait, as a viewer shows it
    pixels = np.asarray(upright.convert("L"))
    assert pixels[:15].mean() < 30 and pixels[25:].mean() > 225  # the black half is now on top
    assert load_image(upright).size == (20, 40)  # the tag is gone: loading again does not rotate back


def test_exif_orientation_of_a_pil_image_leaves_the_callers_image_alone(exif_rotated_jpeg):
    original = Image.open(io.BytesIO(exif_rotated_jpeg))
    assert load_image(original).size == (20, 40)
    assert original.size == (40, 20)


# -- bad input ---------------------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ImageError, match=r"nowhere\.png: file not found; check the path"):
        load_image(tmp_path / "nowhere.png")


def test_empty_file_says_it_is_empty(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png: the file is empty \(0 bytes\)"):
        load_image(path)


def test_non_image_file_says_it_is_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("these are my notes, not a picture\n" * 10)
    with pytest.raises(ImageError, match=r"notes\.png: not an image that can be read"):
        load_image(path)


@pytest.mark.parametrize("kind", ["PNG", "JPEG"])
def test_truncated_file_says_it_is_damaged(tmp_path, kind):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, kind)
    path = tmp_path / f"cut.{kind.lower()}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match=r"cut\.\w+: the image data is damaged or incomplete .*upload it"):
        load_image(path)


def test_a_lazily_opened_truncated_pil_image_is_reported_too(tmp_path):
    data = png_bytes(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)))
    lazy = Image.open(io.BytesIO(data[: len(data) // 2]))  # header read, pixels not yet
    with pytest.raises(ImageError, match="the image: the image data is damaged or incomplete"):
        load_image(lazy)


def test_corrupt_header_is_reported(tmp_path):
    data = bytearray(png_bytes(Image.new("RGB", (8, 8))))
    data[1:4] = b"XYZ"  # break the PNG signature
    path = tmp_path / "corrupt.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match=r"corrupt\.png: not an image that can be read"):
        load_image(path)


def test_zero_size_images_have_no_pixels(png_declaring_size):
    with pytest.raises(ImageError, match=r"0 x 5 pixels and has no pixels"):
        load_image(Image.new("L", (0, 5)))
    with pytest.raises(ImageError, match=r"0 x 3 pixels and has no pixels"):
        load_image(np.zeros((3, 0), np.uint8))
    with pytest.raises(ImageError, match="the image"):  # Pillow cannot even identify a 0-wide PNG
        load_image(png_declaring_size(0, 5))


def test_ten_thousand_squared_is_refused_before_decoding(png_declaring_size):
    with pytest.raises(
        ImageError, match=r"image is 10000 x 10000 = 100\.0 MP, above the limit of 64 MP; downs"
    ):
        load_image(png_declaring_size(10000, 10000))


def test_images_beyond_pillows_own_limit_get_the_same_kind_of_message(png_declaring_size):
    with pytest.raises(ImageError, match=r"image is 400 MP, above Pillow's limit"):
        load_image(png_declaring_size(20000, 20000), max_megapixels=1000)


def test_the_megapixel_limit_is_configurable():
    image = Image.new("L", (300, 200))
    with pytest.raises(ImageError, match=r"300 x 200 = 0\.1 MP, above the limit of 0\.05 MP"):
        load_image(image, max_megapixels=0.05)
    assert load_image(image, max_megapixels=0.06).size == (300, 200)


def test_a_large_image_at_the_limit_loads(save_image):
    # 64 MP at 1 bit per pixel: 8 MB decoded, so the test stays cheap
    path = save_image("big.png", Image.new("1", (8000, 8000)))
    assert load_image(path).size == (8000, 8000)


def test_bad_base64_and_bad_arrays_are_explained():
    with pytest.raises(ImageError, match="not valid base64"):
        load_image("data:image/png;base64,@@@not-base64@@@")
    with pytest.raises(ImageError, match=r"shape \(4, 4, 2\) and type uint8 is not an image"):
        load_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageError, match="cannot read an image from a int"):
        load_image(42)


# -- writing ---------------------------------------------------------------------------------------


def test_save_atomically_never_leaves_a_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "depth.png"
    target.write_bytes(b"previous result")

    def fail_half_way(self, fp, format=None, **params):
        fp.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", fail_half_way)
    with pytest.raises(Depth2imgError, match=r"cannot write .*depth\.png: No space left on device\."):
        save_atomically(Image.new("L", (4, 4)), target)
    assert [p.name for p in tmp_path.iterdir()] == ["depth.png"]
    assert target.read_bytes() == b"previous result"


def test_save_atomically_replaces_the_file_with_normal_permissions(tmp_path):
    target = tmp_path / "depth.png"
    save_atomically(Image.new("L", (3, 2), 9), target)
    assert [p.name for p in tmp_path.iterdir()] == ["depth.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # like any file the user writes
    with Image.open(io.BytesIO(target.read_bytes())) as written:
        assert written.size == (3, 2) and written.getpixel((0, 0)) == 9
