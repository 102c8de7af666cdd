"""The gradio panel (gradio 5 here; 3.41 and 4.40 in test_gradio_hosts): layout and hints from the specs,
preview, refresh, install, browser side."""

from __future__ import annotations

import base64
import io
import json
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pytest
import webui_stub  # noqa: F401  (first: A1111's `modules`, for its gradio patch)
from modules import gradio_extensons
from PIL import Image
from support.gradio_events import choice_values, event_of, page_scripts, upload

from lib_depth2img.depthmaps.cache import DepthCache
from lib_depth2img.depthmaps.geometry import Geometry, GeometryRequest
from lib_depth2img.depthmaps.source import DepthResult, depth_for_images
from lib_depth2img.settings import Depth2imgArgs
from lib_depth2img.ui.panel import (
    NO_CHECKPOINT_MESSAGE,
    HostWidgets,
    PreviewSource,
    build_panel,
    wire_preview,
)

JS_FILE = Path(__file__).resolve().parent.parent / "javascript" / "depth2img.js"
CHECKPOINT_TITLE = "512-depth-ema.safetensors [ece79d931a]"
A1111_SOURCE_COUNT = 5  # img2img, Sketch, Inpaint, Inpaint sketch, Inpaint upload (then Batch: none)


class StandInServices:
    """What a host hands the panel and the routes, over a given estimator and a real depth cache."""

    def __init__(self, estimator: Any, checkpoints: tuple[str, ...] = (CHECKPOINT_TITLE,)) -> None:
        self.estimator = estimator
        self.checkpoints = list(checkpoints)
        self.cache = DepthCache()
        self.install_formats: list[str] = []
        self.requests: list[tuple[GeometryRequest | None, str | None]] = []
        self.installed_estimators: list[str] = []

    def depth_checkpoint_titles(self) -> list[str]:
        return list(self.checkpoints)

    def estimator_choices(self) -> list[str]:
        return ["embedded", "dpt_hybrid-midas-501f0c75.pt", *self.installed_estimators, *self.installable_estimators()]

    def installable_estimators(self) -> list[str]:
        return [name for name in ("depth_anything_v2_vits",) if name not in self.installed_estimators]

    def install_estimator(self, name: str, progress: Any = None) -> str:
        if progress is not None:
            progress(5, 10)
        self.installed_estimators.append(name)
        return f"models/depth_anything_v2/{name}.pth"

    def estimate_depth(self, image: Image.Image | None, args: Depth2imgArgs, geometry: GeometryRequest | None = None,
                       task_id: str | None = None) -> DepthResult:
        self.requests.append((geometry, task_id))
        frame = None if geometry is None else Geometry(*geometry.size_for(image), geometry.resize_mode)
        return depth_for_images([image], args, lambda: self.estimator, self.cache, geometry=frame)[0]

    def install_depth_model(self, fmt: str = "safetensors", progress: Any = None) -> str:
        if progress is not None:
            progress(0, 10)
            progress(10, 10)
        self.install_formats.append(fmt)
        self.checkpoints.append(f"512-depth-ema.{fmt}")
        return f"models/Stable-diffusion/512-depth-ema.{fmt}"

    def cache_stats(self) -> dict[str, int]:
        return {"entries": len(self.cache), "hits": self.cache.hits, "misses": self.cache.misses}


class InputAccordion(gr.Checkbox):
    """Stand-in of A1111 v1.10.1 `modules.ui_components.InputAccordion`: a hidden checkbox
    `<elem_id>-checkbox` that is the value, and an accordion `<elem_id>` that shows it."""

    def __init__(self, value: bool, **kwargs: Any) -> None:
        self.accordion_id = kwargs["elem_id"]
        super().__init__(value, **{**kwargs, "elem_id": f"{self.accordion_id}-checkbox", "visible": False})
        self.accordion = gr.Accordion(
            label=kwargs["label"], elem_id=self.accordion_id, elem_classes=["input-accordion"], open=value
        )

    def __enter__(self) -> InputAccordion:  # noqa: PYI034
        self.accordion.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.accordion.__exit__(*exc)

    def get_block_name(self) -> str:
        return "checkbox"


def build(tab: str = "img2img", services: Any = None, *, fields: dict[str, Any] | None = None,
          read: Any = None, **options: Any):
    """(demo, panel, source images) built like A1111 builds img2img: sources first, then the script,
    then the preview wired to the sources (and to `fields` read by `read`, when given)."""
    with gr.Blocks() as demo:
        sources = []
        if tab == "img2img":
            with gr.Tabs(elem_id="mode_img2img"):
                for index in range(A1111_SOURCE_COUNT):
                    with gr.Tab(f"source {index}"):
                        sources.append(gr.Image(type="pil"))
        panel = build_panel(tab, services or StandInServices(None), **options)
        tabs = ["mode_img2img"] if sources else []
        wire_preview(panel, PreviewSource(sources, tabs, fields or {}, read))
    return demo, panel, sources


def handler(demo: gr.Blocks, trigger: Any):
    """The Python function wired to `trigger`'s click."""
    return event_of(demo, trigger).fn


def ancestors(block: Any) -> list[Any]:
    found = []
    while block.parent is not None:
        block = block.parent
        found.append(block)
    return found


def values(panel, **changes: Any) -> list[Any]:
    """The panel's input values in field order, as the browser sends them, with `changes`."""
    current = {name: component.value for name, component in panel.controls.items()}
    return [changes.get(name, current[name]) for name, _ in Depth2imgArgs.specs()]


def png_upload(image: Image.Image) -> Any:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return upload(buffer.getvalue())


def status_text(status_html: str) -> str:
    return status_html.replace("&#x27;", "'")


@pytest.fixture
def services(counting_estimator) -> StandInServices:
    return StandInServices(counting_estimator)


# -- layout ------------------------------------------------------------------------------------

@pytest.mark.parametrize("tab", ["txt2img", "img2img"])
def test_inputs_follow_the_settings_order_with_tab_prefixed_ids(tab):
    demo, panel, _ = build(tab)
    names = [name for name, _ in Depth2imgArgs.specs()]
    assert [component.elem_id for component in panel.inputs] == [f"depth2img_{tab}_{name}" for name in names]
    accordion = next(block for block in demo.blocks.values() if block.elem_id == f"depth2img_{tab}")
    assert isinstance(accordion, gr.Accordion) and accordion.label == "Depth2img"
    assert all(accordion in ancestors(component) for component in panel.inputs)


def test_controls_take_labels_bounds_and_defaults_from_the_specs():
    _, panel, _ = build()
    defaults = Depth2imgArgs.defaults()
    for name, spec in Depth2imgArgs.specs():
        component = panel.controls[name]
        assert component.label == spec.label
        if spec.minimum is not None:
            assert isinstance(component, gr.Slider)
            assert (component.minimum, component.maximum, component.step) == (spec.minimum, spec.maximum, spec.step)
        if name != "depth_image":
            assert component.value == defaults[name], name


def test_own_depth_map_keeps_16_bits_and_every_id_is_prefixed():
    demo, panel, _ = build()
    assert panel.controls["depth_image"].image_mode is None
    panel_ids = [block.elem_id for block in demo.blocks.values() if (block.elem_id or "").startswith("depth2img")]
    assert {"depth2img_img2img_preview", "depth2img_img2img_preview_image", "depth2img_img2img_status",
            "depth2img_img2img_refresh", "depth2img_img2img_install", "depth2img_img2img_depth_file"} <= set(panel_ids)
    assert len(panel_ids) == len(set(panel_ids))


def test_two_tabs_share_one_page_without_id_clashes():
    with gr.Blocks() as demo:
        build_panel("txt2img", StandInServices(None))
        build_panel("img2img", StandInServices(None))
    ids = [block.elem_id for block in demo.blocks.values() if block.elem_id]
    assert len(ids) == len(set(ids))


def test_depth_folder_shows_only_in_img2img():
    assert build("img2img")[1].controls["depth_folder"].visible
    assert not build("txt2img")[1].controls["depth_folder"].visible


def test_host_input_accordion_is_the_enable_control():
    _, panel, _ = build(widgets=HostWidgets(input_accordion=InputAccordion))
    enable = panel.inputs[0]
    assert isinstance(enable, InputAccordion) and enable is panel.controls["enabled"]
    assert enable.accordion.elem_id == "depth2img_img2img" and enable.elem_id == "depth2img_img2img-checkbox"
    assert enable.accordion.label == "Depth2img"


def test_infotext_fields_cover_every_setting_with_a_key():
    _, panel, _ = build()
    keys = {key: component.elem_id for component, key in panel.infotext_fields}
    expected = {spec.infotext: f"depth2img_img2img_{name}" for name, spec in Depth2imgArgs.specs() if spec.infotext}
    assert keys == expected


HINTED = [name for name, spec in Depth2imgArgs.specs() if spec.hint]


def test_in_plain_gradio_hints_are_info_text_and_a_caption_under_the_upload():
    demo, panel, _ = build()
    for name in HINTED:
        if name != "depth_image":
            assert panel.controls[name].info == Depth2imgArgs.spec(name).hint, name
    captions = [block.value for block in demo.blocks.values() if isinstance(block, gr.Markdown)]
    assert len(captions) == 1 and Depth2imgArgs.spec("depth_image").hint in captions[0]
    buttons = [panel.preview_button, panel.refresh_button, panel.install_button, panel.depth_file]
    assert not any(getattr(part, "info", None) for part in buttons)  # their labels say what they do


def test_a_webui_host_shows_every_hint_as_a_tooltip(monkeypatch):
    """A1111 and Forge take `tooltip=` on any component and make it the element's title."""
    gradio_extensons.patch(monkeypatch)
    demo, panel, _ = build(widgets=HostWidgets(input_accordion=InputAccordion, tooltips=True))
    for name in HINTED:
        assert panel.controls[name].webui_tooltip == Depth2imgArgs.spec(name).hint, name
        assert not getattr(panel.controls[name], "info", None), name
    assert "Estimate the depth map" in panel.preview_button.webui_tooltip
    assert "5.7 GB" in panel.install_button.webui_tooltip and "16-bit" in panel.depth_file.webui_tooltip
    props = {c["props"].get("elem_id"): c["props"] for c in demo.get_config_file()["components"]}
    assert props["depth2img_img2img_gamma"]["webui_tooltip"] == Depth2imgArgs.spec("gamma").hint
    assert not any(isinstance(block, gr.Markdown) for block in demo.blocks.values())


def test_without_a_depth_checkpoint_the_install_button_and_the_message_show():
    _, missing, _ = build(services=StandInServices(None, checkpoints=()))
    assert missing.install_button.visible and NO_CHECKPOINT_MESSAGE in missing.status.value
    _, found, _ = build()
    assert not found.install_button.visible and found.status.value == ""
    assert choice_values(found.controls["checkpoint"]) == [CHECKPOINT_TITLE]


# -- own depth map upload ------------------------------------------------------------------------

def test_own_depth_map_upload_stays_16_bit():
    levels = (np.arange(64 * 32, dtype=np.uint32).reshape(32, 64) * 31).astype(np.uint16)
    _, panel, _ = build()
    image = panel.controls["depth_image"].preprocess(png_upload(Image.fromarray(levels, mode="I;16")))
    assert image.mode == "I;16" and np.array_equal(np.asarray(image), levels)


def test_undecodable_upload_is_passed_on_for_a_clear_message():
    broken = upload(b"\x89PNG\r\n\x1a\n not really")
    _, panel, _ = build()
    assert panel.controls["depth_image"].preprocess(broken) == getattr(broken, "path", broken)


# -- preview -------------------------------------------------------------------------------------

def test_preview_shows_8_bit_map_offers_16_bit_png_and_fills_the_cache(services, gradient_image):
    demo, panel, _ = build(services=services)
    preview = handler(demo, panel.preview_button)
    sources = [gradient_image, None, None, None, None]

    shown, png_path, status = preview("", 0, *sources, *values(panel))
    assert shown.mode == "L" and shown.size == gradient_image.size
    assert np.asarray(shown)[0, 0] == 0 and np.asarray(shown)[0, -1] == 255  # dark = far, bright = near
    with Image.open(png_path) as sixteen:
        assert sixteen.mode in ("I;16", "I") and np.asarray(sixteen).max() == 65535
    assert "estimated by the embedded estimator, 64 x 48" in status and "error" not in status

    _, _, again = preview("", 0, *sources, *values(panel))
    assert "from the cache" in again and services.estimator.calls == 1


def test_preview_takes_the_active_tab_and_the_image_of_a_sketch_value(services, gradient_image):
    demo, panel, _ = build(services=services)
    preview = handler(demo, panel.preview_button)
    flipped = gradient_image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).convert("RGBA")
    inpaint = {"image": flipped, "mask": Image.new("RGB", flipped.size)}
    shown, _, _ = preview("", 2, gradient_image, None, inpaint, None, None, *values(panel))
    assert np.asarray(shown)[0, 0] == 255  # the flipped inpaint image, not the img2img one


@pytest.mark.parametrize(
    ("tab", "active", "expected"),
    [("img2img", 0, "put an image in the current tab first"),
     ("img2img", A1111_SOURCE_COUNT, "put an image in the current tab first"),  # the Batch tab
     ("txt2img", 0, "txt2img has no init image")],
)
def test_preview_without_an_image_says_what_to_do(services, tab, active, expected):
    demo, panel, sources = build(tab, services=services)
    preview = handler(demo, panel.preview_button)
    tab_numbers = [active] if sources else []
    shown, png_path, status = preview("", *tab_numbers, *[None] * len(sources), *values(panel))
    assert (shown, png_path) == (None, None)
    assert expected in status and "depth2img-status-error" in status


def test_preview_in_txt2img_shows_your_own_depth_map(services):
    demo, panel, _ = build("txt2img", services=services)
    own = Image.fromarray(np.tile(np.arange(32, dtype=np.uint8) * 8, (16, 1)))
    shown, _, status = handler(demo, panel.preview_button)("", *values(panel, depth_image=own))
    assert shown.size == (32, 16) and "your depth map, 32 x 16" in status
    assert services.estimator.calls == 0


def test_preview_of_an_undecodable_depth_map_names_the_problem(services, gradient_image):
    demo, panel, _ = build(services=services)
    broken = panel.controls["depth_image"].preprocess(upload(base64.b64decode("A" * 100)))
    shown, _, status = handler(demo, panel.preview_button)(
        "", 0, gradient_image, None, None, None, None, *values(panel, depth_image=broken)
    )
    assert shown is None and "your depth map" in status and "not an image" in status


def test_preview_of_a_flat_map_warns_that_it_holds_no_depth(services):
    demo, panel, _ = build("txt2img", services=services)
    flat = Image.new("L", (16, 16), 128)
    shown, _, status = handler(demo, panel.preview_button)("", *values(panel, depth_image=flat))
    assert shown is not None and "flat" in status and "depth2img-status-error" in status


def test_preview_with_contradicting_settings_says_which(services, gradient_image):
    demo, panel, _ = build(services=services)
    shown, _, status = handler(demo, panel.preview_button)(
        "", 0, gradient_image, None, None, None, None, *values(panel, far_clip=0.8, near_clip=0.2)
    )
    assert shown is None and "far clip (0.8) must be below near clip (0.2)" in status_text(status)


def test_a_bug_in_the_preview_is_logged_and_reported_without_breaking_the_page(services, gradient_image, caplog):
    def broken_estimate(image, args, geometry=None, task_id=None):
        raise RuntimeError("CUDA out of memory")

    services.estimate_depth = broken_estimate
    demo, panel, _ = build(services=services)
    with caplog.at_level(logging.ERROR):
        shown, _, status = handler(demo, panel.preview_button)(
            "", 0, gradient_image, None, None, None, None, *values(panel)
        )
    assert shown is None and "RuntimeError: CUDA out of memory" in status
    assert any(record.exc_info for record in caplog.records)


def test_preview_asks_the_browser_for_the_selected_tabs_and_a_task_id():
    img2img_demo, _, _ = build("img2img")
    txt2img_demo, _, _ = build("txt2img")
    preview_js = page_scripts(img2img_demo)
    assert preview_js == [('(...args) => depth2imgPreviewInputs(["mode_img2img"], 5, '
                           f'{1 + 1 + 5 + 13}, "depth2img_img2img_preview_image", "img2img", args)')]
    txt2img_js = page_scripts(txt2img_demo)
    assert txt2img_js == [('(...args) => depth2imgPreviewInputs([], 0, 14, "depth2img_txt2img_preview_image", '
                           '"txt2img", args)')]


def test_preview_reads_the_geometry_of_the_job_and_passes_the_task_id(services, gradient_image):
    """The host's fields (here width, height, resize mode) become the job's geometry: the map is
    the job's, at the generation size."""
    with gr.Blocks():
        fields = {"width": gr.Number(), "height": gr.Number(), "resize_mode": gr.Number()}

    def read(selected, images, values):
        return images[selected[0]], GeometryRequest(int(values["width"]), int(values["height"]),
                                                    int(values["resize_mode"]))

    demo, panel, _ = build(services=services, fields=fields, read=read)
    preview = handler(demo, panel.preview_button)
    shown, _, status = preview("task(abc)", 0, gradient_image, None, None, None, None, 32, 40, 1, *values(panel))
    assert shown.size == (32, 40) and "32 x 40" in status
    geometry, task_id = services.requests[-1]
    assert (geometry.width, geometry.height, geometry.resize_mode, task_id) == (32, 40, 1, "task(abc)")


def test_refresh_finds_new_checkpoints_and_hides_the_install_button():
    services = StandInServices(None, checkpoints=())
    demo, panel, _ = build(services=services)
    refresh = handler(demo, panel.refresh_button)
    _, _, install_button, status = refresh()
    assert install_button["visible"] and NO_CHECKPOINT_MESSAGE in status
    services.checkpoints.append(CHECKPOINT_TITLE)
    checkpoint, estimator, install_button, status = refresh()
    assert checkpoint["choices"] == [CHECKPOINT_TITLE] and estimator["choices"] == services.estimator_choices()
    assert not install_button["visible"] and status == ""


def test_install_downloads_reports_where_and_refreshes():
    services = StandInServices(None, checkpoints=())
    demo, panel, _ = build(services=services)
    checkpoint, _, install_button, status = handler(demo, panel.install_button)()
    assert services.install_formats == ["safetensors"]
    assert checkpoint["choices"] == ["512-depth-ema.safetensors"] and not install_button["visible"]
    assert "installed the depth model as models/Stable-diffusion/512-depth-ema.safetensors" in status


def test_a_failed_install_says_why():
    from lib_depth2img.checkpoints.download import DownloadError

    services = StandInServices(None, checkpoints=())

    def offline(fmt: str = "safetensors", progress: Any = None) -> str:
        raise DownloadError("Could not reach huggingface.co (host name not found).")

    services.install_depth_model = offline
    demo, panel, _ = build(services=services)
    *_, status = handler(demo, panel.install_button)()
    assert "Could not reach huggingface.co" in status and "depth2img-status-error" in status


def test_the_install_estimator_button_follows_the_chosen_estimator_and_installs_it():
    services = StandInServices(None)
    demo, panel, _ = build(services=services)
    assert not panel.install_estimator_button.visible  # "embedded" needs nothing
    show = handler(demo, panel.controls["estimator"])
    assert show("depth_anything_v2_vits")["visible"] and not show("embedded")["visible"]
    estimator, button, status = handler(demo, panel.install_estimator_button)("depth_anything_v2_vits")
    assert services.installed_estimators == ["depth_anything_v2_vits"]
    assert "depth_anything_v2_vits" in estimator["choices"] and not button["visible"]
    assert "installed the depth_anything_v2_vits estimator as models/depth_anything_v2/" in status
    assert not show("depth_anything_v2_vits")["visible"]


def test_the_estimator_hint_names_the_licences():
    _, panel, _ = build()
    hint = panel.controls["estimator"].info
    assert "Apache-2.0" in hint and "CC-BY-NC-4.0, non-commercial" in hint


# -- browser side ----------------------------------------------------------------------------------

NODE_HARNESS = """
const vm = require("vm");
const selected = (on) => ({classList: {contains: (name) => on && name === "selected"}});
global.document = {
    querySelector: (css) => css === "#mode_img2img .tab-nav"
        ? {querySelectorAll: () => [selected(false), selected(false), selected(true)]} : null,
};
vm.runInThisContext(require("fs").readFileSync(process.argv[1], "utf8"));
console.log(JSON.stringify({
    img2img: depth2imgPreviewInputs(["mode_img2img"], 3, 6, "p", "img2img", ["", 0, "a", "b", "c", "x", "o1", "o2"]),
    noTabs: depth2imgPreviewInputs(["missing_tabs"], 2, 5, "p", "img2img", ["", 7, "a", "b", "x", "output"]),
}));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run javascript/depth2img.js")
def test_browser_side_sends_only_the_active_image():
    run = subprocess.run(["node", "-e", NODE_HARNESS, str(JS_FILE)], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {
        "img2img": ["", 2, None, None, "c", "x"],
        "noTabs": ["", 0, "a", None, "x"],
    }
