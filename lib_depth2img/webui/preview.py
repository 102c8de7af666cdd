"""What the Show depth map button reads from A1111's page: the init image of the active sub-tab
and the geometry its Generate would use (size or "Resize by" scale, resize mode, inpaint area,
mask), so the preview is the job's own depth map.

The panel is built inside A1111's script section; the controls it reads are made by A1111, found
by their elem_ids as they are created (`after_component`), usually before the panel, in a
reordered page possibly after it: the preview is wired as soon as both exist.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from modules import images

from ..depthmaps.geometry import GeometryRequest
from ..ui.panel import DepthPanel, PreviewSource, selected_image, wire_preview

INIT_IMAGE_ELEM_IDS = ("img2img_image", "img2img_sketch", "img2maskimg", "inpaint_sketch", "img_inpaint_base")
"""A1111's img2img init-image components, in the order of its sub-tabs (Batch has none)."""
INPAINT_TAB, INPAINT_UPLOAD_TAB = 2, 4
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
    """Collects A1111's controls for one tab and wires the panel's preview once all are there."""

    def __init__(self, is_img2img: bool) -> None:
        self.is_img2img = is_img2img
        self.wanted = {**dict.fromkeys(INIT_IMAGE_ELEM_IDS if is_img2img else ()), **{
            elem_id: None for elem_id in FIELD_ELEM_IDS[is_img2img].values()}}
        self.components: dict[str, Any] = {}
        self.panel: DepthPanel | None = None
        self.wired = False

    def capture(self, component: Any) -> None:
        elem_id = getattr(component, "elem_id", None)
        if elem_id in self.wanted and elem_id not in self.components:
            self.components[elem_id] = component
            self._wire_when_ready()

    def attach(self, panel: DepthPanel) -> None:
        self.panel = panel
        self._wire_when_ready()

    def _wire_when_ready(self) -> None:
        if self.wired or self.panel is None or set(self.wanted) - set(self.components):
            return
        fields = {name: self.components[elem_id] for name, elem_id in FIELD_ELEM_IDS[self.is_img2img].items()}
        sources = [self.components[elem_id] for elem_id in INIT_IMAGE_ELEM_IDS] if self.is_img2img else []
        wire_preview(self.panel, PreviewSource(sources, TAB_BARS[self.is_img2img], fields, read_geometry))
        self.wired = True


def read_geometry(
    selected: Sequence[int], sources: Sequence[Any], fields: Mapping[str, Any]
) -> tuple[Any, GeometryRequest]:
    """(init image, geometry) as `modules.img2img.img2img` takes them from the same values."""
    tab = selected[0] if selected else 0
    value = sources[tab] if 0 <= tab < len(sources) else None
    image = selected_image(sources, tab)
    mask = None
    if tab == INPAINT_TAB and isinstance(value, dict):
        mask = value.get("mask")
    elif tab == INPAINT_UPLOAD_TAB:
        mask = fields.get("mask")
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
