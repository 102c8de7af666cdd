"""Decoding user images (init images, masks and depth map files) safely.

Images arrive as file paths, raw bytes (uploads), base64 strings (the A1111 API, with or without
a `data:image/...;base64,` prefix), numpy arrays (gradio) and PIL images. Everything a user can
get wrong (a missing, empty, damaged or huge file, a file that is no image) becomes an
`ImageError` that names the image and says what to do; the EXIF orientation is applied so that
a phone photo and its depth map line up the way the user sees them. `save_atomically` writes
results so that a crash or Ctrl-C never leaves a half-written file under the final name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import secrets
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from .errors import Depth2imgError, ImageError

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray | Image.Image

DEFAULT_MAX_MEGAPIXELS = 64.0
"""Refuse images above this many megapixels: a 64 MP RGB image already needs ~200 MB decoded."""

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".tga", ".jfif"}
)
"""File name endings taken as images when a whole folder is given."""

_DATA_URL = re.compile(r"^data:([^,;]*)[^,]*?;base64,", re.IGNORECASE)
_LOOKS_LIKE_A_PATH = re.compile(r"^(~|\.{0,2}/|[A-Za-z]:[\\/])|\.[A-Za-z]{2,5}$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/\s]+={0,2}\s*$")
_MIN_BASE64_LENGTH = 64  # the smallest PNG is ~70 bytes; shorter strings are meant as paths
_PILLOW_PIXEL_COUNT = re.compile(r"\((\d+) pixels\)")
_EXIF_ORIENTATION = 0x0112


def pixel_digest(image: Image.Image) -> str:
    """Equal for images with equal pixels (mode, size, palette), whatever object holds them: the key
    under which work on an image is cached or shared."""
    digest = hashlib.blake2b(image.tobytes(), digest_size=16)
    digest.update(f"{image.mode} {image.size}".encode())
    palette = image.getpalette() if image.mode in ("P", "PA") else None
    if palette is not None:
        digest.update(bytes(palette))
    return digest.hexdigest()


def load_image(
    source: ImageSource, *, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, name: str | None = None
) -> Image.Image:
    """Decode `source` into a fully loaded, upright PIL image in its own mode.

    The mode is kept (16-bit stays `I;16`, palette stays `P`) so that depth maps keep their
    precision; convert to RGB where an init image is needed. `name` is how messages refer to
    the image (default: the path, or a description of the source).
    """
    label = name or describe_source(source)
    if isinstance(source, Image.Image):
        _check_size(source.size, label, max_megapixels)
        _load_pixels(source, label)  # a lazily opened image may still fail here
        return _upright(source)
    if isinstance(source, np.ndarray):
        return load_image(_array_to_image(source, label), max_megapixels=max_megapixels, name=label)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(bytes(source)), label, max_megapixels)
    if isinstance(source, str) and _is_base64(source):
        return load_base64_image(source, max_megapixels=max_megapixels, name=label)
    if isinstance(source, (str, os.PathLike)):
        return _decode(_read_file(os.fspath(source), label), label, max_megapixels)
    raise ImageError(
        f"{label}: cannot read an image from a {type(source).__name__}; "
        "give a file path, bytes, a base64 string, a numpy array or a PIL image."
    )


def load_base64_image(
    encoded: str, *, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, name: str = "the image"
) -> Image.Image:
    """Decode a base64 image (a `data:image/...;base64,` prefix allowed) as `load_image` does.

    Strictly base64: the string is never taken as a file name, which is what an HTTP API needs.
    """
    return _decode(_base64_bytes(encoded, name), name, max_megapixels)


def make_output_folder(folder: str | os.PathLike) -> Path:
    """Create the folder results go to; a failure (a file in the way, no permission) is a user error."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise Depth2imgError(f"cannot create the output folder {folder}: {error.strerror or error}.") from None
    return folder


def save_atomically(
    image: Image.Image, path: str | os.PathLike, format: str = "PNG", pnginfo: PngInfo | None = None
) -> None:
    """Write `image` to a hidden temporary file beside `path`, then rename it over `path`.

    Readers see the old file or the whole new one, never a partial one; the temporary file is
    removed on any failure. A write error (disk full, no permission) is a `Depth2imgError`.
    `pnginfo` carries text chunks such as the A1111 `parameters` infotext.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        # os.open with 0o666 honours the umask, unlike mkstemp's private 0o600
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as file:
            image.save(file, format=format, **({"pnginfo": pnginfo} if pnginfo else {}))
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise Depth2imgError(f"cannot write {path}: {error.strerror or error}.") from None
        raise


def _decode(stream: io.IOBase, label: str, max_megapixels: float) -> Image.Image:
    """Open, check the size from the header, then decode; every failure is an `ImageError`."""
    try:
        with warnings.catch_warnings():
            # our own limit is checked below; Pillow's warning would only repeat it, less clearly
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream)
    except Image.DecompressionBombError as error:
        found = _PILLOW_PIXEL_COUNT.search(str(error))
        size = f"{int(found.group(1)) / 1e6:.0f} MP" if found else "too large"
        raise ImageError(
            f"{label}: image is {size}, above Pillow's limit of "
            f"{2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} MP; downscale it and try again."
        ) from None
    except UnidentifiedImageError:
        stream.seek(0, io.SEEK_END)
        if stream.tell() == 0:
            raise ImageError(
                f"{label}: the file is empty (0 bytes); export or upload the image again."
            ) from None
        raise ImageError(
            f"{label}: not an image that can be read (PNG, JPEG, WebP, TIFF, BMP ...), or its header "
            "is damaged; check that the file is an image and export it again."
        ) from None
    _check_size(image.size, label, max_megapixels)
    _load_pixels(image, label)
    return _upright(image)


def _load_pixels(image: Image.Image, label: str) -> None:
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(
            f"{label}: the image data is damaged or incomplete ({error}); export or upload it again."
        ) from None


def _check_size(size: tuple[int, int], label: str, max_megapixels: float) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(
            f"{label}: the image is {width} x {height} pixels and has no pixels; use a real image."
        )
    megapixels = width * height / 1e6
    if megapixels > max_megapixels:
        raise ImageError(
            f"{label}: image is {width} x {height} = {megapixels:.1f} MP, above the limit of "
            f"{max_megapixels:g} MP; downscale it, or raise the limit if you have the memory."
        )


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation, as viewers do, and drop the tag so it is never applied twice.

    Written for Pillow 9.5 (A1111's pin) as well as 10+: the tag by number, no `in_place`.
    """
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError, TypeError):  # unreadable EXIF: show the pixels as stored
        return image
    return image if orientation == 1 else ImageOps.exif_transpose(image)


def _array_to_image(array: np.ndarray, label: str) -> Image.Image:
    """A gradio/numpy image as PIL: uint8 gray/RGB/RGBA, uint16 or float gray, bool masks."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4)):
        if 0 in array.shape[:2]:
            raise ImageError(
                f"{label}: the image is {array.shape[1]} x {array.shape[0]} pixels and has no pixels; "
                "use a real image."
            )
        if array.dtype == np.uint8:
            return Image.fromarray(np.ascontiguousarray(array))
        if array.ndim == 2 and array.dtype == bool:
            return Image.fromarray(array.astype(np.uint8) * 255)
        if array.ndim == 2 and array.dtype == np.uint16:
            return Image.fromarray(np.ascontiguousarray(array), mode="I;16")
        if array.ndim == 2 and np.issubdtype(array.dtype, np.floating):
            return Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), mode="F")
    raise ImageError(
        f"{label}: an array of shape {array.shape} and type {array.dtype} is not an image; use "
        "H x W or H x W x 3/4 uint8, or H x W uint16/float."
    )


def describe_source(source: object, default: str = "the image") -> str:
    """How messages name an image that was given without a name."""
    if isinstance(source, np.ndarray):
        return f"{default} array"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"{default} (uploaded)"
    if isinstance(source, str) and _is_base64(source):
        return f"{default} (base64)"
    if isinstance(source, (str, os.PathLike)):
        return str(os.fspath(source))
    return default


def _is_base64(text: str) -> bool:
    """A data URL, or a long base64-only string that is not an existing file's name."""
    if _DATA_URL.match(text):
        return True
    return len(text) >= _MIN_BASE64_LENGTH and bool(_BASE64.match(text)) and not os.path.exists(text)


def _base64_bytes(text: str, label: str) -> io.BytesIO:
    """The bytes of base64 `text`, after its data-URL prefix, which must name an image type."""
    text = text.strip()
    prefix = _DATA_URL.match(text)
    if prefix is not None:
        mime = prefix.group(1).lower()
        if mime and not mime.startswith("image/"):
            raise ImageError(
                f"{label}: the data URL says {mime}, not an image; send an image file "
                "(data:image/png;base64,...), or the base64 text alone."
            )
        text = text[prefix.end():]
    try:
        return io.BytesIO(base64.b64decode("".join(text.split()), validate=True))
    except (binascii.Error, ValueError):
        if _LOOKS_LIKE_A_PATH.search(text):
            raise ImageError(
                f"{label}: looks like a file path; images are taken as base64 only, never read from the "
                "server's disk: send the file's bytes base64-encoded."
            ) from None
        raise ImageError(f"{label}: not valid base64; send the image file's bytes base64-encoded.") from None


def _read_file(path: str | bytes, label: str) -> io.BytesIO:
    """Read the whole file: one read, so a file replaced while we decode cannot mix versions."""
    try:
        with open(path, "rb") as file:
            return io.BytesIO(file.read())
    except FileNotFoundError:
        raise ImageError(f"{label}: file not found; check the path.") from None
    except IsADirectoryError:
        raise ImageError(f"{label}: is a folder, not an image file.") from None
    except OSError as error:
        raise ImageError(f"{label}: cannot read the file ({error.strerror or error}).") from None
