"""Stand-in for `modules.script_callbacks`: registration functions and the calls A1111 makes."""

from __future__ import annotations

from collections import namedtuple

from modules import errors

ScriptCallback = namedtuple("ScriptCallback", ["script", "callback", "name"])

callback_map = {
    "callbacks_app_started": [],
    "callbacks_model_loaded": [],
    "callbacks_ui_settings": [],
    "callbacks_infotext_pasted": [],
    "callbacks_before_ui": [],
    "callbacks_script_unloaded": [],
}


def clear_callbacks():
    for callback_list in callback_map.values():
        callback_list.clear()


def add_callback(callbacks, fun, *, name=None, category="unknown", filename=None):
    callbacks.append(ScriptCallback(filename or "unknown", fun, name or getattr(fun, "__name__", "unnamed")))


def _run(category, *args):
    for c in callback_map[category]:
        try:
            c.callback(*args)
        except Exception:  # noqa: BLE001  (as A1111: report and go on)
            errors.report(f"Error executing callback {c.name} for {category}", exc_info=True)


def app_started_callback(demo, app):
    _run("callbacks_app_started", demo, app)


def ui_settings_callback():
    _run("callbacks_ui_settings")


def infotext_pasted_callback(infotext, params):
    _run("callbacks_infotext_pasted", infotext, params)


def before_ui_callback():
    _run("callbacks_before_ui")


def on_app_started(callback, *, name=None):
    add_callback(callback_map["callbacks_app_started"], callback, name=name, category="app_started")


def on_model_loaded(callback, *, name=None):
    add_callback(callback_map["callbacks_model_loaded"], callback, name=name, category="model_loaded")


def on_ui_settings(callback, *, name=None):
    add_callback(callback_map["callbacks_ui_settings"], callback, name=name, category="ui_settings")


def on_infotext_pasted(callback, *, name=None):
    add_callback(callback_map["callbacks_infotext_pasted"], callback, name=name, category="infotext_pasted")


def on_before_ui(callback, *, name=None):
    add_callback(callback_map["callbacks_before_ui"], callback, name=name, category="before_ui")


def on_script_unloaded(callback, *, name=None):
    add_callback(callback_map["callbacks_script_unloaded"], callback, name=name, category="script_unloaded")
