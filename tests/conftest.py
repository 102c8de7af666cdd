"""Shared fixtures: image files the way users hand them to us, and depth estimators."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


def _no_gradio_stubs_beside_tests() -> None:
    """gradio 4 and 5 write a `.pyi` beside the source of every component subclass they meet;
    the host stand-ins (A1111's InputAccordion, ToolButton) live in tests/ and must leave no files.
    Forge patches the same function for its own classes."""
    try:
        from gradio import component_meta
    except ImportError:
        return
    if not hasattr(component_meta, "create_or_modify_pyi"):
        return  # gradio 3
    write_stub = component_meta.create_or_modify_pyi

    def only_for_gradio(component_class: type, class_name: str, events: list) -> None:
        if component_class.__module__.startswith("gradio."):
            write_stub(component_class, class_name, events)

    component_meta.create_or_modify_pyi = only_for_gradio


_no_gradio_stubs_beside_tests()


@pytest.fixture
def save_image(tmp_path: Path) -> Callable[..., Path]:
    """save_image(name, image_or_array, **save_args) -> path of the file written under tmp_path."""

    def save(name: str, image: Image.Image | np.ndarray, **save_args) -> Path:
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, **save_args)
        return path

    return save


@pytest.fixture
def png_declaring_size() -> Callable[[int, int], bytes]:
    """png_declaring_size(w, h) -> a PNG whose header claims w x h but holds 1 pixel of data.

    Lets tests show what happens with a 10000 x 10000 upload without allocating 100 MB.
    """

    def make(width: int, height: int) -> bytes:
        buffer = io.BytesIO()
        Image.new("L", (1, 1)).save(buffer, "PNG")
        data = bytearray(buffer.getvalue())
        data[16:24] = struct.pack(">II", width, height)  # IHDR payload starts at byte 16
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # CRC of type + payload
        return bytes(data)

    return make


@pytest.fixture
def exif_rotated_jpeg() -> bytes:
    """A 40 x 20 JPEG, left half black and right half white, tagged 'rotate 90 CW to view'."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, 20:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 clockwise to display
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", exif=exif, quality=95)
    return buffer.getvalue()


class CountingEstimator:
    """A stand-in DepthEstimator: depth = mean of the RGB channels, counting every call.

    Brighter is nearer, so tests can predict the depth map from the image they draw.
    """

    name = "counting"
    net_size = 384
    weights_id = "counting-weights"

    def __init__(self) -> None:
        self.calls = 0
        self.net_sizes: list[int | None] = []
        self.images: list[Image.Image] = []

    def checked_net_size(self, net_size: int | None) -> int:
        return net_size or self.net_size

    def estimate(self, image: Image.Image, net_size: int | None = None, progress=None) -> np.ndarray:
        self.calls += 1
        self.net_sizes.append(net_size)
        self.images.append(image)
        return np.asarray(image.convert("RGB"), dtype=np.float32).mean(axis=2) * 10.0


@pytest.fixture
def counting_estimator() -> CountingEstimator:
    return CountingEstimator()


@pytest.fixture
def gradient_image() -> Image.Image:
    """A 64 x 48 RGB image, dark on the left (far) to bright on the right (near)."""
    row = np.linspace(0, 255, 64, dtype=np.float32)
    pixels = np.repeat(np.tile(row, (48, 1))[:, :, None], 3, axis=2)
    return Image.fromarray(pixels.astype(np.uint8))


@pytest.fixture(scope="session")
def tiny_depth_weights(tmp_path_factory) -> Path:
    """A small random DPT-Hybrid in an SD-style `.safetensors` file (depth_model.model.* names)."""
    from lib_depth2img.estimators import write_tiny_depth_weights

    path = tmp_path_factory.mktemp("weights") / "tiny-depth.safetensors"
    write_tiny_depth_weights(path)
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny convolutions run faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
