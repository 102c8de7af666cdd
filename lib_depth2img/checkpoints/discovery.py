"""Depth-checkpoint discovery and the renamed YAML.

Host-independent: no gradio, no A1111 `modules.*`, no torch.

Recognising the depth model
    A1111 (`sd_models_config.guess_model_config_from_state_dict`) treats a checkpoint as the
    depth model when its state dict holds `DEPTH_MARKER_KEY`. We apply the same test, but read
    only the key names, never the tensors:
    - `.safetensors`: the 8-byte length and the JSON header (a few hundred KB for 512-depth-ema);
    - zip-format torch files (`.ckpt`, `.pt`, `.pth`, the format of `torch.save` since 1.6): the
      zip's central directory and the `data.pkl` member only;
    - legacy (pre-zip) torch files: the leading pickles only, which come before the tensor data.
    The format is taken from the file's first bytes, not from its extension. Pickles are read by
    `_KeyOnlyUnpickler`, which never imports or calls anything named in the file: every global
    becomes an inert placeholder, so a malicious pickle cannot run code. As in A1111, a top-level
    `state_dict` entry (PyTorch Lightning) is the state dict when present.
    `inspect_checkpoint` says what was found and why; `is_depth_checkpoint` is its yes/no.
    Results are cached by (path, size, mtime).

Finding depth checkpoints
    `find_depth_checkpoints` walks folders as A1111 lists models (`.ckpt` and `.safetensors`,
    recursive, following links, skipping hidden folders, `*.vae.*` files and broken links).
    The key test decides what a depth checkpoint is; the file name never does. The name is only
    an ordering hint: among depth checkpoints, those with "depth" in the name come first (the
    official 512-depth-ema before a merge that happens to carry the depth model), then natural
    path order. So `find_depth_checkpoints(folders)[0]` is always a real depth checkpoint.
    With `include_others=True` the other checkpoints follow, "depth"-named ones first.

The renamed YAML
    A1111 and its forks load `<checkpoint stem>.yaml` beside a checkpoint as its model config.
    `write_depth_yaml` writes Stability's `configs/stable-diffusion/v2-midas-inference.yaml`
    (Stability-AI/stablediffusion, commit ca86da3, 2022-11-24) there, built from `DEPTH_CONFIG`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import re
import struct
import tempfile
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import WeightsError

log = logging.getLogger(__name__)

DEPTH_MARKER_KEY = "depth_model.model.pretrained.act_postprocess3.0.project.0.bias"
CHECKPOINT_EXTENSIONS = (".ckpt", ".safetensors")
_EXCLUDED_SUFFIXES = (".vae.ckpt", ".vae.safetensors")  # as A1111's list_models

# safetensors refuses headers above 100 MB; data.pkl of a 5 GB SD checkpoint is well under 1 MB.
_MAX_SAFETENSORS_HEADER = 100_000_000
_MAX_PICKLE_BYTES = 256 * 1024 * 1024
_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C

Kind = Literal["depth", "other", "unreadable"]
Format = Literal["safetensors", "torch-zip", "torch-legacy"]


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


class _Unreadable(Exception):
    """Internal: the file cannot be read as a checkpoint; the message is the reason."""

    def __init__(self, reason: str, fmt: Format | None = None):
        super().__init__(reason)
        self.format = fmt


# --------------------------------------------------------------------------- cache

_cache: dict[tuple[str, int, int], CheckpointInspection] = {}
_cache_lock = threading.Lock()
_CACHE_LIMIT = 4096


def clear_cache() -> None:
    """Forget every cached inspection (they are also invalidated by size/mtime changes)."""
    with _cache_lock:
        _cache.clear()


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
    result = _inspect_uncached(p, st.st_size)
    with _cache_lock:
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        _cache[key] = result
    return result


def is_depth_checkpoint(path: str | os.PathLike[str]) -> bool:
    """True when the file's state dict has A1111's depth-model marker key.
    False for other checkpoints and for unreadable files (see `inspect_checkpoint` for why)."""
    return inspect_checkpoint(path).is_depth


def _inspect_uncached(path: Path, size: int) -> CheckpointInspection:
    fmt: Format | None = None
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            if len(head) == 0:
                raise _Unreadable("the file is empty")
            # safetensors first: its 8-byte header length may begin with any byte.
            if len(head) >= 9 and head[8:9] == b"{":
                fmt = "safetensors"
                f.seek(0)
                keys = _safetensors_keys(f, size)
            elif head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
                fmt = "torch-zip"
                keys = _zip_torch_keys(f)
            elif head[:1] == b"\x80":
                fmt = "torch-legacy"
                f.seek(0)
                keys = _legacy_torch_keys(f)
            else:
                raise _Unreadable(
                    "not a checkpoint format this reader knows "
                    "(expected safetensors or a PyTorch .ckpt/.pt file)"
                )
    except _Unreadable as error:
        return CheckpointInspection(path, "unreadable", error.format or fmt, f"{path.name}: {error}")
    except OSError as error:
        return CheckpointInspection(path, "unreadable", fmt, f"{path.name}: read error: {error}")
    except Exception as error:  # noqa: BLE001 - arbitrary bytes: a parser failure means "damaged"
        reason = f"{path.name}: damaged ({type(error).__name__}: {error})"
        return CheckpointInspection(path, "unreadable", fmt, reason)

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


# --------------------------------------------------------------------------- safetensors


def _safetensors_keys(f: io.BufferedReader, file_size: int) -> set[str]:
    raw = f.read(8)
    if len(raw) < 8:
        raise _Unreadable("too short for a safetensors file", "safetensors")
    (header_len,) = struct.unpack("<Q", raw)
    if header_len > _MAX_SAFETENSORS_HEADER:
        raise _Unreadable(
            f"safetensors header length {header_len} is implausible (corrupt file)", "safetensors"
        )
    if 8 + header_len > file_size:
        raise _Unreadable(
            f"truncated: the safetensors header needs {8 + header_len} bytes, the file has {file_size}",
            "safetensors",
        )
    try:
        header = json.loads(f.read(header_len))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _Unreadable(f"the safetensors header is not valid JSON ({error})", "safetensors") from None
    if not isinstance(header, dict):
        raise _Unreadable("the safetensors header is not a JSON object", "safetensors")
    data_size = file_size - 8 - header_len
    keys = set()
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise _Unreadable(f"the safetensors header entry {name!r} is malformed", "safetensors")
        if offsets[1] > data_size:
            raise _Unreadable(
                f"truncated: tensor {name!r} ends at byte {offsets[1]} of the data, "
                f"the file holds {data_size} data bytes (an incomplete download?)",
                "safetensors",
            )
        keys.add(name)
    return keys


# --------------------------------------------------------------------------- torch pickles


class _Opaque:
    """Stands for every object a pickle names by a global (tensors, storages, classes).

    It accepts whatever the pickle opcodes do to it and does nothing, so unpickling builds the
    dict/list skeleton of a checkpoint while nothing named in the file is imported or run.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> _Opaque:  # noqa: PYI034
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def add(self, item: Any) -> None:
        pass


class _KeyOnlyUnpickler(pickle.Unpickler):
    """Unpickles the structure of a torch checkpoint without importing or calling anything.

    `collections.OrderedDict` (the state-dict type) is the only real class it hands out;
    every other global, and every persistent id (a tensor storage), is `_Opaque`.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        return _Opaque

    def persistent_load(self, pid: Any) -> Any:
        return _Opaque()


def _state_dict_keys(obj: Any) -> set[str]:
    if not isinstance(obj, dict):
        what = "custom object" if isinstance(obj, _Opaque) else type(obj).__name__
        raise _Unreadable(f"the checkpoint holds a {what}, not a state dict")
    inner = obj.get("state_dict", obj)  # A1111: pl_sd.pop("state_dict", pl_sd)
    if not isinstance(inner, dict):
        raise _Unreadable("its 'state_dict' entry is not a dict")
    return {k for k in inner if isinstance(k, str)}


def _unpickle_structure(stream: Any) -> Any:
    try:
        return _KeyOnlyUnpickler(stream).load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        struct.error,
        UnicodeDecodeError,
        MemoryError,
        RecursionError,
    ) as error:
        raise _Unreadable(f"its pickle is corrupt ({type(error).__name__}: {error})") from None


def _zip_torch_keys(f: io.BufferedReader) -> set[str]:
    try:
        with zipfile.ZipFile(f) as zf:
            members = [
                i for i in zf.infolist() if i.filename.endswith("data.pkl") and i.filename.count("/") <= 1
            ]
            if not members:
                raise _Unreadable("a zip file without data.pkl: not a PyTorch checkpoint", "torch-zip")
            # torch.save writes "<archive>/data.pkl"; prefer it over a top-level one.
            info = max(members, key=lambda i: i.filename.count("/"))
            if info.file_size > _MAX_PICKLE_BYTES:
                raise _Unreadable(f"its data.pkl is {info.file_size} bytes, implausibly large", "torch-zip")
            with zf.open(info) as stream:
                obj = _unpickle_structure(stream)
    except zipfile.BadZipFile as error:
        raise _Unreadable(
            f"not a complete zip/PyTorch file, truncated or corrupt ({error})", "torch-zip"
        ) from None
    except _Unreadable as error:
        raise _Unreadable(str(error), "torch-zip") from None
    try:
        return _state_dict_keys(obj)
    except _Unreadable as error:
        raise _Unreadable(str(error), "torch-zip") from None


def _legacy_torch_keys(f: io.BufferedReader) -> set[str]:
    # Legacy torch.save layout: pickle(magic), pickle(protocol), pickle(sys_info),
    # pickle(object with persistent storage ids), then the raw storages, which we never reach.
    try:
        magic = _unpickle_structure(f)
        if magic != _LEGACY_TORCH_MAGIC:
            raise _Unreadable("a pickle file, but not a PyTorch checkpoint", "torch-legacy")
        _unpickle_structure(f)  # protocol version
        _unpickle_structure(f)  # sys info
        obj = _unpickle_structure(f)
        return _state_dict_keys(obj)
    except _Unreadable as error:
        raise _Unreadable(str(error), "torch-legacy") from None


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
    *,
    include_others: bool = False,
) -> list[Path]:
    """Checkpoints (`.ckpt`, `.safetensors`) under `folders`, searched recursively like A1111.

    Returns the depth checkpoints (by the state-dict key test), "depth"-named ones first, then
    natural path order. With `include_others=True` every other checkpoint follows (also
    "depth"-named first): use that for a dropdown; use the default to pick a depth model.
    Missing folders are skipped; a file reached through two folders is listed once.
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
            depth = is_depth_checkpoint(path)
            if not depth and not include_others:
                continue
            name_hint = "depth" in path.name.lower()
            ranked.append((0 if depth else 1, 0 if name_hint else 1, [order, *_natural_key(str(path))], path))
    ranked.sort(key=lambda item: item[:3])
    return [item[3] for item in ranked]


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
