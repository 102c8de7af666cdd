"""Stand-in for `modules.shared`: opts, state, cmd_opts, device; `sd_model` loads on first access."""

from __future__ import annotations

from types import SimpleNamespace

from modules import devices, options

OptionInfo = options.OptionInfo
options_section = options.options_section

BUILTIN_OPTIONS = {
    "sd_model_checkpoint": OptionInfo(None, "Stable Diffusion checkpoint"),
    "samples_save": OptionInfo(True, "Always save all generated images"),
    "samples_format": OptionInfo("png", "File format for images"),
    "enable_pnginfo": OptionInfo(True, "Save text information about generation parameters"),
    "return_grid": OptionInfo(True, "Show grid in gallery"),
    "img2img_background_color": OptionInfo("#ffffff", "With img2img, fill transparent parts with this color"),
    "outdir_samples": OptionInfo("", "Output directory for images"),
    "inpainting_mask_weight": OptionInfo(1.0, "Inpainting conditioning mask strength"),
    "CLIP_stop_at_last_layers": OptionInfo(1, "Clip skip"),
}


class State:
    skipped = False
    interrupted = False
    stopping_generation = False
    job = ""
    job_no = 0
    job_count = 0
    sampling_step = 0
    sampling_steps = 0
    textinfo = None

    def interrupt(self):
        self.interrupted = True

    def nextjob(self):
        self.job_no += 1

    def begin(self, job: str = "(unknown)"):
        self.job = job
        self.job_count = -1
        self.job_no = self.sampling_step = 0
        self.textinfo = None
        self.interrupted = self.skipped = self.stopping_generation = False

    def end(self):
        self.job = ""
        self.job_count = 0


COMMAND_LINE_DEFAULTS = {
    "ckpt_dir": None, "ckpt": None, "lowvram": False, "medvram": False, "no_half": True,
    "disable_safe_unpickle": False, "api": False, "nowebui": False, "api_auth": None, "listen": False,
    "share": False, "ngrok": None, "server_name": None, "enable_insecure_extension_access": False,
}
"""The `modules.cmd_args` options the extension or the stub reads, with A1111's defaults."""


def parse_command_line(**flags) -> SimpleNamespace:
    """`cmd_opts` for these flags (`api_auth="user:pass"` for `--api-auth user:pass`), with the two
    options `modules/shared_cmd_options.py` derives from them."""
    parsed = SimpleNamespace(**{**COMMAND_LINE_DEFAULTS, **flags})
    parsed.webui_is_non_local = any([parsed.share, parsed.listen, parsed.ngrok, parsed.server_name])
    parsed.disable_extension_access = parsed.webui_is_non_local and not parsed.enable_insecure_extension_access
    return parsed


def reset() -> None:
    """Fresh opts, state and command-line options (test isolation)."""
    global opts, state, cmd_opts
    opts = options.Options(BUILTIN_OPTIONS)
    state = State()
    cmd_opts = parse_command_line()


opts: options.Options
state: State
cmd_opts: SimpleNamespace
device = devices.device
reset()


def __getattr__(name: str):
    # A1111 makes `shared.sd_model` a property that loads the model on first use.
    if name == "sd_model":
        from modules import sd_models

        return sd_models.model_data.get_sd_model()
    raise AttributeError(name)
