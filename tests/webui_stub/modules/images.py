"""Stand-in for `modules.images`: resize modes, flatten, read, save_image, image_grid (own code)."""

from __future__ import annotations

import os

from modules import shared
from PIL import Image, ImageOps, PngImagePlugin

saved: list[str] = []
"""Paths written by save_image, in order."""


def resize_image(resize_mode, im, width, height, upscaler_name=None):
    """0 stretch, 1 cover and centre-crop, 2 fit, centre and fill the borders with the stretched edge
    rows (or columns); sides rounded down, an odd border leaves one black line (no upscalers)."""
    if resize_mode in (0, 3):
        return im.resize((width, height), resample=Image.LANCZOS)
    ratio, src_ratio = width / height, im.width / im.height
    if resize_mode == 1:
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
    else:
        src_w = width if ratio < src_ratio else im.width * height // im.height
        src_h = height if ratio >= src_ratio else im.height * width // im.width
    resized = im.resize((src_w, src_h), resample=Image.LANCZOS)
    res = Image.new("RGB", (width, height))
    left, top = width // 2 - src_w // 2, height // 2 - src_h // 2
    res.paste(resized, box=(left, top))
    if resize_mode == 2 and top > 0:  # a zero-height box stretches the edge row
        res.paste(resized.resize((width, top), box=(0, 0, width, 0)), box=(0, 0))
        res.paste(resized.resize((width, top), box=(0, src_h, width, src_h)), box=(0, top + src_h))
    elif resize_mode == 2 and left > 0:
        res.paste(resized.resize((left, height), box=(0, 0, 0, height)), box=(0, 0))
        res.paste(resized.resize((left, height), box=(src_w, 0, src_w, height)), box=(left + src_w, 0))
    return res


def flatten(img, bgcolor):
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, bgcolor)
        background.paste(img, mask=img)
        img = background
    return img.convert("RGB")


def fix_image(image):
    if image is None:
        return None
    return ImageOps.exif_transpose(image)


def read(fp, **kwargs):
    return fix_image(Image.open(fp, **kwargs))


def image_grid(imgs, batch_size=1, rows=None):
    width, height = imgs[0].size
    grid = Image.new("RGB", (width * len(imgs), height))
    for i, img in enumerate(imgs):
        grid.paste(img.convert("RGB"), box=(i * width, 0))
    return grid


def save_image(
    image,
    path,
    basename,
    seed=None,
    prompt=None,
    extension="png",
    info=None,
    short_filename=False,
    no_prompt=False,
    grid=False,
    pnginfo_section_name="parameters",
    p=None,
    existing_info=None,
    forced_filename=None,
    suffix="",
    save_to_dirs=None,
):
    os.makedirs(path, exist_ok=True)
    number = len([name for name in os.listdir(path) if not name.endswith(".txt")])
    file_decoration = forced_filename or f"{number:05}-{seed}{suffix}"
    fullfn = os.path.join(path, f"{basename}{file_decoration}.{extension}")
    pnginfo = None
    if info is not None and shared.opts.enable_pnginfo:
        pnginfo = PngImagePlugin.PngInfo()
        pnginfo.add_text(pnginfo_section_name, info)
    image.save(fullfn, pnginfo=pnginfo)
    saved.append(fullfn)
    return fullfn, None
