"""Stand-in for `modules.scripts`: the Script API and a ScriptRunner with A1111's call order.

As in A1111, the runner calls every AlwaysVisible script's hook inside try/except and only
reports what a hook raises: an exception in before_process or process does not stop the job.
"""

from __future__ import annotations

import os
from collections import namedtuple

from modules import errors

AlwaysVisible = object()


class PostprocessImageArgs:
    def __init__(self, image):
        self.image = image


class PostprocessBatchListArgs:
    def __init__(self, images):
        self.images = images


class OnComponent:
    def __init__(self, component):
        self.component = component


class Script:
    name = None
    section = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname = None
    group = None
    infotext_fields = None
    paste_field_names = None
    api_info = None
    controls = None
    setup_for_ui_only = False

    def title(self):
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def run(self, p, *args):
        pass

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def postprocess_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch_list(self, p, pp, *args, **kwargs):
        pass

    def postprocess_image(self, p, pp, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass

    def before_component(self, component, **kwargs):
        pass

    def after_component(self, component, **kwargs):
        pass

    def before_hr(self, p, *args):
        pass

    def elem_id(self, item_id):
        tabname = ("img2img" if self.is_img2img else "txt2img") + "_"
        title = self.title().lower().replace(" ", "_")
        return f"script_{tabname}{title}_{item_id}"


ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])
scripts_data: list[ScriptClassData] = []


class ScriptRunner:
    def __init__(self):
        self.scripts = []
        self.selectable_scripts = []
        self.alwayson_scripts = []
        self.title_map = {}
        self.infotext_fields = []
        self.paste_field_names = []
        self.inputs = [None]

    def initialize_scripts(self, is_img2img):
        self.scripts.clear()
        self.alwayson_scripts.clear()
        self.selectable_scripts.clear()
        for script_data in scripts_data:
            script = script_data.script_class()
            script.filename = script_data.path
            script.is_txt2img = not is_img2img
            script.is_img2img = is_img2img
            script.tabname = "img2img" if is_img2img else "txt2img"
            visibility = script.show(script.is_img2img)
            if visibility == AlwaysVisible:
                self.scripts.append(script)
                self.alwayson_scripts.append(script)
                script.alwayson = True
            elif visibility:
                self.scripts.append(script)
                self.selectable_scripts.append(script)

    def create_script_ui(self, script):
        script.args_from = len(self.inputs)
        script.args_to = len(self.inputs)
        controls = script.ui(script.is_img2img)
        script.controls = controls
        if controls is None:
            return
        script.name = script.title().lower()
        if script.infotext_fields is not None:
            self.infotext_fields += script.infotext_fields
        if script.paste_field_names is not None:
            self.paste_field_names += script.paste_field_names
        self.inputs += controls
        script.args_to = len(self.inputs)

    def setup_ui(self):
        self.title_map = {script.title().lower(): script for script in self.scripts}
        for script in self.alwayson_scripts:
            self.create_script_ui(script)
        return self.inputs

    def script(self, title):
        return self.title_map.get(title.lower())

    def run(self, p, *args):
        return None  # no selectable script chosen

    def _call(self, method_name, p, *extra, **kwargs):
        for script in self.alwayson_scripts:
            if getattr(type(script), method_name) is getattr(Script, method_name):
                continue
            try:
                script_args = p.script_args[script.args_from : script.args_to]
                getattr(script, method_name)(p, *extra, *script_args, **kwargs)
            except Exception:  # noqa: BLE001  (as A1111: report and go on)
                errors.report(f"Error running {method_name}: {script.filename}", exc_info=True)

    def setup_scrips(self, p, *, is_ui=True):  # sic: A1111's name
        for script in self.alwayson_scripts:
            if type(script).setup is Script.setup or (script.setup_for_ui_only and not is_ui):
                continue
            try:
                script.setup(p, *p.script_args[script.args_from : script.args_to])
            except Exception:  # noqa: BLE001  (as A1111: report and go on)
                errors.report(f"Error running setup: {script.filename}", exc_info=True)

    def before_process(self, p):
        self._call("before_process", p)

    def process(self, p):
        self._call("process", p)

    def before_process_batch(self, p, **kwargs):
        self._call("before_process_batch", p, **kwargs)

    def process_batch(self, p, **kwargs):
        self._call("process_batch", p, **kwargs)

    def process_before_every_sampling(self, p, **kwargs):
        self._call("process_before_every_sampling", p, **kwargs)

    def postprocess_batch(self, p, images, **kwargs):
        self._call("postprocess_batch", p, images=images, **kwargs)

    def postprocess_batch_list(self, p, pp, **kwargs):
        self._call("postprocess_batch_list", p, pp, **kwargs)

    def postprocess_image(self, p, pp):
        self._call("postprocess_image", p, pp)

    def postprocess(self, p, processed):
        self._call("postprocess", p, processed)

    def before_hr(self, p):
        self._call("before_hr", p)

    def after_component(self, component, **kwargs):
        for script in self.scripts:
            try:
                script.after_component(component, **kwargs)
            except Exception:  # noqa: BLE001  (as A1111: report and go on)
                errors.report(f"Error running after_component: {script.filename}", exc_info=True)


scripts_txt2img: ScriptRunner = ScriptRunner()
scripts_img2img: ScriptRunner = ScriptRunner()


def basedir():
    return os.getcwd()
