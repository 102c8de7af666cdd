"""Jobs that show how `process_images` treats scripts, `p` and the settings; the recorder that traces them.

The same code runs in two processes: in A1111 v1.10.1's venv against its real `modules`
(tests/tier5/test_a1111_processing_contract.py starts that one), and in the project's venv against
the stand-in in tests/webui_stub. Nothing here imports `modules` at import time, so each process
traces the `modules` it has. A trace is a list of events `(name, facts)` made of plain values, so
the two can be pickled across and compared with `==`.

What is recorded, and why the adapter cares:
- every script hook A1111 calls during a job, with the facts a hook sees (batch number, seeds,
  tensor shapes, whether the hires pass runs): the adapter acts from `before_process` and
  `postprocess`, and its tests assume the stand-in calls hooks in A1111's order;
- `p.init`, `p.sample` and the two image-conditioning methods, called through the instance as
  the adapter shadows them, with the shapes they get and give: the adapter raises from `p.init`
  and replaces the conditioning, also in txt2img's hires pass;
- the watched settings and the loaded checkpoint before, during and after the job: the adapter
  swaps checkpoints through `p.override_settings`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

DEPTH = "512-depth-ema.safetensors"
BASE = "sd2-base-random.safetensors"
"""The checkpoints both sides have under these names (random weights in A1111, fakes in the stand-in)."""

SCRIPT_HOOKS = (
    "setup", "before_process", "process", "before_process_batch", "after_extra_networks_activate",
    "process_batch", "process_before_every_sampling", "post_sample", "on_mask_blend", "postprocess_batch",
    "postprocess_batch_list", "postprocess_image", "postprocess_maskoverlay",
    "postprocess_image_after_composite", "before_hr", "postprocess",
)
"""Every `Script` hook A1111 v1.10.1 calls for a job (its ScriptRunner's job-time methods)."""

P_METHODS = ("init", "sample", "img2img_image_conditioning", "txt2img_image_conditioning")
"""The methods of `p` that `process_images` calls through the instance, where the adapter shadows them."""

WATCHED_OPTIONS = ("sd_model_checkpoint", "img2img_background_color", "CLIP_stop_at_last_layers",
                   "inpainting_mask_weight")
SNAPSHOT_HOOKS = ("before_process", "process", "postprocess")
"""Hooks that also record the watched settings and the loaded checkpoint."""

Event = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Case:
    """One job: img2img (on a gradient picture) or txt2img, on `checkpoint`, with these `p` fields
    and these settings (`options`, set before the job like a user's choice)."""

    kind: str
    checkpoint: str
    fields: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


SMALL = {"prompt": "a room", "width": 64, "height": 64, "steps": 1, "seed": 1, "sampler_name": "Euler",
         "cfg_scale": 7.0}
IMG2IMG = {**SMALL, "denoising_strength": 0.75}
HIRES = {**SMALL, "enable_hr": True, "denoising_strength": 0.6, "hr_second_pass_steps": 1}
PLAIN_OVERRIDES = {"img2img_background_color": "#123456", "CLIP_stop_at_last_layers": 2}

ORDER_CASES = {
    "img2img batch 2 x 2": Case("img2img", DEPTH, {**IMG2IMG, "batch_size": 2, "n_iter": 2}),
    "txt2img hires latent 2 x 2": Case("txt2img", BASE, {**HIRES, "batch_size": 2, "n_iter": 2,
                                                         "hr_upscaler": "Latent", "hr_scale": 2}),
}
"""Part 1: the order of hooks and `p` methods in a batched img2img job and a txt2img job with hires fix."""



def overriding(checkpoint: str, overrides: dict[str, Any], restore: bool = True) -> Case:
    """img2img on `checkpoint` with these `p.override_settings`, restored afterwards or kept."""
    return Case("img2img", checkpoint, {**IMG2IMG, "override_settings": overrides,
                                        "override_settings_restore_afterwards": restore})


OVERRIDE_CASES = {
    "override settings, restored": overriding(DEPTH, PLAIN_OVERRIDES),
    "override settings, kept": overriding(DEPTH, PLAIN_OVERRIDES, restore=False),
    "override checkpoint, restored": overriding(DEPTH, {"sd_model_checkpoint": BASE,
                                                        "CLIP_stop_at_last_layers": 2}),
    "override checkpoint, kept": overriding(BASE, {"sd_model_checkpoint": DEPTH}, restore=False),
    "override checkpoint that is loaded": overriding(DEPTH, {"sd_model_checkpoint": DEPTH}),
    "override unknown checkpoint": overriding(DEPTH, {"sd_model_checkpoint": "no-such-model.safetensors",
                                                      "img2img_background_color": "#123456"}),
}
"""Part 2: `p.override_settings` applied for the job, then restored or kept."""


def hires(upscaler: str, mask_weight: float = 1.0, **fields: Any) -> Case:
    """txt2img on the base model with hires fix by `upscaler`, under this inpainting mask weight."""
    return Case("txt2img", BASE, {**HIRES, "hr_upscaler": upscaler, **fields},
                {"inpainting_mask_weight": mask_weight})


HIRES_CASES = {
    "hires Latent, mask weight 0.5, 128x104": hires("Latent", 0.5, batch_size=2, hr_resize_x=128,
                                                    hr_resize_y=104),
    "hires Latent (nearest), mask weight 1, 128x96": hires("Latent (nearest)", batch_size=2, hr_resize_x=128,
                                                           hr_resize_y=96),
    "hires Lanczos, 96x128": hires("Lanczos", 0.5, batch_size=2, hr_resize_x=96, hr_resize_y=128),
    "hires None, 96x64 to 128x128": hires("None", width=96, hr_resize_x=128, hr_resize_y=128),
    "hires Lanczos, width only": hires("Lanczos", height=48, hr_resize_x=96),
    "hires Latent, height only": hires("Latent", height=48, hr_resize_y=96),
    "hires Latent, scale 1.5": hires("Latent", hr_scale=1.5),
}
"""Part 3: the conditioning method of the hires pass, and the shapes around its truncation."""

CASES: dict[str, Case] = {**ORDER_CASES, **OVERRIDE_CASES, **HIRES_CASES}


# -- facts -------------------------------------------------------------------------------------------

def shape(value: Any) -> tuple[int, ...] | None:
    """A tensor's shape; a list of tensors (A1111's decoded batches) as (len, *item shape)."""
    if hasattr(value, "shape"):
        return tuple(int(size) for size in value.shape)
    if isinstance(value, (list, tuple)) and value and hasattr(value[0], "shape"):
        return (len(value), *shape(value[0]))
    return None


def without_hash(value: Any) -> Any:
    """A checkpoint title without its " [shorthash]": the files differ between the two sides."""
    return re.sub(r"\s*\[[0-9a-f]{8,10}\]$", "", value) if isinstance(value, str) else value


def snapshot() -> dict[str, Any]:
    """The watched settings and the checkpoint the loaded model came from."""
    from modules import sd_models, shared

    model = sd_models.model_data.sd_model
    return {"options": {key: without_hash(shared.opts.data.get(key)) for key in WATCHED_OPTIONS},
            "loaded": None if model is None else model.sd_checkpoint_info.name}


def hook_facts(name: str, p: Any, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """What a hook is given that a script could act on."""
    facts: dict[str, Any] = {"is_hr_pass": bool(getattr(p, "is_hr_pass", False))}
    if "batch_number" in kwargs:
        facts["batch_number"] = kwargs["batch_number"]
    if "seeds" in kwargs:
        facts["seeds"] = list(kwargs["seeds"])
    if name == "process_before_every_sampling":
        facts.update(x=shape(kwargs.get("x")), noise=shape(kwargs.get("noise")))
    elif name == "postprocess_batch":
        facts["images"] = shape(kwargs.get("images"))
    elif name == "postprocess_batch_list":
        facts["images"] = len(args[0].images)
    elif name == "postprocess_image":
        facts["image"] = args[0].image.size
    elif name == "before_hr":
        facts.update(upscale_to=(p.hr_upscale_to_x, p.hr_upscale_to_y), truncate=(p.truncate_x, p.truncate_y))
    elif name == "postprocess":
        processed = args[0]
        facts.update(images=len(processed.images), index_of_first_image=processed.index_of_first_image,
                     infotexts=len(processed.infotexts))
    if name in SNAPSHOT_HOOKS:
        facts.update(snapshot())
    return facts


def method_facts(name: str, p: Any, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """What a shadowed `p` method is given: the tensors' shapes and the sizes asked for."""
    facts: dict[str, Any] = {"is_hr_pass": bool(getattr(p, "is_hr_pass", False))}
    if name == "img2img_image_conditioning":
        facts.update(source_image=shape(args[0]), latent_image=shape(args[1] if len(args) > 1 else
                                                                      kwargs.get("latent_image")))
    elif name == "txt2img_image_conditioning":
        width = args[1] if len(args) > 1 else kwargs.get("width")
        height = args[2] if len(args) > 2 else kwargs.get("height")
        facts.update(x=shape(args[0]), width=width, height=height)
    return facts


# -- the recorder ------------------------------------------------------------------------------------

def recording_script(trace: list[Event]) -> Any:
    """An always-visible `Script` of this process's `modules.scripts` whose every job hook appends
    an event to `trace`; A1111 calls only hooks a class overrides, so all of them are overridden."""
    from modules import scripts

    def hook(name: str) -> Callable[..., None]:
        def record(self: Any, p: Any, *args: Any, **kwargs: Any) -> None:
            trace.append((name, hook_facts(name, p, args, kwargs)))
        record.__name__ = name
        return record

    methods = {name: hook(name) for name in SCRIPT_HOOKS}
    methods.update(title=lambda self: "Processing contract recorder",
                   show=lambda self, is_img2img: scripts.AlwaysVisible)
    recorder = type("ProcessingContractRecorder", (scripts.Script,), methods)()
    recorder.filename = "processing_contract.py"
    recorder.args_from = recorder.args_to = 1  # after the selectable-script index, taking no args
    recorder.alwayson = True
    return recorder


def shadow_methods(p: Any, trace: list[Event]) -> None:
    """Replace `P_METHODS` on this `p` by recording wrappers around its own (as the adapter shadows them)."""
    def recording(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def record(*args: Any, **kwargs: Any) -> Any:
            facts = method_facts(name, p, args, kwargs)
            trace.append((name, facts))
            result = original(*args, **kwargs)
            if name.endswith("_image_conditioning"):
                facts["result"] = shape(result)
            return result
        return record

    for name in P_METHODS:
        setattr(p, name, recording(name, getattr(p, name)))


# -- running a case ----------------------------------------------------------------------------------

def gradient(width: int = 80, height: int = 64) -> Image.Image:
    ramp = np.repeat(np.linspace(0, 255, width, dtype=np.float32)[None, :], height, axis=0)
    return Image.fromarray(np.repeat(ramp[:, :, None], 3, axis=2).astype(np.uint8))


def select_checkpoint(name: str) -> None:
    """Make `name` the selected checkpoint and load it, as choosing it in the UI would."""
    from modules import sd_models, shared

    info = sd_models.get_closet_checkpoint_match(name)
    if info is None:
        raise FileNotFoundError(f"no checkpoint {name} in {sd_models.model_path}")
    shared.opts.data["sd_model_checkpoint"] = info.title
    sd_models.reload_model_weights()


def run_case(case: Case, outdir: Path) -> list[Event]:
    """The trace of one job, from the moment `p` gets its scripts to after `process_images` returned."""
    from modules import processing, scripts, shared

    for key in WATCHED_OPTIONS[1:]:  # every case starts from the defaults, then its own settings
        shared.opts.data[key] = shared.opts.get_default(key)
    shared.opts.data.update(case.options)
    select_checkpoint(case.checkpoint)

    trace: list[Event] = []
    fields = {"outpath_samples": str(outdir), "outpath_grids": str(outdir), "do_not_save_samples": True,
              **case.fields, "override_settings": dict(case.fields.get("override_settings", {}))}
    if case.kind == "img2img":
        p = processing.StableDiffusionProcessingImg2Img(init_images=[gradient()], **fields)
    else:
        p = processing.StableDiffusionProcessingTxt2Img(**fields)
    runner = scripts.ScriptRunner()
    recorder = recording_script(trace)
    runner.scripts.append(recorder)
    runner.alwayson_scripts.append(recorder)
    p.scripts = runner
    p.script_args = (0,)  # as A1111's UI and API: the selectable script's index first
    shadow_methods(p, trace)
    shared.state.begin(job="processing contract")
    try:
        processing.process_images(p)
    finally:
        shared.state.end()
        p.close()
    trace.append(("after the job", {**snapshot(), "override_settings": sorted(p.override_settings)}))
    return trace


def checkpoint_after(case: Case) -> str:
    """The checkpoint loaded after the job: the override's when it names a known one."""
    requested = case.fields.get("override_settings", {}).get("sd_model_checkpoint")
    return requested if requested in (DEPTH, BASE) else case.checkpoint


def in_loading_order(names: list[str]) -> list[str]:
    """The cases ordered for the fewest checkpoint loads (half a minute each on CPU): on the depth
    model, the swap to the base model, on the base model, the swap back."""
    def loads(name: str) -> tuple[bool, bool]:
        case = CASES[name]
        return case.checkpoint != DEPTH, checkpoint_after(case) != case.checkpoint
    return sorted(names, key=loads)


def run_cases(names: list[str], outdir: Path) -> dict[str, list[Event]]:
    """Each named case's trace, in this process (every case starts from its own checkpoint and
    settings, so the order only saves time)."""
    return {name: run_case(CASES[name], outdir) for name in in_loading_order(names)}
