"""Which checkpoint a depth2img job runs on, and how it gets there through A1111's own mechanism.

A1111's `process_images` applies `p.override_settings` after the scripts' `before_process`:
a `sd_model_checkpoint` entry there loads that checkpoint for the job, and its `finally` block
restores the previous value of the option when `p.override_settings_restore_afterwards` is set,
also when the job fails or is interrupted. The next job then loads the user's model again.
So the swap is an override entry, set in `before_process`, never a hand-rolled model load. An API
caller who asked A1111 to keep their own overrides (`override_settings_restore_afterwards: false`)
keeps them: only the checkpoint is put back. Forge applies the same entry through its
`checkpoint_change`; its extra modules (a VAE or text encoders the user chose for another model)
are cleared for the job by one more entry, restored alike.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from modules import sd_models, shared

from ..checkpoints.discovery import depth_yaml_path, is_depth_checkpoint, write_depth_yaml
from ..errors import WeightsError
from . import host

log = logging.getLogger(__name__)

CHECKPOINT_OPTION = "sd_model_checkpoint"
DEPTH_MODEL_URL = "https://huggingface.co/stabilityai/stable-diffusion-2-depth"


def depth_checkpoints() -> list[Any]:
    """A1111's known checkpoints (`CheckpointInfo`) that are depth models by their state-dict keys;
    those with "depth" in the name first, otherwise in A1111's order."""
    found = [info for info in sd_models.checkpoints_list.values() if is_depth_checkpoint(info.filename)]
    return sorted(found, key=lambda info: "depth" not in info.name.lower())


def no_depth_checkpoint_message() -> str:
    return (
        "Depth2img: no depth checkpoint found, so nothing was generated. Put 512-depth-ema.safetensors "
        f"(or .ckpt, from {DEPTH_MODEL_URL}) into {sd_models.model_path} and refresh the checkpoint list, "
        "or click 'Install depth model' in the Depth2img panel (API: POST /depth2img/v1/install)."
    )


def job_checkpoint(p: Any) -> Any | None:
    """The checkpoint A1111 would run `p` on without depth2img: an override, else the selected one."""
    requested = p.override_settings.get(CHECKPOINT_OPTION) or shared.opts.data.get(CHECKPOINT_OPTION)
    return sd_models.checkpoint_aliases.get(requested) if requested else None


def choose_depth_checkpoint(requested: str, current: Any | None) -> Any:
    """The depth checkpoint to run on: the one `requested` by name, else `current` when it is a
    depth model, else the first depth checkpoint A1111 knows. `WeightsError` when there is none."""
    if requested:
        info = sd_models.get_closet_checkpoint_match(requested)
        if info is None:
            known = ", ".join(info.title for info in depth_checkpoints()) or "none"
            raise WeightsError(
                f"Depth2img: the depth checkpoint '{requested}' is not in the checkpoint list "
                f"(depth checkpoints found: {known}). Choose another or leave it empty for the first one."
            )
        if not is_depth_checkpoint(info.filename):
            raise WeightsError(
                f"Depth2img: '{info.title}' is not a Stable Diffusion 2 depth model; choose a depth "
                "checkpoint such as 512-depth-ema, or leave the choice empty."
            )
        return info
    if current is not None and is_depth_checkpoint(current.filename):
        return current
    found = depth_checkpoints()
    if not found:
        raise WeightsError(no_depth_checkpoint_message())
    return found[0]


def override_checkpoint(p: Any, target: Any) -> dict[str, Any] | None:
    """Make the WebUI load `target` (without Forge's extra modules) for this job and restore the
    previous choice afterwards, without changing what happens to the caller's other overrides.

    Returns the `override_settings` dict to put back when the job ends, or None when the job
    already runs on `target` as it is. The dict is replaced, not changed, because XYZ plot cells
    are shallow copies of one `p` that share it. `override_settings_restore_afterwards` stays on:
    the WebUI reads it after the scripts' `postprocess`, and for the caller's own overrides it
    changes nothing once `_keep` applied them.
    """
    entries: dict[str, Any] = {}
    if job_checkpoint(p) is not target:
        ensure_depth_yaml(target)
        if CHECKPOINT_OPTION not in shared.opts.data:
            # process_images restores only options present in opts.data; record the model it would load
            shared.opts.data[CHECKPOINT_OPTION] = sd_models.select_checkpoint().title
        entries[CHECKPOINT_OPTION] = target.title
    if host.additional_modules(shared.opts.data):
        entries[host.ADDITIONAL_MODULES_OPTION] = []
    if not entries:
        return None
    previous = p.override_settings
    if not p.override_settings_restore_afterwards:
        _keep(previous)
    p.override_settings = {**previous, **entries}
    p.override_settings_restore_afterwards = True
    return previous


def _keep(settings: dict[str, Any]) -> None:
    """Apply overrides the caller wants kept after the job now, as `process_images` would a moment
    later (`opts.set(..., is_api=True, run_callbacks=False)`): the values it then stores, and
    restores after the job for the checkpoint's sake, are theirs, so they stay."""
    for key, value in settings.items():
        if key in shared.opts.data_labels:  # an unknown option fails the job in A1111's own loop
            shared.opts.set(key, value, is_api=True, run_callbacks=False)


def ensure_depth_yaml(info: Any) -> None:
    """Write `<stem>.yaml` (the v2-midas-inference config) beside a depth checkpoint lacking one.

    A1111 also recognises the depth model by its keys, so a read-only folder only costs a log line.
    """
    if os.path.exists(depth_yaml_path(info.filename)):
        return
    try:
        write_depth_yaml(info.filename)
    except WeightsError as error:
        log.warning("%s", error)
