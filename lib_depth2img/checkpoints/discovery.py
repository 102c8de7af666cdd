"""Depth-checkpoint discovery and the renamed YAML.

Host-independent: no gradio, no A1111 `modules.*`, no torch.

Recognising the depth model
    A1111 (`sd_models_config.guess_model_config_from_state_dict`) treats a checkpoint as the
    depth model when its state dict holds `DEPTH_MARKER_KEY`. We apply the same test to the key
    names `reader.read_keys` gives, never loading a tensor nor running anything in the file.
    `inspect_checkpoint` says what was found and why; `is_depth_checkpoint` is its yes/no.
    Results are cached by (path, size, mtime).

Finding depth checkpoints
    `find_depth_checkpoints` walks folders as A1111 lists models (`.ckpt` and `.safetensors`,
    recursive, following links, skipping hidden folders, `*.vae.*` files and broken links).
    The key test decides what a depth checkpoint is; the file name never does. The name is only
    an ordering hint: among depth checkpoints, those with "depth" in the name come first (the
    official 512-depth-ema before a merge that happens to carry the depth model), then natural
    path order. So `find_depth_checkpoints(folders)[0]` is always a real depth checkpoint.

The renamed YAML
    A1111 and its forks load `<checkpoint stem>.yaml` beside a checkpoint as its model config.
    `write_depth_yaml` writes Stability's `configs/stable-diffusion/v2-midas-inference.yaml`
    (Stability-AI/stablediffusion, commit ca86da3, 2022-11-24) there, built from `DEPTH_CONFIG`.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import WeightsError
from .reader import Format, UnreadableCheckpoint, read_keys

log = logging.getLogger(__name__)

DEPTH_MARKER_KEY = "depth_model.model.pretrained.act_postprocess3.0.project.0.bias"
CHECKPOINT_EXTENSIONS = (".ckpt", ".safetensors")
_EXCLUDED_SUFFIXES = (".vae.ckpt", ".vae.safetensors")  # as A1111's list_models

Kind = Literal["depth", "other", "unreadable"]


@dataclass(frozen=True)
class CheckpointInspection:
    """What a cheap look at a checkpoint file found.

    kind: "depth" (has `DEPTH_MARKER_KEY`), "other" (readable, no marker) or "unreadable".
    format: the file format found, or None when it could not be told.
    reason: one human-readable sentence: why it is (not) a depth checkpoint, or what is wrong.
    key_count: number of state-dict keys read, or None when unreadable.
    """

    path: Path
    kind: Kind
    format: Format | None
    reason: str
    key_count: int | None = None

    @property
    def is_depth(self) -> bool:
        return self.kind == "depth"


# --------------------------------------------------------------------------- cache

_cache: dict[tuple[str, int, int], CheckpointInspection] = {}
_cache_lock = threading.Lock()
_CACHE_LIMIT = 4096


def inspect_checkpoint(path: str | os.PathLike[str]) -> CheckpointInspection:
    """Look at the key names of a checkpoint file without loading any tensor; never raises
    for a bad file (the result says why it is unreadable). Cached by (path, size, mtime)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as error:
        return CheckpointInspection(p, "unreadable", None, f"cannot open {p}: {error.strerror or error}")
    if not p.is_file():
        return CheckpointInspection(p, "unreadable", None, f"{p} is not a file")
    key = (os.path.abspath(p), st.st_size, st.st_mtime_ns)
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    result = _inspect_uncached(p)
    with _cache_lock:
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        _cache[key] = result
    return result


def is_depth_checkpoint(path: str | os.PathLike[str]) -> bool:
    """True when the file's state dict has A1111's depth-model marker key.
    False for other checkpoints and for unreadable files (see `inspect_checkpoint` for why)."""
    return inspect_checkpoint(path).is_depth


def _inspect_uncached(path: Path) -> CheckpointInspection:
    try:
        fmt, keys = read_keys(path)
    except UnreadableCheckpoint as error:
        return CheckpointInspection(path, "unreadable", error.format, f"{path.name}: {error}")
    except OSError as error:
        return CheckpointInspection(path, "unreadable", None, f"{path.name}: read error: {error}")
    except Exception as error:  # noqa: BLE001 - arbitrary bytes: a parser failure means "damaged"
        reason = f"{path.name}: damaged ({type(error).__name__}: {error})"
        return CheckpointInspection(path, "unreadable", None, reason)

    if DEPTH_MARKER_KEY in keys:
        return CheckpointInspection(
            path, "depth", fmt, f"{path.name} has the depth-model key {DEPTH_MARKER_KEY}", len(keys)
        )
    return CheckpointInspection(
        path,
        "other",
        fmt,
        f"{path.name} is not a depth model: none of its {len(keys)} keys is {DEPTH_MARKER_KEY}",
        len(keys),
    )


# --------------------------------------------------------------------------- discovery


def _natural_key(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _candidate_files(folder: Path) -> list[Path]:
    found: list[Path] = []
    walked: list[tuple[str, list[str]]] = []
    visited: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in visited:  # a symlink loop, or a folder linked twice
            dirs[:] = []
            continue
        visited.add(real)
        # Hidden folders are skipped, as A1111 does without its list_hidden_files option.
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        walked.append((root, files))
    for root, files in sorted(walked, key=lambda item: _natural_key(item[0])):
        for name in sorted(files, key=_natural_key):
            lower = name.lower()
            if not lower.endswith(CHECKPOINT_EXTENSIONS) or lower.endswith(_EXCLUDED_SUFFIXES):
                continue
            full = Path(root, name)
            if full.is_symlink() and not full.exists():
                log.info("Skipping broken symlink: %s", full)
                continue
            found.append(full)
    return found


def find_depth_checkpoints(
    folders: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
) -> list[Path]:
    """Checkpoints (`.ckpt`, `.safetensors`) under `folders`, searched recursively like A1111.

    Returns the depth checkpoints (by the state-dict key test), "depth"-named ones first, then
    natural path order. Missing folders are skipped; a file reached through two folders is listed once.
    """
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    seen: set[str] = set()
    ranked: list[tuple[int, int, list[Any], Path]] = []
    for order, folder in enumerate(folders):
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for path in _candidate_files(folder):
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            if is_depth_checkpoint(path):
                name_hint = "depth" in path.name.lower()
                ranked.append((0 if name_hint else 1, [order, *_natural_key(str(path))], path))
    ranked.sort(key=lambda item: item[:2])
    return [item[2] for item in ranked]


# --------------------------------------------------------------------------- the YAML

# Stability-AI/stablediffusion, configs/stable-diffusion/v2-midas-inference.yaml, as parsed.
DEPTH_CONFIG_SOURCE = "https://github.com/Stability-AI/stablediffusion/blob/main/configs/stable-diffusion/v2-midas-inference.yaml"
DEPTH_CONFIG: dict[str, Any] = {
    "model": {
        "base_learning_rate": 5.0e-07,
        "target": "ldm.models.diffusion.ddpm.LatentDepth2ImageDiffusion",
        "params": {
            "linear_start": 0.00085,
            "linear_end": 0.0120,
            "num_timesteps_cond": 1,
            "log_every_t": 200,
            "timesteps": 1000,
            "first_stage_key": "jpg",
            "cond_stage_key": "txt",
            "image_size": 64,
            "channels": 4,
            "cond_stage_trainable": False,
            "conditioning_key": "hybrid",
            "scale_factor": 0.18215,
            "monitor": "val/loss_simple_ema",
            "finetune_keys": None,
            "use_ema": False,
            "depth_stage_config": {
                "target": "ldm.modules.midas.api.MiDaSInference",
                "params": {"model_type": "dpt_hybrid"},
            },
            "unet_config": {
                "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                "params": {
                    "use_checkpoint": True,
                    "image_size": 32,  # unused
                    "in_channels": 5,
                    "out_channels": 4,
                    "model_channels": 320,
                    "attention_resolutions": [4, 2, 1],
                    "num_res_blocks": 2,
                    "channel_mult": [1, 2, 4, 4],
                    "num_head_channels": 64,
                    "use_spatial_transformer": True,
                    "use_linear_in_transformer": True,
                    "transformer_depth": 1,
                    "context_dim": 1024,
                    "legacy": False,
                },
            },
            "first_stage_config": {
                "target": "ldm.models.autoencoder.AutoencoderKL",
                "params": {
                    "embed_dim": 4,
                    "monitor": "val/rec_loss",
                    "ddconfig": {
                        "double_z": True,
                        "z_channels": 4,
                        "resolution": 256,
                        "in_channels": 3,
                        "out_ch": 3,
                        "ch": 128,
                        "ch_mult": [1, 2, 4, 4],
                        "num_res_blocks": 2,
                        "attn_resolutions": [],
                        "dropout": 0.0,
                    },
                    "lossconfig": {"target": "torch.nn.Identity"},
                },
            },
            "cond_stage_config": {
                "target": "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder",
                "params": {"freeze": True, "layer": "penultimate"},
            },
        },
    }
}


def depth_yaml_text() -> str:
    """The YAML written beside depth checkpoints: `DEPTH_CONFIG` with a provenance comment."""
    import yaml  # PyYAML, present wherever gradio is

    class Dumper(yaml.SafeDumper):  # mappings as blocks, lists inline, as in Stability's file
        pass

    Dumper.add_representer(
        list, lambda dumper, value: dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)
    )
    body = yaml.dump(DEPTH_CONFIG, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=100)
    return (
        "# Stable Diffusion 2 depth model config (512-depth-ema), written by sd-webui-depth2img.\n"
        f"# Same content as {DEPTH_CONFIG_SOURCE}\n"
        "# A1111 and its forks load <checkpoint name>.yaml beside a checkpoint as its config.\n" + body
    )


def depth_yaml_path(checkpoint_path: str | os.PathLike[str]) -> Path:
    """Where A1111 looks for a checkpoint's config: `<stem>.yaml` in the same folder."""
    p = Path(checkpoint_path)
    return p.with_name(p.stem + ".yaml") if p.suffix else p.with_name(p.name + ".yaml")


def write_depth_yaml(
    checkpoint_path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    check: bool = True,
) -> Path | None:
    """Write the depth-model YAML as `<stem>.yaml` beside `checkpoint_path`.

    Returns the YAML's path, or None when one already exists and `overwrite` is false (it is
    then left untouched). Written atomically (temporary file, then rename).
    With `check` (the default) the checkpoint must exist and be a depth checkpoint by the key
    test: a depth YAML beside any other model would make A1111 fail to load that model.
    Raises `WeightsError` when the check fails or the file cannot be written.
    """
    ckpt = Path(checkpoint_path)
    target = depth_yaml_path(ckpt)
    if check:
        if not ckpt.is_file():
            raise WeightsError(
                f"Checkpoint not found: {ckpt}. Give the path of an existing depth checkpoint."
            )
        found = inspect_checkpoint(ckpt)
        if found.kind == "unreadable":
            raise WeightsError(
                f"Cannot read {ckpt}: {found.reason}. Re-download it, or pass check=False (--force)."
            )
        if found.kind != "depth":
            raise WeightsError(
                f"{ckpt} is not a Stable Diffusion 2 depth checkpoint (it has no {DEPTH_MARKER_KEY} key); "
                "a depth YAML beside it would stop A1111 from loading it. Point at 512-depth-ema instead."
            )
    if target.exists() and not overwrite:
        log.info("Leaving the existing %s as it is", target)
        return None
    text = depth_yaml_text()
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise WeightsError(
            f"Cannot write {target}: {error.strerror or error}. Check the folder's permissions."
        ) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        if overwrite:
            os.replace(tmp, target)
        else:
            _publish_without_clobbering(tmp, target)
            if tmp.exists() and not target.samefile(tmp):
                return None  # someone else wrote it meanwhile
    except OSError as error:
        raise WeightsError(
            f"Cannot write {target}: {error.strerror or error}. Check the folder's permissions."
        ) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    log.info("Wrote %s", target)
    return target


def _publish_without_clobbering(tmp: Path, target: Path) -> None:
    """Give `tmp` the name `target` unless `target` exists; atomic where hard links work."""
    try:
        os.link(tmp, target)  # fails with FileExistsError if target appeared meanwhile
    except FileExistsError:
        return
    except OSError:  # no hard links on this filesystem
        if not target.exists():
            os.replace(tmp, target)
