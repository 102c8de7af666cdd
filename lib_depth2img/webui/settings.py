"""The Depth2img section of A1111's Settings page, and reading its values.

Values are read from `shared.opts.data` with the declared default as fallback, because A1111
registers settings only while it builds the UI (`on_ui_settings`): with `--nowebui` (API only)
the options are never declared, yet a value saved in config.json still counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modules import script_callbacks, shared

from ..settings import EMBEDDED_ESTIMATOR

SECTION = ("depth2img", "Depth2img")


@dataclass(frozen=True)
class Setting:
    """One option of the section: its opts key, default and label."""

    key: str
    default: Any
    label: str
    info: str = ""


ESTIMATOR = Setting(
    "depth2img_default_estimator", EMBEDDED_ESTIMATOR, "Default depth estimator",
    "'embedded' is the MiDaS inside the depth checkpoint; others need their weights in models/midas.",
)
KEEP_ESTIMATOR_ON_GPU = Setting(
    "depth2img_keep_estimator_on_gpu", True, "Keep a separately loaded depth estimator on the GPU between jobs",
    "Concerns estimators other than the loaded depth model's own MiDaS (which A1111 manages). "
    "Off, or with --medvram/--lowvram: moved to the CPU after each use, freeing its VRAM at the cost of a move.",
)
CACHE_MB = Setting(
    "depth2img_cache_mb", 256, "Depth map cache size (MB)",
    "Estimated depth maps are kept so that a preview, a second batch or the next job reuses them.",
)
SAVE_DEPTH = Setting(
    "depth2img_save_depth_default", False, "Save depth maps beside the results by default",
    "The initial state of the panel's 'Save depth map' checkbox (16-bit PNG, '-depth' suffix).",
)


def value(setting: Setting) -> Any:
    """The user's value of `setting`, or its default."""
    return shared.opts.data.get(setting.key, setting.default)


def register() -> None:
    """Declare the section when A1111 builds its Settings page."""
    script_callbacks.on_ui_settings(_add_options, name="depth2img settings")


def _add_options() -> None:
    import gradio as gr

    from . import depth_service

    components: dict[str, tuple[Any, Any]] = {
        ESTIMATOR.key: (gr.Dropdown, lambda: {"choices": depth_service.estimator_choices()}),
        KEEP_ESTIMATOR_ON_GPU.key: (gr.Checkbox, None),
        CACHE_MB.key: (gr.Slider, {"minimum": 0, "maximum": 4096, "step": 16}),
        SAVE_DEPTH.key: (gr.Checkbox, None),
    }
    for setting in (ESTIMATOR, KEEP_ESTIMATOR_ON_GPU, CACHE_MB, SAVE_DEPTH):
        component, component_args = components[setting.key]
        option = shared.OptionInfo(setting.default, setting.label, component, component_args, section=SECTION)
        shared.opts.add_option(setting.key, option.info(setting.info))
