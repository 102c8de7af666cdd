"""The generation geometry: which pixels of the init image the model sees, and where.

A1111 hands the model the init image flattened on its background colour and then either resized
to width x height by the job's resize mode (`images.resize_image`), or, for "Inpaint area: Only
masked", cropped to the mask's region and that crop resized with "Resize and fill". Depth is
estimated on exactly those pixels, and a user's own depth map (which describes the whole init
image) is fitted through the same geometry, so the map the preview shows is the one the job uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass

import numpy as np
from PIL import Image

from ..errors import SettingsError
from ..specs import Settings, setting, setting_from

RESIZE_MODES = {
    0: "Just resize",
    1: "Crop and resize",
    2: "Resize and fill",
    3: "Just resize (latent upscale)",
}
"""A1111's img2img resize modes (`p.resize_mode`)."""

ONLY_MASKED_RESIZE_MODE = 2
"""A1111 resizes the "Only masked" crop with "Resize and fill"."""

MIN_JOB_SIDE, MAX_JOB_SIDE = 8, 8192
"""The width and height a geometry request takes: one latent pixel up to 8192 (A1111's sliders stop
at 2048 and its API at nothing; 8192 bounds what one request may ask for)."""

DEFAULT_BACKGROUND = "#ffffff"
"""A1111's default `img2img_background_color`: transparent pixels become white."""

Box = tuple[int, int, int, int]
"""(left, top, right, bottom) in pixels of the init image, as PIL's `crop` takes it."""

ImageResizer = Callable[[int, Image.Image, int, int], Image.Image]
"""`resize(mode, image, width, height)`, the signature of A1111's `images.resize_image`."""


@dataclass(frozen=True)
class Geometry(Settings):
    """Where the init image's pixels go in a job of `width` x `height`.

    `crop`: A1111's "Only masked" region of the init image (its `crop_region`, i.e. `p.paste_to`
    as a box); that crop is resized with "Resize and fill" and `resize_mode` is not used.
    Mode 3 (latent upscale) stretches like mode 0: A1111 stretches the latent instead of the
    image, and the picture ends up stretched the same way.
    """

    width: int = setting(MISSING, "Width", minimum=1)
    height: int = setting(MISSING, "Height", minimum=1)
    resize_mode: int = setting(
        0, "Resize mode", choices=RESIZE_MODES, hint="When the size differs from the image's."
    )
    crop: Box | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def effective_resize_mode(self) -> int:
        """The mode the source (the crop, if any) is resized with."""
        if self.crop is not None:
            return ONLY_MASKED_RESIZE_MODE
        return 0 if self.resize_mode == 3 else self.resize_mode


def resize_geometry(
    source_size: tuple[int, int], target_size: tuple[int, int], resize_mode: int = 0
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where A1111's `images.resize_image` puts a source of `source_size` in a `target_size` frame.

    Returns ((scaled_width, scaled_height), (left, top)): the source is scaled to the first size
    and placed with its top-left corner at (left, top). Negative offsets crop (mode 1, "Crop and
    resize"); positive ones leave borders to fill (mode 2, "Resize and fill"). The scaled side is
    rounded down, as A1111 rounds. Sizes are (width, height), as in PIL.
    """
    width, height = target_size
    source_width, source_height = source_size
    if resize_mode in (0, 3):
        return (width, height), (0, 0)
    ratio, source_ratio = width / height, source_width / source_height
    if resize_mode == 1:
        scaled_width = width if ratio > source_ratio else source_width * height // source_height
        scaled_height = height if ratio <= source_ratio else source_height * width // source_width
    else:
        scaled_width = width if ratio < source_ratio else source_width * height // source_height
        scaled_height = height if ratio >= source_ratio else source_height * width // source_width
    scaled_width, scaled_height = max(1, scaled_width), max(1, scaled_height)
    return (scaled_width, scaled_height), (width // 2 - scaled_width // 2, height // 2 - scaled_height // 2)


# -- images: the pixels the model sees -------------------------------------------------------------


def flatten(image: Image.Image, background: str = DEFAULT_BACKGROUND) -> Image.Image:
    """RGB, with an RGBA image's transparency laid on `background` (A1111's `images.flatten`)."""
    if image.mode == "RGBA":
        flat = Image.new("RGBA", image.size, background)
        flat.paste(image, mask=image)
        image = flat
    return image.convert("RGB")


def resize_image(resize_mode: int, image: Image.Image, width: int, height: int) -> Image.Image:
    """A1111's `images.resize_image` without an upscaler: Lanczos, then crop or fill by the mode.

    "Resize and fill" stretches the edge rows (or columns) into the borders; like A1111, an odd
    border leaves its last line black.
    """
    (scaled_width, scaled_height), (left, top) = resize_geometry(image.size, (width, height), resize_mode)
    resized = image.resize((scaled_width, scaled_height), resample=Image.Resampling.LANCZOS)
    if resize_mode in (0, 3):
        return resized
    result = Image.new("RGB", (width, height))
    result.paste(resized, box=(left, top))
    if resize_mode == 2 and top > 0:
        result.paste(resized.resize((width, top), box=(0, 0, width, 0)), box=(0, 0))
        result.paste(resized.resize((width, top), box=(0, scaled_height, width, scaled_height)), box=(0, top + scaled_height))
    elif resize_mode == 2 and left > 0:
        result.paste(resized.resize((left, height), box=(0, 0, 0, height)), box=(0, 0))
        result.paste(resized.resize((left, height), box=(scaled_width, 0, scaled_width, height)), box=(left + scaled_width, 0))
    return result


def fit_image(
    image: Image.Image,
    geometry: Geometry,
    *,
    background: str = DEFAULT_BACKGROUND,
    resize: ImageResizer = resize_image,
) -> Image.Image:
    """The init image as the model sees it: flattened, cropped ("Only masked") and resized.

    A host passes its own `resize` (A1111: `images.resize_image`, which may use an upscaler) and
    background colour, so these are the very pixels of its job.
    """
    flat = flatten(image, background)
    if geometry.crop is not None:
        flat = flat.crop(geometry.crop)
    if flat.size == geometry.size and geometry.crop is None:
        return flat
    return resize(geometry.effective_resize_mode, flat, geometry.width, geometry.height)


# -- float maps: your own depth map, masks ----------------------------------------------------------


def fit_map(values: np.ndarray, geometry: Geometry, image_size: tuple[int, int] | None = None) -> np.ndarray:
    """A float map (H x W) that covers the init image, through the job's geometry.

    `image_size`: the init image's (width, height), which the map describes whatever its own
    resolution (a depth map rendered at another size); None: the map's own size (txt2img).
    Scaling is Lanczos in float32, clipped to the map's own range so ringing cannot leave it; the
    borders of "Resize and fill" repeat the edge values (all the way: no black line, which would
    read as the farthest depth).
    """
    values = np.asarray(values, dtype=np.float32)
    map_height, map_width = values.shape
    image_width, image_height = image_size or (map_width, map_height)
    box = (0.0, 0.0, float(map_width), float(map_height))
    source_size = (image_width, image_height)
    if geometry.crop is not None:
        left, top, right, bottom = geometry.crop
        scale_x, scale_y = map_width / image_width, map_height / image_height
        box = (left * scale_x, top * scale_y, right * scale_x, bottom * scale_y)
        source_size = (right - left, bottom - top)
    (scaled_width, scaled_height), (left, top) = resize_geometry(
        source_size, geometry.size, geometry.effective_resize_mode
    )
    scaled = values
    if (scaled_width, scaled_height) != (map_width, map_height) or box != (0, 0, map_width, map_height):
        resampled = Image.fromarray(values, mode="F").resize(
            (scaled_width, scaled_height), Image.Resampling.LANCZOS, box=box
        )
        scaled = np.clip(np.asarray(resampled, dtype=np.float32), values.min(), values.max())
    rows = _place(scaled, top, geometry.height, axis=0)
    return np.ascontiguousarray(_place(rows, left, geometry.width, axis=1), dtype=np.float32)


def _place(values: np.ndarray, offset: int, length: int, axis: int) -> np.ndarray:
    """Crop (offset <= 0) or edge-pad (offset > 0) one axis so it starts at `offset` and is `length` long."""
    if offset <= 0:
        return np.take(values, range(-offset, -offset + length), axis=axis)
    padding = [(0, 0), (0, 0)]
    padding[axis] = (offset, length - offset - values.shape[axis])
    return np.pad(values, padding, mode="edge")


# -- the request: A1111's img2img fields ------------------------------------------------------------


@dataclass(frozen=True)
class GeometryRequest(Settings):
    """The geometry fields of an img2img request, under A1111's names (the preview and the API).

    `width`/`height` None: not given; the standalone app then sizes the job from the image (its
    "0 = the image's"), the API answers at the image's own size. A1111's img2img has both.
    `scale_by` set: A1111's "Resize by" tab, the size is the image's times it (`int()`, as A1111).
    `mask` with `inpaint_full_res`: "Inpaint area: Only masked"; the host turns it into the crop
    box as its job would (`mask_blur`, `inpainting_mask_invert` and the padding change the box).
    """

    width: int | None = setting(None, "Width", minimum=MIN_JOB_SIDE, maximum=MAX_JOB_SIDE, step=8,
                                hint="The img2img job's width; give height too.")
    height: int | None = setting(None, "Height", minimum=MIN_JOB_SIDE, maximum=MAX_JOB_SIDE, step=8,
                                 hint="The img2img job's height; give width too.")
    resize_mode: int = setting_from(Geometry, "resize_mode")
    scale_by: float | None = setting(
        None, "Resize by", minimum=0.05,  # A1111's "Scale" slider starts at 0.05; its 4 is no limit here
        hint="The size is the image's times this (A1111's Resize by tab).",
    )
    mask: Image.Image | None = setting(None, "Inpaint mask", hint="White = repaint.")
    inpaint_full_res: bool = setting(False, "Inpaint area: Only masked", hint="Needs the mask.")
    inpaint_full_res_padding: int = setting(
        32, "Only masked padding, pixels", minimum=0, maximum=MAX_JOB_SIDE,  # A1111's slider: 0..256
    )
    mask_blur: int = setting(
        4, "Mask blur", minimum=0, maximum=64, step=1,  # A1111's default and slider bounds
        hint="In pixels; it changes the Only masked region too.",
    )
    inpainting_mask_invert: bool = setting(False, "Mask mode: Inpaint not masked")

    def size_for(self, image: Image.Image | None) -> tuple[int, int]:
        """The job's (width, height) for this init image."""
        if self.scale_by is not None and image is not None:
            return int(image.width * self.scale_by), int(image.height * self.scale_by)
        if self.width is None or self.height is None:
            raise SettingsError("Depth2img: give the img2img job's 'width' and 'height'.")
        return self.width, self.height
