"""What the Depth2img script does in A1111, hook by hook; `scripts/depth2img.py` only delegates here.

Per job, `before_process` either leaves `p` untouched (Enable off: the job is A1111's own), or
attaches a `DepthJob`: the checkpoint override, the depth conditioning that shadows two bound
methods on this `p` only, and the PNG info. `postprocess` adds or saves the depth maps and
detaches everything. A1111 calls script hooks inside try/except and only logs what they raise,
so a user error cannot be raised from a hook: it is raised from the shadowed `p.init`, which
A1111 calls unguarded, before anything is generated; the UI then shows the message and the API
answers with its status code (A1111's API middleware reads `status_code`/`detail` from it).
"""

from __future__ import annotations

import dataclasses
import glob
import inspect
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fastapi.routing import APIRoute
from modules import images, script_callbacks

from ..depthmaps.values import depth_to_16bit, depth_to_preview, load_depth_map
from ..errors import ImageError, SettingsError
from ..images import IMAGE_EXTENSIONS, load_base64_image
from ..settings import Depth2imgArgs
from . import api, checkpoint_swap, depth_service, infotext_xyz, settings
from .conditioning import TXT2IMG_NEEDS_DEPTH_MAP, DepthConditioner
from .preview import PreviewWiring

log = logging.getLogger(__name__)

TITLE = infotext_xyz.TITLE
A1111_API_PREFIX = "/sdapi/v1/"
JOB_ATTRIBUTE = "depth2img_job"
SHADOWED_METHODS = ("img2img_image_conditioning", "txt2img_image_conditioning", "init")
DEPTH_SUFFIX = "-depth"


# -- start-up and UI --------------------------------------------------------------------------------

def register_callbacks() -> None:
    """Settings section, infotext paste, XYZ axes and HTTP routes; A1111 clears script callbacks
    before it reloads the scripts, so this runs at every load of the script file."""
    settings.register()
    infotext_xyz.register()
    script_callbacks.on_app_started(_mount_api, name="depth2img api")


def _mount_api(demo: Any, app: Any) -> None:
    """The routes beside A1111's own API and behind the same access rules: only where A1111's API is
    on (`--api`, `--nowebui`), with the dependencies of its routes (its `--api-auth` check)."""
    dependencies = a1111_api_dependencies(app)
    if dependencies is None:
        log.info("Depth2img: A1111's API is off, so are the /depth2img/v1 routes; start A1111 with --api to use them.")
        return
    api.mount(app, depth_service, dependencies)


def a1111_api_dependencies(app: Any) -> list[Any] | None:
    """The dependencies A1111 (`modules.api.api.Api.add_api_route`) puts on each of its own routes:
    `Depends(Api.auth)` under `--api-auth`, none without; None where A1111's API is not on `app`."""
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path.startswith(A1111_API_PREFIX):
            return list(route.dependencies)
    return None


def capture_component(script: Any, component: Any) -> None:
    """Offer each A1111 component (from `after_component`) to the tab's preview wiring."""
    _preview_wiring(script).capture(component)


def build_ui(script: Any, is_img2img: bool) -> list[Any]:
    """The panel in this tab; returns its controls in `Depth2imgArgs` order (the script's args)."""
    from modules.ui_components import FormRow, InputAccordion, ToolButton

    from ..ui.panel import HostWidgets, build_panel

    panel = build_panel(
        "img2img" if is_img2img else "txt2img", depth_service,
        widgets=HostWidgets(InputAccordion, ToolButton, FormRow, tooltips=True),
    )
    _preview_wiring(script, is_img2img).attach(panel)
    panel.controls["estimator"].value = settings.value(settings.ESTIMATOR)
    panel.controls["save_depth"].value = settings.value(settings.SAVE_DEPTH)
    script.infotext_fields = panel.infotext_fields
    script.paste_field_names = infotext_xyz.paste_field_names(panel.infotext_fields)
    return panel.inputs


def _preview_wiring(script: Any, is_img2img: bool | None = None) -> PreviewWiring:
    """The script instance's wiring; A1111 creates one script instance per tab and sets
    `is_img2img` on it before it offers the components."""
    wiring = getattr(script, "preview_wiring", None)
    if wiring is None:
        wiring = script.preview_wiring = PreviewWiring(script.is_img2img if is_img2img is None else is_img2img)
    return wiring


# -- a job ------------------------------------------------------------------------------------------

def parse_args(values: Sequence[Any]) -> Depth2imgArgs:
    """The script's args: the UI's positional values, or over the API a positional list or one dict
    of named fields (A1111 fills the positions after it with the UI defaults, which are ignored)."""
    values = list(values)
    if values and isinstance(values[0], Mapping):
        values = [dict(values[0])]
    args = Depth2imgArgs.from_values(values)
    if isinstance(args.depth_image, str):  # the API sends images as base64, never as server paths
        args = dataclasses.replace(args, depth_image=load_base64_image(args.depth_image, name="depth_image"))
    return args


def before_process(p: Any, values: Sequence[Any]) -> None:
    """Attach a job when Enable is on. Whatever fails here stops the job (A1111 would log it and
    generate without depth2img, on the wrong model): user errors with their message, bugs with theirs."""
    DepthJob.detach(p)  # one left by a failed job on a `p` that A1111 reuses (the batch tab)
    if not _enable_requested(values):
        return
    try:
        args = parse_args(values)
        if args.enabled:
            DepthJob.attach(p, args)
    except Exception as error:  # noqa: BLE001  (re-raised from p.init, unguarded by A1111)
        refuse(p, error)


def postprocess(p: Any, processed: Any) -> None:
    job = vars(p).get(JOB_ATTRIBUTE)
    if job is not None:
        try:
            job.add_results(processed)
        finally:
            DepthJob.detach(p)


def refuse(p: Any, error: Exception) -> None:
    """Stop this job before it generates anything, with `error` as the message the user sees
    (over the API with its HTTP status)."""

    def init(*args: Any, **kwargs: Any) -> None:
        with api.a1111_api_status():
            raise error

    p.init = init
    setattr(p, JOB_ATTRIBUTE, DepthJob(p, None, None))


class DepthJob:
    """What depth2img changed on one `p`, and how to put it back."""

    def __init__(self, p: Any, conditioner: DepthConditioner | None, previous_override: dict[str, Any] | None) -> None:
        self.p = p
        self.conditioner = conditioner
        self.previous_override = previous_override

    @classmethod
    def attach(cls, p: Any, args: Depth2imgArgs) -> None:
        is_txt2img = getattr(p, "init_images", None) is None
        if is_txt2img and args.depth_image is None:
            raise SettingsError(TXT2IMG_NEEDS_DEPTH_MAP)
        args = _with_batch_depth_map(args)
        target = checkpoint_swap.choose_depth_checkpoint(args.checkpoint, checkpoint_swap.job_checkpoint(p))
        # what would fail mid-job fails now, before the swap loads the depth model
        depth_service.estimator_weights(args)
        if args.depth_image is not None:
            load_depth_map(args.depth_image, name="depth_image")
        previous_override = checkpoint_swap.override_checkpoint(p, target)
        conditioner = DepthConditioner(p, args)
        p.img2img_image_conditioning = conditioner.img2img_image_conditioning
        if is_txt2img:
            p.txt2img_image_conditioning = conditioner.txt2img_image_conditioning
        p.extra_generation_params.update(args.to_infotext())
        setattr(p, JOB_ATTRIBUTE, cls(p, conditioner, previous_override))

    @staticmethod
    def detach(p: Any) -> None:
        """Remove every instance attribute depth2img set on `p` and give back its override dict."""
        job = vars(p).pop(JOB_ATTRIBUTE, None)
        if job is None:
            return
        for name in SHADOWED_METHODS:
            vars(p).pop(name, None)
        if job.previous_override is not None:
            p.override_settings = job.previous_override

    def add_results(self, processed: Any) -> None:
        """Show and/or save the depth maps the job used, as the panel's checkboxes ask."""
        if self.conditioner is None or not self.conditioner.depth_maps:
            return
        args, p = self.conditioner.args, self.p
        info = processed.infotexts[processed.index_of_first_image] if processed.infotexts else processed.info
        for index, depth in enumerate(self.conditioner.depth_maps):
            if args.save_depth and p.save_samples():
                seed = p.all_seeds[min(index, len(p.all_seeds) - 1)]  # init image i feeds batch item i
                images.save_image(depth_to_16bit(depth), p.outpath_samples, "", seed, p.all_prompts[0], "png",
                                  info=info, p=p, suffix=DEPTH_SUFFIX)
            if args.append_depth:
                processed.images.append(depth_to_preview(depth))
                processed.infotexts.append(info)


# -- helpers ----------------------------------------------------------------------------------------

def _enable_requested(values: Sequence[Any]) -> bool:
    """Whether the args ask for depth2img at all, read before parsing: with Enable off, even
    invalid values leave the job to A1111."""
    if not values:
        return False
    first = values[0]
    enabled = first.get("enabled", False) if isinstance(first, Mapping) else first
    return enabled not in (False, None, 0, "", "false", "False", "0")


def batch_input_file() -> Path | None:
    """The input file of the current job of img2img's Batch tab, or None outside it.

    `modules.img2img.process_batch` runs one job per file on the same `p` and keeps the file's
    path in its loop variable `image` (A1111 v1.10); the image it hands over has lost its name.
    """
    frame = inspect.currentframe()
    try:
        while frame is not None:
            if frame.f_code.co_name == "process_batch" and frame.f_globals.get("__name__") == "modules.img2img":
                image = frame.f_locals.get("image")
                return Path(image) if isinstance(image, str) else None
            frame = frame.f_back
        return None
    finally:
        del frame


def _with_batch_depth_map(args: Depth2imgArgs) -> Depth2imgArgs:
    """In the Batch tab with a depth folder: the depth map named like the current input file."""
    if not args.depth_folder:
        return args
    source = batch_input_file()
    if source is None:
        return args  # the folder only pairs maps with the Batch tab's files
    folder = Path(args.depth_folder)
    if not folder.is_dir():
        raise ImageError(f"Depth2img: the depth maps folder {folder} does not exist.")
    for stem in (source.stem, source.stem + DEPTH_SUFFIX):
        for path in sorted(folder.glob(f"{glob.escape(stem)}.*")):
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                return dataclasses.replace(args, depth_image=str(path))
    raise ImageError(
        f"Depth2img: no depth map for {source.name} in {folder} (looked for {source.stem}.png, .jpg, ... "
        f"and {source.stem}{DEPTH_SUFFIX}.*); name each depth map like its input image."
    )
