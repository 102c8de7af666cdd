"""Depth2img in the PNG info (paste back, "Send to") and as X/Y/Z plot axes.

Writing is `Depth2imgArgs.to_infotext()` (see `script_impl`); the keys, labels and bounds used
here all come from `Depth2imgArgs.specs()`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from modules import script_callbacks, scripts

from ..settings import INFOTEXT_PREFIX, Depth2imgArgs
from . import depth_service

log = logging.getLogger(__name__)

TITLE = "Depth2img"
XYZ_FIELDS = ("estimator", "net_size", "invert", "far_clip", "near_clip", "gamma", "blur", "checkpoint")
_FIELD_NAMES = [name for name, _ in Depth2imgArgs.specs()]
_BOOLEAN_CHOICES = ["False", "True"]


def register() -> None:
    script_callbacks.on_infotext_pasted(_absent_means_off, name="depth2img infotext")
    script_callbacks.on_before_ui(add_xyz_axes, name="depth2img xyz axes")


def paste_field_names(infotext_fields: list[tuple[Any, Any]]) -> list[str]:
    """The PNG-info keys that A1111's "Send to img2img/inpaint" buttons carry over."""
    return [key for _, key in infotext_fields if isinstance(key, str)]


def _absent_means_off(infotext: str, params: dict[str, Any]) -> None:
    """Pasting the info of an image made without depth2img unticks Enable instead of leaving it."""
    params.setdefault(INFOTEXT_PREFIX, "False")


# -- X/Y/Z plot -----------------------------------------------------------------------------------------

def find_xyz_module() -> ModuleType | None:
    """A1111 loads scripts/xyz_grid.py as a module named after its file; find it among the loaded scripts."""
    for data in scripts.scripts_data:
        if data.script_class.__module__ in ("xyz_grid.py", "xy_grid.py") and hasattr(data, "module"):
            return data.module
    return None


def add_xyz_axes() -> None:
    """Add one axis per main control, once (the UI can be rebuilt)."""
    xyz = find_xyz_module()
    if xyz is None:
        log.info("Depth2img: the X/Y/Z plot script is not loaded; no Depth2img axes.")
        return
    known = {option.label for option in xyz.axis_options}
    xyz.axis_options.extend(axis for axis in (_axis(xyz, name) for name in XYZ_FIELDS) if axis.label not in known)


def _axis(xyz: ModuleType, name: str) -> Any:
    default = Depth2imgArgs.defaults()[name]
    choices: Callable[[], list[str]] | None = {
        "estimator": depth_service.estimator_choices,
        "checkpoint": depth_service.depth_checkpoint_titles,
        "invert": lambda: list(_BOOLEAN_CHOICES),
    }.get(name)
    value_type = str if isinstance(default, (str, bool)) else type(default)
    return xyz.AxisOption(
        f"{TITLE}: {Depth2imgArgs.spec(name).label}", value_type, _apply(name), confirm=_confirm(name),
        cost=1.0 if name == "checkpoint" else 0.0, choices=choices,
    )


def _apply(name: str) -> Callable[[Any, Any, list[Any]], None]:
    def apply(p: Any, x: Any, xs: list[Any]) -> None:
        set_script_value(p, name, x)

    return apply


def _confirm(name: str) -> Callable[[Any, list[Any]], None]:
    def confirm(p: Any, xs: list[Any]) -> None:
        values = script_values(p)
        for x in xs:  # SettingsError (range, type, far clip below near clip) stops the plot with its message
            Depth2imgArgs.from_values({**values, name: x})

    return confirm


def _script(p: Any) -> Any:
    for script in p.scripts.alwayson_scripts:
        if script.title() == TITLE:
            return script
    raise RuntimeError("Depth2img: the script is not loaded in this tab")


def script_values(p: Any) -> dict[str, Any]:
    """This job's Depth2img values by field name, from the positional list or the API's dict."""
    script = _script(p)
    values = list(p.script_args[script.args_from:script.args_to])
    if values and isinstance(values[0], Mapping):
        return dict(values[0])
    return dict(zip(_FIELD_NAMES, values))


def set_script_value(p: Any, name: str, value: Any) -> None:
    """Change one Depth2img arg of this `p` (an XYZ cell is a copy: the plot's `p` keeps its own)."""
    script = _script(p)
    args = list(p.script_args)
    if isinstance(args[script.args_from], Mapping):
        args[script.args_from] = {**args[script.args_from], name: value}
    else:
        args[script.args_from + _FIELD_NAMES.index(name)] = value
    p.script_args = tuple(args)
