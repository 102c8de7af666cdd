"""WebUI entry point (A1111 and Forge): the Depth2img script. Thin on purpose: lib_depth2img.webui does the work."""

from modules import scripts

from lib_depth2img.webui import script_impl

script_impl.register_callbacks()


class Depth2imgScript(scripts.Script):
    """Always visible in txt2img and img2img (every sub-tab): depth-conditioned generation."""

    def title(self):
        return script_impl.TITLE

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return script_impl.build_ui(self, is_img2img)

    def after_component(self, component, **kwargs):
        script_impl.capture_component(self, component)

    def before_process(self, p, *args):
        script_impl.before_process(p, args)

    def postprocess(self, p, processed, *args):
        script_impl.postprocess(p, processed)
