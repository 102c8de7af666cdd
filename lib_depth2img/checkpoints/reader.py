"""Reading checkpoint files: the one place that opens `.safetensors` and PyTorch files.

Two ways in, for two needs:
- `read_keys(path)`: the state-dict key names only, for telling a depth checkpoint from others in
  a folder of many 5 GB files. No tensor is read and nothing named in the file is imported or run:
  `.safetensors` through `safe_open` (the header only); torch files through an unpickler that
  turns every global into an inert placeholder. `torch.load(weights_only=True)` cannot serve
  here: it refuses a Lightning checkpoint's extras (numpy arrays, callbacks), so such a depth
  checkpoint would not be found, and a legacy (pre-zip) file cannot be memory-mapped.
- `open_checkpoint(path)`: the tensors, for loading a model. `.safetensors` key by key; torch
  files with `torch.load(weights_only=True)` (a pickle that would run code is refused),
  memory-mapped when they are zip archives so only the tensors used are read, and read whole
  when they are legacy (pre-zip) files, which cannot be memory-mapped.
The format comes from the file's first bytes, never from its extension.
"""

from __future__ import annotations

import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, Literal

from ..errors import WeightsError

Format = Literal["safetensors", "torch-zip", "torch-legacy"]

_MAX_PICKLE_BYTES = 256 * 1024 * 1024  # data.pkl of a 5 GB SD checkpoint is well under 1 MB
_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_WRAPPERS = ("state_dict", "model")  # Lightning checkpoints; MiDaS files saved with their optimizer


class UnreadableCheckpoint(Exception):
    """The file cannot be read as a checkpoint; the message says why, `format` what it looked like."""

    def __init__(self, reason: str, fmt: Format | None = None) -> None:
        super().__init__(reason)
        self.format = fmt


def sniff_format(path: Path) -> Format:
    """The checkpoint format by the file's first bytes; UnreadableCheckpoint when it is none of them."""
    with open(path, "rb") as file:
        head = file.read(16)
    if not head:
        raise UnreadableCheckpoint("the file is empty")
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors first: its length prefix may start with any byte
        return "safetensors"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "torch-zip"
    if head[:1] == b"\x80":
        return "torch-legacy"
    raise UnreadableCheckpoint(
        "not a checkpoint format this reader knows (expected safetensors or a PyTorch .ckpt/.pt file)"
    )


# --------------------------------------------------------------------------- key names only


def read_keys(path: Path) -> tuple[Format, set[str]]:
    """The file's format and its state-dict key names, without reading a tensor or running anything.

    As in A1111, a top-level `state_dict` entry is the state dict when present.
    Raises UnreadableCheckpoint (with the format when it was told) and OSError.
    """
    fmt = sniff_format(path)
    try:
        if fmt == "safetensors":
            return fmt, _safetensors_keys(path)
        with open(path, "rb") as file:
            return fmt, _zip_torch_keys(file) if fmt == "torch-zip" else _legacy_torch_keys(file)
    except UnreadableCheckpoint as error:
        raise UnreadableCheckpoint(str(error), fmt) from None


def _safetensors_keys(path: Path) -> set[str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as file:  # the header only; no torch needed
            return set(file.keys())
    except SafetensorError as error:
        detail = str(error).removeprefix("Error while deserializing header: ")
        if "incomplete" in detail or "invalid header length" in detail:
            raise UnreadableCheckpoint(
                f"truncated: the safetensors header or data is cut short ({detail}; an incomplete download?)"
            ) from None
        raise UnreadableCheckpoint(f"the safetensors header is malformed ({detail})") from None


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
        raise UnreadableCheckpoint(f"the checkpoint holds a {what}, not a state dict")
    inner = obj.get("state_dict", obj)  # A1111: pl_sd.pop("state_dict", pl_sd)
    if not isinstance(inner, dict):
        raise UnreadableCheckpoint("its 'state_dict' entry is not a dict")
    return {key for key in inner if isinstance(key, str)}


def _unpickle_structure(stream: IO[bytes]) -> Any:
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
        raise UnreadableCheckpoint(f"its pickle is corrupt ({type(error).__name__}: {error})") from None


def _zip_torch_keys(file: IO[bytes]) -> set[str]:
    try:
        with zipfile.ZipFile(file) as archive:
            members = [
                info
                for info in archive.infolist()
                if info.filename.endswith("data.pkl") and info.filename.count("/") <= 1
            ]
            if not members:
                raise UnreadableCheckpoint("a zip file without data.pkl: not a PyTorch checkpoint")
            # torch.save writes "<archive>/data.pkl"; prefer it over a top-level one.
            info = max(members, key=lambda member: member.filename.count("/"))
            if info.file_size > _MAX_PICKLE_BYTES:
                raise UnreadableCheckpoint(f"its data.pkl is {info.file_size} bytes, implausibly large")
            with archive.open(info) as stream:
                obj = _unpickle_structure(stream)
    except zipfile.BadZipFile as error:
        raise UnreadableCheckpoint(f"not a complete zip/PyTorch file, truncated or corrupt ({error})") from None
    return _state_dict_keys(obj)


def _legacy_torch_keys(file: IO[bytes]) -> set[str]:
    # Legacy torch.save layout: pickle(magic), pickle(protocol), pickle(sys_info),
    # pickle(object with persistent storage ids), then the raw storages, which we never reach.
    if _unpickle_structure(file) != _LEGACY_TORCH_MAGIC:
        raise UnreadableCheckpoint("a pickle file, but not a PyTorch checkpoint")
    _unpickle_structure(file)  # protocol version
    _unpickle_structure(file)  # sys info
    return _state_dict_keys(_unpickle_structure(file))


# --------------------------------------------------------------------------- tensors


class OpenCheckpoint:
    """An open checkpoint: every tensor's shape and the file's text metadata now, tensors on request."""

    def __init__(
        self,
        path: Path,
        shapes: dict[str, tuple[int, ...]],
        metadata: dict[str, str],
        get_tensor: Callable[[str], Any],
    ) -> None:
        self.path = path
        self.shapes = shapes
        self.metadata = metadata
        self._get_tensor = get_tensor

    def tensor(self, name: str) -> Any:
        """The tensor `name` (a `torch.Tensor`, read from disk or the memory map now)."""
        try:
            return self._get_tensor(name)
        except Exception as error:  # noqa: BLE001 - a damaged file fails here as anything
            raise _damaged(self.path, error) from None


def open_checkpoint(path: str | Path, what: str = "checkpoint") -> OpenCheckpoint:
    """Open a `.safetensors` or PyTorch checkpoint for reading tensors; WeightsError says what is wrong.

    A Lightning `state_dict` (or a MiDaS release's `model`) wrapper is unwrapped; the wrapper's
    text entries become the metadata, as a `.safetensors` file's own metadata does. `what` names
    the file in the message when it is missing ("depth weights").
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{what} not found: {path} does not exist or is not a file.")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path} is empty (0 bytes); the download or copy probably failed. Get the file again.")
    try:
        fmt = sniff_format(path)
    except UnreadableCheckpoint as error:
        raise WeightsError(
            f"{path.name}: unknown checkpoint type: {error}. Use a .ckpt or .safetensors file."
        ) from None
    return _safetensors(path) if fmt == "safetensors" else _torch_checkpoint(path, mmap=fmt == "torch-zip")


def _safetensors(path: Path) -> OpenCheckpoint:
    from safetensors import SafetensorError, safe_open

    try:
        file = safe_open(str(path), framework="pt", device="cpu")  # reads the header; tensors on request
        shapes = {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}  # noqa: SIM118
        metadata = dict(file.metadata() or {})
    except (SafetensorError, OSError) as error:
        raise _damaged(path, error) from None
    return OpenCheckpoint(path, shapes, metadata, file.get_tensor)


def _torch_checkpoint(path: Path, *, mmap: bool) -> OpenCheckpoint:
    import torch

    try:
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        refused = re.search(r"GLOBAL (\S+)", str(error))
        if refused is None:
            raise _damaged(path, error) from None
        raise WeightsError(
            f"{path.name} was refused: besides weights it holds a Python object ({refused.group(1)}) "
            "that could run code when loaded. Use a .safetensors copy, or a file from a source you trust."
        ) from None
    except Exception as error:  # noqa: BLE001 - torch.load reports damage as RuntimeError, EOFError, KeyError ...
        raise _damaged(path, error) from None
    metadata: dict[str, str] = {}
    for wrapper in _WRAPPERS:
        if isinstance(content, Mapping) and isinstance(content.get(wrapper), Mapping):
            metadata = metadata or {key: value for key, value in content.items() if isinstance(value, str)}
            content = content[wrapper]
    if not isinstance(content, Mapping):
        raise WeightsError(f"{path.name} holds a {type(content).__name__}, not a state dict of named tensors.")
    for name, value in content.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{path.name}: entry {name!r} is a {type(value).__name__}, not a tensor.")
    return OpenCheckpoint(path, {name: tuple(value.shape) for name, value in content.items()}, metadata, content.__getitem__)


def _damaged(path: Path, error: BaseException) -> WeightsError:
    lines = str(error).strip().splitlines()
    detail = f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__
    return WeightsError(
        f"{path.name} could not be read ({detail}); it is truncated or damaged, often by an interrupted "
        "download. Get the file again."
    )
