"""The Depth2img panel: one gradio accordion shared by the A1111 script and the standalone app.

Every control is built from `Depth2imgArgs.specs()` (label, bounds, step, hint), so the panel
never repeats a setting. The panel knows no host: a host passes its services, its image
component(s) and, if it has them, its own layout classes (A1111's `InputAccordion`,
`ToolButton`, `FormRow`) and whether it shows `tooltip=` hints. Runs on gradio 3.41 (A1111
v1.10), 4.40 (Forge) and 5 (the standalone app); it never tests a host's layout objects with
isinstance (Forge's `InputAccordion` is a factory).

Wiring a host (A1111 adapter, from `Script.ui(is_img2img)`)::

    panel = build_panel("img2img" if is_img2img else "txt2img", depth_service,
                        widgets=HostWidgets(InputAccordion, ToolButton, FormRow, tooltips=True))
    wire_preview(panel, PreviewSource(
        images=[img2img_image, img2img_sketch, img2maskimg, inpaint_sketch, img_inpaint_base],
        tabs=["mode_img2img", "img2img_tabs_resize"],   # the selected numbers go to `read`
        fields={"width": width_slider, "height": height_slider, ...},
        read=read_img2img_geometry,                      # -> (image, GeometryRequest)
    ))
    self.infotext_fields = panel.infotext_fields
    return panel.inputs                                  # Depth2imgArgs field order

The standalone app passes its one `gr.Image` and its width, height and resize-mode controls.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import html
import inspect
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from ..depthmaps.geometry import GeometryRequest
from ..depthmaps.source import DepthOrigin, DepthResult
from ..depthmaps.values import depth_to_preview
from ..errors import Depth2imgError
from ..estimators.registry import resolution_note
from ..settings import Depth2imgArgs
from . import DepthServices, depth_png

log = logging.getLogger(__name__)

PANEL_TITLE = "Depth2img"
ELEM_PREFIX = "depth2img"
REFRESH_SYMBOL = "\U0001f504"  # 🔄
NO_CHECKPOINT_MESSAGE = (
    "No depth checkpoint found: put 512-depth-ema.safetensors in models/Stable-diffusion or click Install."
)
_GRADIO_MAJOR = int(gr.__version__.split(".")[0])
_PREVIEW_DIR = Path(tempfile.gettempdir()) / "depth2img-previews"
_ORIGIN_TEXT = {
    DepthOrigin.OWN_MAP: "your depth map",
    DepthOrigin.CACHE: "depth map from the cache (estimated before)",
    DepthOrigin.ESTIMATOR: "depth map estimated by the {estimator} estimator",
}
_BUTTON_HINTS = {
    "refresh": "Look again for depth checkpoints and estimator weights.",
    "install": "Download 512-depth-ema (5.7 GB) from Hugging Face into the models folder.",
    "install_estimator": "Download the chosen estimator's official weights (SHA-256 checked) into the models folder.",
    "preview": "Estimate the depth map of the current image with these settings, as Generate will use it.",
    "depth_file": "The depth map as a 16-bit PNG, without the banding of the 8-bit preview.",
}


@dataclass(frozen=True)
class HostWidgets:
    """Layout classes of the host, so the panel looks native there; plain gradio otherwise.

    `input_accordion(value, label=, elem_id=)` must make an accordion that is also the Enable
    checkbox (A1111 v1.10's `modules.ui_components.InputAccordion`).
    """

    input_accordion: Callable[..., Any] | None = None
    tool_button: Callable[..., Any] | None = None
    form_row: Callable[..., Any] = gr.Row
    tooltips: bool = False
    """True where the host turns a `tooltip=` keyword of any component into the element's title
    (A1111's `modules/gradio_extensons.py`, Forge's `gradio_extensions.py`). Plain gradio has no
    tooltips: a hint is the `info=` text under a control's label, a caption under a setting that
    takes no `info=` (the depth map upload); the buttons, whose labels say what they do, go without."""


GeometryReader = Callable[[Sequence[int], Sequence[Any], Mapping[str, Any]], "tuple[Any, GeometryRequest | None]"]
"""`read(selected_tabs, images, fields) -> (image, geometry)`: the preview's init image (None: your
own depth map alone) and the job's geometry (None: the image's own size) from the page's values."""


@dataclass(frozen=True)
class PreviewSource:
    """Where the preview button takes its image and the job's geometry from, in a host's page.

    images: the init-image components (a sketch tool's {"image", "mask"} value is passed as it is).
    tabs: elem_ids of `gr.Tabs` whose selected tab numbers the browser sends; the first one picks
        which of `images` is uploaded (the others are sent as None).
    fields: components by name (width, height, resize mode, mask, ...) whose values `read` gets.
    read: turns them into (image, GeometryRequest); by default the selected image at its own size.
    """

    images: Sequence[Any] = ()
    tabs: Sequence[str] = ()
    fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    read: GeometryReader | None = None


@dataclass
class DepthPanel:
    """The built panel: the controls a host returns from `ui()` and the parts it may style or test."""

    tab: str
    controls: dict[str, Any]
    """Every setting's component by `Depth2imgArgs` field name."""
    refresh_button: Any
    install_button: Any
    install_estimator_button: Any
    """Shown while the chosen estimator has an official download and is not installed yet."""
    preview_button: Any
    preview_image: Any
    depth_file: Any
    status: Any
    task_id: Any
    """Hidden: the browser puts an A1111 task id here, under which the preview shows its progress."""
    services: DepthServices

    @property
    def inputs(self) -> list[Any]:
        """The settings' components in `Depth2imgArgs` field order: the script's `ui()` return value."""
        return [self.controls[name] for name, _ in Depth2imgArgs.specs()]

    @property
    def infotext_fields(self) -> list[tuple[Any, str]]:
        """(component, PNG-info key) for every setting written to the infotext, for A1111's paste."""
        return [(self.controls[name], spec.infotext) for name, spec in Depth2imgArgs.specs() if spec.infotext]


def keep_undecodable_uploads(preprocess: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """An image upload's preprocessing that hands an undecodable file on as it came.

    gradio raises inside its own preprocessing when an upload is not a readable image, and the
    user sees a bare "Error". Passed on, the file reaches `depthmaps.values.load_depth_map`, whose
    `ImageError` says what is wrong, in the status line for a preview and for a job alike.
    (Wrapped on the instance: a gr.Image subclass would make gradio 4 write a .pyi stub.)
    """

    def tolerant(payload: Any) -> Any:
        try:
            return preprocess(payload)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return getattr(payload, "path", payload)  # gradio 4 passes a FileData, gradio 3 a data URL

    return tolerant


def build_panel(
    tab: str,
    services: DepthServices,
    *,
    widgets: HostWidgets = HostWidgets(),
    show_depth_folder: bool | None = None,
) -> DepthPanel:
    """Build the panel inside the caller's open `gr.Blocks` and wire its refresh and install
    buttons; the host then wires the preview with `wire_preview` once its image and size
    controls exist.

    tab: a short word ("txt2img", "img2img") put into every elem_id: `depth2img_<tab>_<field>`.
    show_depth_folder: show the batch depth-folder box; by default only in the img2img tab.
    """
    builder = _PanelBuilder(tab, services, widgets)
    panel = builder.build(tab == "img2img" if show_depth_folder is None else show_depth_folder)
    builder.wire_buttons(panel)
    return panel


def wire_preview(panel: DepthPanel, source: PreviewSource) -> None:
    """Make Show depth map compute the map of `source`'s image with the job's geometry and the
    panel's settings, exactly as the job will (and into the cache it reads)."""
    services = panel.services
    images, tabs, field_names = list(source.images), list(source.tabs), list(source.fields)
    hidden_tabs = [gr.Number(value=0, precision=0, visible=False) for _ in tabs]
    inputs = [panel.task_id, *hidden_tabs, *images, *source.fields.values(), *panel.inputs]
    no_image_message = (
        "Depth2img: put an image in the current tab first, or upload your own depth map."
        if images else
        f"Depth2img: {panel.tab} has no init image; upload your own depth map to preview it."
    )

    def preview(task_id: str, *values: Any) -> tuple[Any, Any, str]:
        selected = [int(value or 0) for value in values[: len(tabs)]]
        values = values[len(tabs):]
        image_values, values = values[: len(images)], values[len(images):]
        field_values, settings = dict(zip(field_names, values[: len(field_names)])), values[len(field_names):]
        read = source.read or _selected_image_at_own_size
        return _preview_depth(
            services, lambda: read(selected, image_values, field_values), settings, no_image_message, task_id or None
        )

    js = (
        f"(...args) => depth2imgPreviewInputs({json.dumps(tabs)}, {len(images)}, {len(inputs)}, "
        f"{json.dumps(panel.preview_image.elem_id)}, {json.dumps(panel.tab)}, args)"
    )
    panel.preview_button.click(
        preview, inputs=inputs, outputs=[panel.preview_image, panel.depth_file, panel.status], **js_option(js)
    )


def _selected_image_at_own_size(
    selected: Sequence[int], images: Sequence[Any], fields: Mapping[str, Any]
) -> tuple[Any, GeometryRequest | None]:
    return selected_image(images, selected[0] if selected else 0), None


class _PanelBuilder:
    """Lays the controls out from the specs, then wires the buttons to the host's services."""

    def __init__(self, tab: str, services: DepthServices, widgets: HostWidgets) -> None:
        self.tab = tab
        self.services = services
        self.widgets = widgets
        self.controls: dict[str, Any] = {}
        self.defaults = Depth2imgArgs.defaults()

    def elem_id(self, name: str) -> str:
        return f"{ELEM_PREFIX}_{self.tab}_{name}"

    # -- layout ------------------------------------------------------------------------------

    def build(self, show_depth_folder: bool) -> DepthPanel:
        checkpoints = self.services.depth_checkpoint_titles()
        with self.accordion(), gr.Column(elem_classes=["depth2img-panel"]):
            with self.widgets.form_row(elem_classes=["depth2img-row"]):
                self.dropdown("checkpoint", checkpoints)
                refresh_button = self.button(
                    REFRESH_SYMBOL, "refresh", self.widgets.tool_button or gr.Button,
                    elem_classes=["depth2img-tool"],
                )
                install_button = self.button(
                    "Install depth model", "install", visible=not checkpoints,
                    elem_classes=["depth2img-install"],
                )
            with self.widgets.form_row(elem_classes=["depth2img-row"]):
                self.dropdown("estimator", self.services.estimator_choices())
                install_estimator_button = self.button(
                    "Install estimator", "install_estimator",
                    visible=self.defaults["estimator"] in self.services.installable_estimators(),
                    elem_classes=["depth2img-install"],
                )
                self.slider("net_size")
            with gr.Row(elem_classes=["depth2img-images"]):
                with gr.Column():
                    self.own_depth_map("depth_image")
                with gr.Column():
                    preview_image = gr.Image(
                        label="Depth map", type="pil", interactive=False, height=256,
                        elem_id=self.elem_id("preview_image"),
                    )
                    depth_file = gr.File(
                        label="16-bit PNG", interactive=False, elem_id=self.elem_id("depth_file"),
                        elem_classes=["depth2img-file"],
                        **self.hint_options(gr.File, _BUTTON_HINTS["depth_file"]),
                    )
            preview_button = self.button("Show depth map", "preview", elem_classes=["depth2img-preview"])
            self.textbox("depth_folder", visible=show_depth_folder)
            with self.widgets.form_row(elem_classes=["depth2img-row"]):
                self.checkbox("invert")
                self.slider("far_clip")
                self.slider("near_clip")
            with self.widgets.form_row(elem_classes=["depth2img-row"]):
                self.slider("gamma")
                self.slider("blur")
            with self.widgets.form_row(elem_classes=["depth2img-row"]):
                self.checkbox("append_depth")
                self.checkbox("save_depth")
            status = gr.HTML(
                _status_html(NO_CHECKPOINT_MESSAGE, error=True) if not checkpoints else "",
                elem_id=self.elem_id("status"),
            )
            task_id = gr.Textbox(value="", visible=False, elem_id=self.elem_id("task_id"))
        return DepthPanel(
            self.tab, self.controls, refresh_button, install_button, install_estimator_button, preview_button,
            preview_image, depth_file, status, task_id, self.services,
        )

    @contextlib.contextmanager
    def accordion(self) -> Iterator[None]:
        """The panel's accordion; a host's InputAccordion is the Enable control itself."""
        elem_id = f"{ELEM_PREFIX}_{self.tab}"
        if self.widgets.input_accordion is not None:
            with self.widgets.input_accordion(self.defaults["enabled"], label=PANEL_TITLE, elem_id=elem_id) as enable:
                self.controls["enabled"] = enable
                yield
        else:
            with gr.Accordion(PANEL_TITLE, open=False, elem_id=elem_id):
                self.checkbox("enabled")
                yield

    # -- controls from the specs -------------------------------------------------------------

    def setting(self, name: str, make: Callable[..., Any], **options: Any) -> Any:
        spec = Depth2imgArgs.spec(name)
        hint = self.hint_options(make, spec.hint)
        component = make(label=spec.label, elem_id=self.elem_id(name), **hint, **options)
        self.controls[name] = component
        if spec.hint and not hint:  # plain gradio, a component without info=: say it below
            gr.Markdown(spec.hint, visible=options.get("visible", True), elem_classes=["depth2img-caption"])
        return component

    def hint_options(self, make: Callable[..., Any], text: str) -> dict[str, str]:
        """The keyword that carries a hint into `make`: the host's tooltip, else gradio's `info`
        where `make` takes it; none for an empty hint."""
        if not text:
            return {}
        if self.widgets.tooltips:
            return {"tooltip": text}
        return {"info": text} if "info" in inspect.signature(make).parameters else {}

    def checkbox(self, name: str) -> Any:
        return self.setting(name, gr.Checkbox, value=self.defaults[name])

    def textbox(self, name: str, visible: bool = True) -> Any:
        return self.setting(name, gr.Textbox, value=self.defaults[name], visible=visible)

    def slider(self, name: str) -> Any:
        spec = Depth2imgArgs.spec(name)
        return self.setting(
            name, gr.Slider, value=self.defaults[name], minimum=spec.minimum, maximum=spec.maximum, step=spec.step
        )

    def dropdown(self, name: str, choices: list[str]) -> Any:
        # custom values: an infotext paste may name a checkpoint this machine lacks; the job says so
        return self.setting(
            name, gr.Dropdown, value=self.defaults[name], choices=choices, allow_custom_value=True
        )

    def own_depth_map(self, name: str) -> Any:
        # image_mode=None keeps a 16-bit upload 16-bit; gradio's default "RGB" clips it to 8 bits
        upload = self.setting(name, gr.Image, type="pil", image_mode=None, height=256)
        upload.preprocess = keep_undecodable_uploads(upload.preprocess)
        return upload

    def button(self, value: str, name: str, make: Callable[..., Any] = gr.Button, **options: Any) -> Any:
        hint = self.hint_options(make, _BUTTON_HINTS[name])
        return make(value, elem_id=self.elem_id(name), **hint, **options)

    # -- events ------------------------------------------------------------------------------

    def wire_buttons(self, panel: DepthPanel) -> None:
        services = self.services
        checkpoint, estimator = panel.controls["checkpoint"], panel.controls["estimator"]

        def refresh() -> tuple[Any, Any, Any, str]:
            titles = services.depth_checkpoint_titles()
            return (
                gr.update(choices=titles), gr.update(choices=services.estimator_choices()),
                gr.update(visible=not titles), "" if titles else _status_html(NO_CHECKPOINT_MESSAGE, error=True),
            )

        refresh_outputs = [checkpoint, estimator, panel.install_button, panel.status]
        panel.refresh_button.click(refresh, inputs=[], outputs=refresh_outputs)

        def install(progress: gr.Progress = gr.Progress()) -> tuple[Any, Any, Any, str]:  # noqa: B008
            def report(done: int, total: int | None) -> None:
                progress((done, total), desc="Downloading the depth model", unit="bytes")

            try:
                where = services.install_depth_model(progress=report)
            except Depth2imgError as error:
                return gr.update(), gr.update(), gr.update(), _status_html(str(error), error=True)
            *updates, _ = refresh()
            return (*updates, _status_html(f"Depth2img: installed the depth model as {where}."))

        panel.install_button.click(install, inputs=[], outputs=refresh_outputs)

        def show_install_estimator(name: str | None) -> Any:
            return gr.update(visible=name in services.installable_estimators())

        estimator.change(show_install_estimator, inputs=[estimator], outputs=[panel.install_estimator_button])

        def install_estimator(name: str, progress: gr.Progress = gr.Progress()) -> tuple[Any, Any, str]:  # noqa: B008
            def report(done: int, total: int | None) -> None:
                progress((done, total), desc=f"Downloading {name}", unit="bytes")

            try:
                where = services.install_estimator(name, progress=report)
            except Depth2imgError as error:
                return gr.update(), gr.update(), _status_html(str(error), error=True)
            return (
                gr.update(choices=services.estimator_choices()), gr.update(visible=False),
                _status_html(f"Depth2img: installed the {name} estimator as {where}."),
            )

        panel.install_estimator_button.click(
            install_estimator, inputs=[estimator], outputs=[estimator, panel.install_estimator_button, panel.status]
        )


def _preview_depth(
    services: DepthServices,
    read: Callable[[], tuple[Any, GeometryRequest | None]],
    settings: Sequence[Any],
    no_image_message: str,
    task_id: str | None,
) -> tuple[Image.Image | None, str | None, str]:
    """(8-bit preview, 16-bit PNG path, status HTML) for the preview button; never raises for
    the user's mistakes, which go to the status line."""
    started = time.perf_counter()
    try:
        args = Depth2imgArgs.from_values(settings)
        image, geometry = read()
        if image is None and args.depth_image is None:
            raise Depth2imgError(no_image_message)
        result = services.estimate_depth(image, args, geometry, task_id)
    except Depth2imgError as error:
        return None, None, _status_html(str(error), error=True)
    except Exception as error:  # a bug: keep the traceback in the console, keep the WebUI usable
        log.exception("Depth2img preview failed")
        return None, None, _status_html(
            f"Depth2img: the preview failed ({type(error).__name__}: {error}); the console has the details.",
            error=True,
        )
    return depth_to_preview(result.depth), _write_16bit_png(result), _describe(result, args, started)


def _describe(result: DepthResult, args: Depth2imgArgs, started: float) -> str:
    height, width = result.depth.shape
    origin = _ORIGIN_TEXT[result.origin].format(estimator=args.estimator)
    message = f"Depth2img: {origin}, {width} x {height}, {time.perf_counter() - started:.1f} s."
    note = resolution_note(args.estimator, args.net_size)
    if note and result.origin is not DepthOrigin.OWN_MAP:
        message += " " + note
    if float(result.depth.min()) == float(result.depth.max()):
        return _status_html(
            message + " It is flat (one gray level everywhere), so the depth model gets no depth to follow: "
            "check your depth map or the clip settings.",
            error=True,
        )
    return _status_html(message)


def selected_image(sources: Sequence[Any], active: float | None) -> Image.Image | None:
    """The image of the selected source tab; a sketch tool's {"image", "mask"} value gives its image."""
    index = int(active or 0)
    value = sources[index] if 0 <= index < len(sources) else None
    if isinstance(value, dict):  # gradio 3 sketch tools; gradio 4 ImageEditor has "composite"
        value = value.get("image", value.get("composite"))
    return value


def _write_16bit_png(result: DepthResult) -> str:
    """Save the 16-bit map under a name made from its content, so concurrent previews never clash."""
    buffer = depth_png(result.depth, bits=16)
    height, width = result.depth.shape
    digest = hashlib.blake2b(buffer, digest_size=8).hexdigest()
    _PREVIEW_DIR.mkdir(parents=True, exist_ok=True)
    path = _PREVIEW_DIR / f"depth2img-{width}x{height}-{digest}.png"
    if not path.exists():
        path.write_bytes(buffer)
    return str(path)


def _status_html(message: str, *, error: bool = False) -> str:
    kind = "depth2img-status-error" if error else "depth2img-status-info"
    return f'<p class="depth2img-status {kind}">{html.escape(message)}</p>'


def js_option(code: str) -> dict[str, str]:
    """The browser-side function of an event: `_js=` in gradio 3, `js=` in gradio 4 and 5."""
    return {"_js": code} if _GRADIO_MAJOR < 4 else {"js": code}
