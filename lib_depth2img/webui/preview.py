"""What the Show depth map button reads from the WebUI's page: the init image of the active
sub-tab and the geometry its Generate would use (size or "Resize by" scale, resize mode, inpaint
area, mask), so the preview is the job's own depth map.

The panel is built inside the script section; the controls it reads are made by the WebUI, found
by their elem_ids as they are created (`after_component`), usually before the panel, in a
reordered page possibly after it: the preview is wired as soon as both exist.

Forge draws img2img, Sketch, Inpaint and Inpaint sketch on a `ForgeCanvas`: an HTML block with
the elem_id, followed by two hidden image fields, the drawn foreground and the uploaded
background (told by their classes). Its Generate composites the sketch over the background and
takes the inpaint mask from the foreground's alpha; the preview does the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from modules import images
from PIL import Image, ImageFilter

from ..depthmaps.geometry import GeometryRequest
from ..ui.panel import DepthPanel, PreviewSource, selected_image, wire_preview
from . import host

INIT_IMAGE_ELEM_IDS = ("img2img_image", "img2img_sketch", "img2maskimg", "inpaint_sketch", "img_inpaint_base")
"""The img2img init-image elem_ids (A1111's images, Forge's canvases), in sub-tab order (Batch has none)."""
SKETCH_TAB, INPAINT_TAB, INPAINT_SKETCH_TAB, INPAINT_UPLOAD_TAB = 1, 2, 3, 4
FORGE_CANVAS_LAYERS = {"logical_image_foreground": "foreground", "logical_image_background": "background"}
"""Forge's hidden fields of a canvas, by class: what the user drew, and the image under it."""
TAB_BARS = {True: ("mode_img2img", "img2img_tabs_resize"), False: ()}
"""The tab bars whose selection the preview needs: the img2img sub-tab, "Resize to" / "Resize by"."""
FIELD_ELEM_IDS = {
    True: {
        "width": "img2img_width", "height": "img2img_height", "scale_by": "img2img_scale",
        "resize_mode": "resize_mode", "inpaint_full_res": "img2img_inpaint_full_res",
        "inpaint_full_res_padding": "img2img_inpaint_full_res_padding", "mask_blur": "img2img_mask_blur",
        "inpainting_mask_invert": "img2img_mask_mode", "mask": "img_inpaint_mask",
    },
    False: {"width": "txt2img_width", "height": "txt2img_height"},
}
"""A1111's controls by the `GeometryRequest` field (or "mask" upload) they give, per tab."""


class PreviewWiring:
    """Collects the WebUI's controls for one tab and wires the panel's preview once all are there."""

    def __init__(self, is_img2img: bool, forge_canvases: bool = host.IS_FORGE) -> None:
        self.is_img2img = is_img2img
        canvases = _canvas_elem_ids(is_img2img, forge_canvases)
        self.sources = [f"{elem_id}:background" if elem_id in canvases else elem_id
                        for elem_id in (INIT_IMAGE_ELEM_IDS if is_img2img else ())]
        self.fields = dict(FIELD_ELEM_IDS[is_img2img])
        self.fields.update((f"foreground_{INIT_IMAGE_ELEM_IDS.index(elem_id)}", f"{elem_id}:foreground")
                           for elem_id in canvases)
        self.wanted = {*self.sources, *self.fields.values()}
        self.components: dict[str, Any] = {}
        self.canvas: str | None = None
        """The elem_id of the Forge canvas whose hidden fields come next."""
        self.panel: DepthPanel | None = None
        self.wired = False

    def capture(self, component: Any) -> None:
        layer = next((name for css_class, name in FORGE_CANVAS_LAYERS.items()
                      if css_class in (getattr(component, "elem_classes", None) or [])), None)
        key = f"{self.canvas}:{layer}" if layer and self.canvas else getattr(component, "elem_id", None)
        if not layer:
            self.canvas = key
        if key in self.wanted and key not in self.components:
            self.components[key] = component
            self._wire_when_ready()

    def attach(self, panel: DepthPanel) -> None:
        self.panel = panel
        self._wire_when_ready()

    def _wire_when_ready(self) -> None:
        if self.wired or self.panel is None or self.wanted - set(self.components):
            return
        fields = {name: self.components[key] for name, key in self.fields.items()}
        sources = [self.components[key] for key in self.sources]
        wire_preview(self.panel, PreviewSource(sources, TAB_BARS[self.is_img2img], fields, read_geometry))
        self.wired = True


def _canvas_elem_ids(is_img2img: bool, forge_canvases: bool) -> tuple[str, ...]:
    """The init-image elem_ids that Forge draws on a canvas (all but Inpaint upload's)."""
    return INIT_IMAGE_ELEM_IDS[:INPAINT_UPLOAD_TAB] if is_img2img and forge_canvases else ()


def read_geometry(
    selected: Sequence[int], sources: Sequence[Any], fields: Mapping[str, Any]
) -> tuple[Any, GeometryRequest]:
    """(init image, geometry) as the WebUI's img2img takes them from the same values."""
    tab = selected[0] if selected else 0
    value = sources[tab] if 0 <= tab < len(sources) else None
    image = selected_image(sources, tab)
    mask = None
    if tab == INPAINT_TAB and isinstance(value, dict):
        mask = value.get("mask")
    elif tab == INPAINT_UPLOAD_TAB:
        mask = fields.get("mask")
    foreground = fields.get(f"foreground_{tab}")
    if image is not None and foreground is not None:
        image, mask = _forge_canvas(tab, image, foreground, mask)
    resize_by = len(selected) > 1 and selected[1] == 1
    return images.fix_image(image), GeometryRequest(
        width=int(fields.get("width") or 512),
        height=int(fields.get("height") or 512),
        resize_mode=int(fields.get("resize_mode") or 0),
        scale_by=float(fields["scale_by"]) if resize_by and fields.get("scale_by") else None,
        mask=images.fix_image(mask),
        inpaint_full_res=bool(fields.get("inpaint_full_res")),
        inpaint_full_res_padding=int(fields.get("inpaint_full_res_padding") or 0),
        mask_blur=int(fields.get("mask_blur") or 0),
        inpainting_mask_invert=bool(fields.get("inpainting_mask_invert")),
    )


def _forge_canvas(tab: int, background: Image.Image, foreground: Image.Image, mask: Any) -> tuple[Image.Image, Any]:
    """A Forge canvas's image and mask as Forge's `img2img` makes them: the sketch drawn over the
    image, the mask from the drawing's alpha (dilated for Inpaint sketch), binarised."""
    image = background
    if tab in (SKETCH_TAB, INPAINT_SKETCH_TAB):
        image = Image.alpha_composite(background.convert("RGBA"), foreground.convert("RGBA"))
    if tab in (INPAINT_TAB, INPAINT_SKETCH_TAB):
        mask = foreground.convert("RGBA").getchannel("A")
        if tab == INPAINT_SKETCH_TAB:
            mask = mask.filter(ImageFilter.MaxFilter(int(0.015 * min(mask.size)) * 2 + 1))
        mask = mask.point(lambda level: 255 if level > 128 else 0)
    return image, mask
