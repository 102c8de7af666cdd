"""The standalone web app: the extension's Depth2img panel over the project's own engine.

    app = build_app(EngineServices(models_dir, startup_checkpoint=path), outputs_dir)
    app.blocks.launch(server_name="127.0.0.1", server_port=7862)

The page is the img2img tab in small: an init image and an optional inpaint mask, the prompts
and sampler settings, the very panel that A1111 shows (built by `ui.panel.build_panel`, with
its browser script and style), Generate and Stop, and the results. A job is one
`Depth2ImgPipeline` call; its images are saved with their A1111 infotext in the outputs folder
and the gallery shows those files, so what the user downloads carries its parameters.
Mistakes the user can fix end in the status line, never as a stack trace, and the next job runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import html
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from ..depthmaps.geometry import GeometryRequest
from ..depthmaps.values import depth_to_16bit
from ..engine.pipeline import GenerationRequest, GenerationResult
from ..engine.samplers import SAMPLER_NAMES, SCHEDULE_TYPES
from ..errors import Depth2imgError
from ..images import load_image, make_output_folder, save_atomically
from ..infotext import png_info
from ..settings import Depth2imgArgs
from .engine_services import EngineServices, load_init_image
from .panel import (
    DepthPanel,
    HostWidgets,
    PreviewSource,
    build_panel,
    js_option,
    keep_undecodable_uploads,
    wire_preview,
)

log = logging.getLogger(__name__)

APP_TITLE = "Depth2img"
PANEL_TAB = "panel"  # elem_ids of the panel: depth2img_panel_<field>; the app's own: depth2img_app_<name>
DEMO_BANNER = "Demo checkpoint: random weights, it draws noise \u2014 for trying the flow"
MASK_NAME = "the inpaint mask"
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
PANEL_SCRIPT = _PROJECT_ROOT / "javascript" / "depth2img.js"
PANEL_STYLE = _PROJECT_ROOT / "style.css"
LOCAL_FONTS_THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
)  # gradio's default fetches its fonts from Google: a local app should not call out
APP_STYLE = """
.depth2img-app-notice p { margin: 0; padding: var(--spacing-md) var(--spacing-lg);
    border-radius: var(--radius-md); font-weight: 600; }
.depth2img-app-demo p { color: #7a4d00; background: #fff3cd; border: 1px solid #e0b84d; }
.depth2img-app-missing p { color: var(--error-text-color); background: var(--error-background-fill);
    border: 1px solid var(--error-border-color); }
.depth2img-app-status p { margin: 0; font-size: var(--text-sm); color: var(--body-text-color-subdued); }
.depth2img-app-status p.depth2img-app-error { color: var(--error-text-color); }
"""


@dataclass(frozen=True)
class JobControl:
    """How one `GenerationRequest` setting appears in the app: the kind of control and what only
    the app adds (`note` after the label, gradio options); label, bounds and default are the request's."""

    make: Callable[..., Any]
    note: str = ""
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


_FROM_IMAGE = 0  # a width/height of 0 means the init image's (or depth map's) own size
JOB_CONTROLS: dict[str, JobControl] = {
    "prompt": JobControl(gr.Textbox, options={"lines": 2, "placeholder": "what the picture becomes"}),
    "negative_prompt": JobControl(gr.Textbox, options={"lines": 1}),
    "sampler": JobControl(gr.Dropdown, options={"choices": list(SAMPLER_NAMES)}),
    "schedule_type": JobControl(gr.Dropdown, options={"choices": list(SCHEDULE_TYPES)}),
    "steps": JobControl(gr.Slider),
    "cfg_scale": JobControl(gr.Slider),
    "denoising_strength": JobControl(gr.Slider),
    "seed": JobControl(gr.Number, "-1 = random", {"precision": 0}),
    "width": JobControl(gr.Slider, "0 = the image's", {"minimum": _FROM_IMAGE}),
    "height": JobControl(gr.Slider, "0 = the image's", {"minimum": _FROM_IMAGE}),
    "batch_size": JobControl(gr.Slider),
    "mask_blur": JobControl(gr.Slider),
    "resize_mode": JobControl(gr.Dropdown, options={"type": "index"}),  # the modes are 0, 1, 2, 3 in order
}
"""The sampler settings, in the order of the generate callback's inputs after the two images."""
SETTING_ROWS = (
    ("sampler", "schedule_type"), ("steps", "cfg_scale"), ("denoising_strength", "seed"), ("width", "height"),
    ("resize_mode", "batch_size"), ("mask_blur",),
)
GenerateOutputs = tuple[Any, Any, str, Any]
"""Generate's outputs: gallery, the depth map used (into the panel's preview), status, infotext."""
_DEFAULTS = {**GenerationRequest.defaults(), "width": _FROM_IMAGE, "height": _FROM_IMAGE}
_DEFAULTS["resize_mode"] = dict(GenerationRequest.spec("resize_mode").choices)[_DEFAULTS["resize_mode"]]
"""The request's defaults as the controls show them."""


@dataclass
class DepthApp:
    """The built app: its Blocks, and the parts the tests drive."""

    blocks: gr.Blocks
    panel: DepthPanel
    runner: JobRunner
    init_image: Any
    mask: Any
    job_controls: dict[str, Any]
    generate_button: Any
    stop_button: Any
    gallery: Any
    status: Any
    infotext: Any
    notice: Any


def build_app(services: EngineServices, outputs_dir: Path) -> DepthApp:
    """Lay out the app around the shared panel and wire Generate, Stop and the notice."""
    runner = JobRunner(services, outputs_dir)
    with gr.Blocks(
        title=APP_TITLE, theme=LOCAL_FONTS_THEME, css=PANEL_STYLE.read_text(encoding="utf-8") + APP_STYLE,
        analytics_enabled=False,
    ) as blocks:
        notice = gr.HTML(notice_html(services), elem_id="depth2img_app_notice")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):  # wide enough for the panel's own depth map and preview side by side
                job_controls = {name: _job_control(name) for name in ("prompt", "negative_prompt")}
                with gr.Row():
                    init_image = _upload("Init image", "depth2img_app_init_image")
                    mask = _upload("Inpaint mask (optional, white = repaint)", "depth2img_app_mask")
                panel = build_panel(
                    PANEL_TAB, services,
                    widgets=HostWidgets(input_accordion=_always_enabled_accordion), show_depth_folder=False,
                )
            with gr.Column(scale=2):
                with gr.Row():
                    generate_button = gr.Button(
                        "Generate", variant="primary", elem_id="depth2img_app_generate"
                    )
                    stop_button = gr.Button("Stop", variant="stop", elem_id="depth2img_app_stop")
                gallery = gr.Gallery(
                    label="Results", columns=2, height=360, object_fit="contain",
                    elem_id="depth2img_app_gallery",
                )
                status = gr.HTML(elem_id="depth2img_app_status", elem_classes=["depth2img-app-status"])
                for row in SETTING_ROWS:
                    with gr.Row():
                        job_controls.update((name, _job_control(name)) for name in row)
                infotext = gr.Textbox(
                    label="Generation parameters", lines=3, interactive=False, show_copy_button=True,
                    elem_id="depth2img_app_infotext",
                )
        geometry_fields = {name: job_controls[name] for name in ("width", "height", "resize_mode")}
        wire_preview(panel, PreviewSource([init_image], fields=geometry_fields, read=_preview_geometry))
        titles = services.depth_checkpoint_titles()
        if titles:  # show which checkpoint an empty choice means
            panel.controls["checkpoint"].value = titles[0]

        def generate(progress: gr.Progress = gr.Progress(), *values: Any) -> GenerateOutputs:  # noqa: B008
            # gradio 3.41 hands a gr.Progress only to a positional parameter, so it comes first here
            return runner.generate(*values, progress=progress)

        def update_notice() -> str:
            return notice_html(services)

        job = generate_button.click(
            generate,
            inputs=[init_image, mask, *(job_controls[name] for name in JOB_CONTROLS), *panel.inputs],
            outputs=[gallery, panel.preview_image, status, infotext],
        )
        job.then(update_notice, inputs=[], outputs=[notice], show_progress="hidden")  # the demo, or not
        stop_button.click(runner.stop, inputs=[], outputs=[status], queue=False)  # not behind the job
        for button in (panel.refresh_button, panel.install_button):  # a checkpoint may have arrived
            button.click(update_notice, inputs=[], outputs=[notice], show_progress="hidden")
        blocks.load(None, **js_option(_script_loader(PANEL_SCRIPT.read_text(encoding="utf-8"))))
    blocks.queue()  # progress needs it; one job at a time, previews wait behind it
    return DepthApp(
        blocks, panel, runner, init_image, mask, job_controls, generate_button, stop_button, gallery,
        status, infotext, notice,
    )


def _preview_geometry(
    selected: Sequence[int], images: Sequence[Any], fields: Mapping[str, Any]
) -> tuple[Any, GeometryRequest]:
    """The init image and the size and resize mode Generate will use (0: not given, from the image)."""
    width, height = (int(fields[side] or _FROM_IMAGE) or None for side in ("width", "height"))
    return images[0], GeometryRequest(width=width, height=height, resize_mode=int(fields["resize_mode"] or 0))


class JobRunner:
    """Generate and Stop: UI values -> one pipeline call -> PNGs with infotext in the outputs folder."""

    def __init__(self, services: EngineServices, outputs_dir: Path) -> None:
        self.services = services
        self.outputs_dir = Path(outputs_dir)
        self.cancel = threading.Event()
        self.running = threading.Event()

    def generate(
        self, init_image: Any, mask: Any, *values: Any, progress: Callable[..., Any] | None = None
    ) -> GenerateOutputs:
        """(gallery, depth preview, status, infotext) for the UI values (`JOB_CONTROLS` then the panel's);
        a user's mistake changes only the status. `progress`: a gr.Progress, fed after every step."""
        started = time.perf_counter()
        self.cancel.clear()
        self.running.set()
        try:
            request = self.request(init_image, mask, values)
            pipeline = self.services.pipeline(request.depth.checkpoint, request.depth.estimator)
            report = None if progress is None else (
                lambda done, total: progress((done, total), desc="Sampling", unit="steps")
            )
            result = pipeline(request, progress=report, cancel=self.cancel)
            gallery = self.save(result, request.depth)
        except Depth2imgError as error:
            return self.failed(str(error))
        except Exception as error:  # a bug: the traceback goes to the console, the app stays usable
            log.exception("Depth2img app: the job failed")
            return self.failed(
                f"The job failed ({type(error).__name__}: {error}); the console has the details."
            )
        finally:
            self.running.clear()
        seeds = ", ".join(map(str, result.seeds))
        message = (
            f"{len(result.images)} image(s) in {time.perf_counter() - started:.1f} s, seed(s) {seeds}; "
            f"saved in {self.day_folder()}."
        )
        return gallery, result.depth_preview, status_html(message), result.infotexts[0]

    def failed(self, message: str) -> GenerateOutputs:
        """Generate's outputs after a failed job: the message, everything else as it was."""
        return gr.update(), gr.update(), status_html(message, error=True), gr.update()

    def stop(self) -> str:
        """Ask the running job to stop after its current sampling step."""
        if not self.running.is_set():
            return status_html("No job is running.")
        self.cancel.set()
        return status_html("Stopping after the current step\u2026")

    def request(self, init_image: Any, mask: Any, values: Sequence[Any]) -> GenerationRequest:
        """The job the UI values describe; `Depth2imgError` for anything the user must fix."""
        job_values = dict(zip(JOB_CONTROLS, values[: len(JOB_CONTROLS)], strict=True))
        for side in ("width", "height"):
            if job_values[side] == _FROM_IMAGE:
                job_values[side] = None
        depth = Depth2imgArgs.from_values(values[len(JOB_CONTROLS):])
        return GenerationRequest(
            init_image=load_init_image(init_image),
            mask=None if mask is None else load_image(mask, name=MASK_NAME),
            depth=dataclasses.replace(depth, enabled=True),
            **job_values,
        )

    def save(self, result: GenerationResult, depth: Depth2imgArgs) -> list[tuple[str, str]]:
        """Write the images (and the 16-bit depth map if asked) atomically; gallery items of the files."""
        folder = make_output_folder(self.day_folder())
        number = _next_number(folder)
        gallery = []
        items = zip(result.images, result.seeds, result.infotexts, strict=True)
        for offset, (image, seed, infotext) in enumerate(items):
            path = folder / f"{number + offset:05d}-{seed}.png"
            save_atomically(image, path, pnginfo=png_info(infotext))
            gallery.append((str(path), f"seed {seed}"))
        if depth.save_depth:
            save_atomically(depth_to_16bit(result.depth), folder / f"{number:05d}-{result.seeds[0]}-depth.png")
        if depth.append_depth:
            gallery.append((result.depth_preview, "depth map"))
        return gallery

    def day_folder(self) -> Path:
        return self.outputs_dir / datetime.date.today().isoformat()


def notice_html(services: EngineServices) -> str:
    """The banner above the app: the demo warning, or where to put a checkpoint; empty otherwise."""
    loaded = services.loaded
    if loaded is not None and loaded.model.is_demo:
        return _paragraph(DEMO_BANNER, "depth2img-app-notice depth2img-app-demo")
    if loaded is None and not services.depth_checkpoint_titles():
        missing = services.missing_checkpoint_message()
        return _paragraph(missing, "depth2img-app-notice depth2img-app-missing")
    return ""


def status_html(message: str, *, error: bool = False) -> str:
    kind = "depth2img-app-error" if error else "depth2img-app-info"
    return f'<p class="{kind}">{html.escape(message)}</p>'


def _paragraph(message: str, classes: str) -> str:
    return f'<div class="{classes}"><p>{html.escape(message)}</p></div>'


def _job_control(name: str) -> Any:
    """The control of request field `name`: its label and bounds (sliders) or choices from the request."""
    control, spec = JOB_CONTROLS[name], GenerationRequest.spec(name)
    options: dict[str, Any] = {}
    if control.make is gr.Slider:
        options = {"minimum": spec.minimum, "maximum": spec.maximum, "step": spec.step}
    elif spec.choices:
        options = {"choices": [label for _, label in spec.choices]}
    label = f"{spec.label} ({control.note})" if control.note else spec.label
    return control.make(
        label=label, value=_DEFAULTS[name], elem_id=f"depth2img_app_{name}", **{**options, **control.options}
    )


def _upload(label: str, elem_id: str) -> Any:
    """An image upload that keeps the file's mode (alpha for masks, 16 bits) and hands an
    undecodable file on, so the core's image reader says what is wrong with it."""
    upload = gr.Image(label=label, type="pil", image_mode=None, height=240, elem_id=elem_id)
    upload.preprocess = keep_undecodable_uploads(upload.preprocess)
    return upload


@contextlib.contextmanager
def _always_enabled_accordion(value: bool, *, label: str, elem_id: str) -> Iterator[Any]:
    """The panel's accordion, open. Every job here uses depth, so Enable is a hidden True."""
    enabled = gr.Checkbox(True, visible=False, elem_id=f"{elem_id}_enabled")
    with gr.Accordion(label, open=True, elem_id=elem_id):
        yield enabled


def _script_loader(script: str) -> str:
    """Browser code, run once the page is up, that adds the panel's script as a global <script>
    (gradio 3.41 has no option for page scripts; A1111 adds its javascript/ files to the page too)."""
    return (
        "() => { const script = document.createElement('script'); "
        f"script.textContent = {json.dumps(script)}; document.head.appendChild(script); }}"
    )


def _next_number(folder: Path) -> int:
    """A1111's numbering: one more than the highest leading number of the folder's files."""
    numbers = [int(found.group(1)) for path in folder.iterdir() if (found := re.match(r"(\d+)-", path.name))]
    return max(numbers, default=0) + 1
