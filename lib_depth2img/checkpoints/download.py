"""Downloading the Stable Diffusion 2 depth checkpoint (`512-depth-ema`).

Standard library HTTP (urllib) only. What a download does:
- streams into `<name>.part` beside the destination and reports (bytes done, total) to a
  progress callback;
- resumes an existing `.part` with `Range: bytes=<size>-`, checking the answer: 206 with a
  matching `Content-Range` appends; 200 (a server that ignores Range) starts again from byte 0;
  416 means the part already holds the whole file (verified next) or is unusable (restarted);
- when the connection drops after data arrived, resumes by itself up to `retries` times; a
  connection that fails outright (no network, refused, HTTP error) fails at once with a message
  that says how to get the file by hand;
- checks the size and the SHA-256 (hashed while streaming) against `MODEL_SOURCES`; on a
  mismatch the `.part` is deleted and nothing is published;
- publishes the file by renaming the verified `.part` (the final name only ever holds a complete,
  checked file), then writes the depth YAML beside it (`checkpoints.write_depth_yaml`).

Where from: `MODEL_SOURCES` holds the official files of `stabilityai/stable-diffusion-2-depth`
on Hugging Face. The folder URL can be replaced (for a mirror, or a local server in tests) by the
`base_url` argument, else the `DEPTH2IMG_MODEL_URL` environment variable, else `HF_ENDPOINT`
(the Hugging Face mirror variable A1111 also honours) in place of https://huggingface.co.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import Depth2imgError
from .discovery import write_depth_yaml

log = logging.getLogger(__name__)

HF_REPO = "stabilityai/stable-diffusion-2-depth"
HF_ENDPOINT = "https://huggingface.co"
URL_ENV_VAR = "DEPTH2IMG_MODEL_URL"
MODELS_DIR_ENV_VAR = "DEPTH2IMG_MODELS_DIR"
DEFAULT_FORMAT = "safetensors"
DEFAULT_TIMEOUT = 30.0
CHUNK_SIZE = 1 << 20

ProgressCallback = Callable[[int, "int | None"], None]


class DownloadError(Depth2imgError):
    """A download that failed; the message says why and how to get the file by hand."""


@dataclass(frozen=True)
class ModelSource:
    """One downloadable file. `size` (bytes) and `sha256` (hex) are None when not known;
    the matching check is then skipped (and logged)."""

    name: str
    url: str
    size: int | None
    sha256: str | None


def _hf_url(name: str) -> str:
    return f"{HF_ENDPOINT}/{HF_REPO}/resolve/main/{name}"


# Sizes and SHA-256 are the Git LFS pointers (oid = SHA-256 of the content) of the official files:
# - 512-depth-ema.safetensors: stabilityai/stable-diffusion-2-depth commit 3b9e6a0 "Adding
#   `safetensors` variant of this model" (PR #8, merged to main as 985a5c6).
# - 512-depth-ema.ckpt: stabilityai/stable-diffusion-2 commit 58cf398 "add 512-depth"; the
#   stable-diffusion-2-depth repository holds the same LFS object ("Duplicate from
#   stabilityai/stable-diffusion-2", same SHA-256 shown on its file page).
MODEL_SOURCES: dict[str, ModelSource] = {
    "safetensors": ModelSource(
        name="512-depth-ema.safetensors",
        url=_hf_url("512-depth-ema.safetensors"),
        size=5_707_256_711,
        sha256="59cb052d4409654936139693b57e4632d119bdd38df9a3cdf30d4a63799a4853",
    ),
    "ckpt": ModelSource(
        name="512-depth-ema.ckpt",
        url=_hf_url("512-depth-ema.ckpt"),
        size=5_707_592_867,
        sha256="ece79d931a1f3c27fb98a0c0bc6aa7d61168879cd52b4ad7b26e3106f9748ef1",
    ),
}
FORMATS = tuple(MODEL_SOURCES)


def resolve_url(source: ModelSource, base_url: str | None = None) -> str:
    """The URL to fetch `source` from.

    `base_url` (else `$DEPTH2IMG_MODEL_URL`) is a folder URL and the file name is appended;
    a URL that already ends with `/<file name>` is used as it is. Without either, `$HF_ENDPOINT`
    replaces https://huggingface.co in the official URL.
    """
    base = base_url or os.environ.get(URL_ENV_VAR) or ""
    base = base.strip()
    if base:
        base = base.rstrip("/")
        if base.endswith("/" + source.name):
            return base
        return f"{base}/{source.name}"
    endpoint = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/")
    if endpoint and source.url.startswith(HF_ENDPOINT + "/"):
        return endpoint + source.url[len(HF_ENDPOINT) :]
    return source.url


def default_models_dir() -> Path:
    """Where the depth model goes when no folder is given.

    `$DEPTH2IMG_MODELS_DIR` if set; otherwise `Stable-diffusion` in `default_models_root()`.
    """
    env = os.environ.get(MODELS_DIR_ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    return default_models_root() / "Stable-diffusion"


def default_models_root() -> Path:
    """The models folder: the WebUI's `models` inside an A1111 install (this repository under
    `<webui>/extensions/`), otherwise `models` in this repository (git-ignored)."""
    root = Path(__file__).resolve().parents[2]  # lib_depth2img/checkpoints/download.py
    if root.parent.name == "extensions":
        webui_models = root.parent.parent / "models"
        if (webui_models / "Stable-diffusion").is_dir():
            return webui_models
    return root / "models"


def download_depth_model(
    dest_dir: str | os.PathLike[str] | None = None,
    *,
    fmt: str = DEFAULT_FORMAT,
    base_url: str | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = 3,
    write_yaml: bool = True,
    source: ModelSource | None = None,
) -> Path:
    """Download `512-depth-ema.<fmt>` into `dest_dir` (default: `default_models_dir()`),
    verified, and write `512-depth-ema.yaml` beside it. Returns the checkpoint's path.

    A complete file already there (right size) is kept and not downloaded again; a `.part`
    left by an interrupted run is resumed. `source` replaces the `MODEL_SOURCES` entry (tests,
    other mirrors). Raises `DownloadError` (a `Depth2imgError`) with a message saying what to do.
    """
    if source is None:
        if fmt not in MODEL_SOURCES:
            raise DownloadError(f"Unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}.")
        source = MODEL_SOURCES[fmt]
    folder = Path(dest_dir).expanduser() if dest_dir is not None else default_models_dir()
    url = resolve_url(source, base_url)
    path = download_file(
        url,
        folder / source.name,
        size=source.size,
        sha256=source.sha256,
        progress=progress,
        timeout=timeout,
        retries=retries,
        manual_url=source.url,
    )
    if write_yaml:
        written = write_depth_yaml(path)
        if written is None:
            log.info("Kept the existing %s", path.with_name(path.stem + ".yaml"))
    return path


def download_file(
    url: str,
    dest: str | os.PathLike[str],
    *,
    size: int | None = None,
    sha256: str | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = 3,
    retry_wait: float = 1.0,
    manual_url: str | None = None,
) -> Path:
    """Download `url` to `dest` through `<dest>.part`, resuming, verifying and renaming.

    `size`/`sha256`: expected length and hex SHA-256; None skips that check. `progress` gets
    (bytes done, total or None). `retries`: how many times a transfer that broke after data
    arrived is resumed automatically. `manual_url` is the address the error messages tell the
    user to fetch by hand (default: `url`).
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    expected_sha = sha256.lower() if sha256 else None
    hint = f"Download it by hand from {manual_url or url} and put it in {dest.parent}."

    if dest.exists():
        have = dest.stat().st_size
        if size is None or have == size:
            log.info("%s is already there (%d bytes); not downloading it again", dest, have)
            return dest
        raise DownloadError(
            f"{dest} already exists with {have} bytes, but {dest.name} has {size} bytes. "
            "Move or delete it, then run again."
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(f"Cannot create the folder {dest.parent}: {error.strerror or error}.") from None

    with _folder_lock(dest.parent):
        attempt = 0
        while True:
            try:
                digest = _transfer(url, part, size, progress, timeout, hint)
                break
            except _Interrupted as error:
                if not error.made_progress or attempt >= retries:
                    kept = part.stat().st_size if part.exists() else 0
                    resume = (
                        f" The {kept} bytes downloaded so far are kept in {part}; run again to resume."
                        if kept
                        else ""
                    )
                    raise DownloadError(f"Could not reach {url} ({error}).{resume} {hint}") from None
                attempt += 1
                log.warning("Download interrupted (%s); resuming (%d/%d)", error, attempt, retries)
                time.sleep(retry_wait * attempt)

        got = part.stat().st_size
        if size is not None and got != size:
            _remove(part)
            raise DownloadError(
                f"Downloaded {got} bytes from {url}, but {dest.name} has {size} bytes: not the expected file "
                f"(the partial download was deleted). Check the URL. {hint}"
            )
        if expected_sha is None:
            log.warning("No known SHA-256 for %s: its integrity was not checked", dest.name)
        else:
            if digest is None:  # the .part was already complete: nothing was streamed
                digest = _hash_file(part)
            if digest != expected_sha:
                _remove(part)
                raise DownloadError(
                    f"The file downloaded from {url} is damaged or not the expected one: its SHA-256 is "
                    f"{digest}, expected {expected_sha} (the download was deleted). Run again. {hint}"
                )
        try:
            os.replace(part, dest)
        except OSError as error:
            raise DownloadError(f"Cannot rename {part} to {dest}: {error.strerror or error}.") from None
    log.info("Downloaded %s", dest)
    return dest


# --------------------------------------------------------------------------- internals


class _Interrupted(Exception):
    """Internal: the network failed; `made_progress` tells whether bytes arrived first."""

    def __init__(self, reason: str, made_progress: bool):
        super().__init__(reason)
        self.made_progress = made_progress


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)


def _parse_content_range(value: str | None) -> tuple[int | None, int | None, int | None] | None:
    """(start, end, total) of a `Content-Range: bytes a-b/n` header; None when absent/invalid."""
    if not value:
        return None
    m = _CONTENT_RANGE.match(value)
    if not m:
        return None
    start = int(m.group(1)) if m.group(1) is not None else None
    end = int(m.group(2)) if m.group(2) is not None else None
    total = int(m.group(3)) if m.group(3) != "*" else None
    return start, end, total


def _network_reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        error = error.reason if isinstance(error.reason, BaseException) else error
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "the connection timed out"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return f"host name not found ({error.strerror or error})"
    if isinstance(error, http.client.IncompleteRead):
        return "the connection closed early"
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return text


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": f"sd-webui-depth2img/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    return urllib.request.urlopen(request, timeout=timeout)


def _transfer(
    url: str, part: Path, size: int | None, progress: ProgressCallback | None, timeout: float, hint: str
) -> str | None:
    """Bring `part` to the full remote content. Returns the SHA-256 of `part` (hashed while
    streaming), or None when `part` was already complete and nothing was streamed."""
    restarted = False
    while True:
        offset = part.stat().st_size if part.exists() else 0
        if size is not None and offset > size:
            log.warning("%s is larger than the file (%d > %d bytes); starting again", part, offset, size)
            _remove(part)
            offset = 0
        if size is not None and offset == size and size > 0:
            return None
        try:
            response = _open(url, offset, timeout)
        except urllib.error.HTTPError as error:
            with contextlib.closing(error):
                if error.code == 416 and offset:
                    parsed = _parse_content_range(error.headers.get("Content-Range"))
                    remote_total = parsed[2] if parsed else None
                    if remote_total is not None and remote_total == offset:
                        return None  # the part already holds the whole file
                    if not restarted:
                        log.warning("The server cannot resume %s (HTTP 416); starting again", part.name)
                        _remove(part)
                        restarted = True
                        continue
                reason = f"HTTP {error.code} {error.reason}".strip()
            raise DownloadError(f"Could not download {url}: {reason}. Check the URL. {hint}") from None
        except ValueError as error:
            raise DownloadError(
                f"Invalid download URL {url!r}: {error}. Give an http:// or https:// URL."
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            raise _Interrupted(_network_reason(error), made_progress=False) from None

        with response:
            status = response.status
            length_header = response.headers.get("Content-Length")
            length = int(length_header) if length_header and length_header.isdigit() else None
            if offset and status == 206:
                parsed = _parse_content_range(response.headers.get("Content-Range"))
                if parsed is None or parsed[0] != offset:
                    if restarted:
                        raise DownloadError(
                            f"Could not download {url}: the server sends wrong byte ranges. {hint}"
                        )
                    log.warning(
                        "The server answered with the wrong range (%s); starting again",
                        response.headers.get("Content-Range"),
                    )
                    _remove(part)
                    restarted = True
                    continue
                remote_total = parsed[2]
                if remote_total is None and length is not None:
                    remote_total = offset + length
                mode = "ab"
            elif status == 200:
                if offset:
                    log.warning(
                        "The server ignored the resume request; downloading %s from the start", part.name
                    )
                    offset = 0
                remote_total = length
                mode = "wb"
            else:
                raise DownloadError(f"Could not download {url}: unexpected HTTP {status}. {hint}")

            if size is not None and remote_total is not None and remote_total != size:
                # Nothing was written in this attempt: an existing .part stays for the right server.
                raise DownloadError(
                    f"The server offers {remote_total} bytes at {url}, but {part.name[:-5]} has "
                    f"{size} bytes: not the expected file. Check the URL. {hint}"
                )
            total = size if size is not None else remote_total
            hasher = _hash_file(part, offset, return_hasher=True) if mode == "ab" else hashlib.sha256()
            done = offset
            if progress is not None:
                progress(done, total)
            received = 0
            try:
                out = open(part, mode)  # noqa: SIM115 - closed below, errors told apart
            except OSError as error:
                raise _write_error(part, error, size) from None
            with out:
                while True:
                    try:
                        chunk = response.read(CHUNK_SIZE)
                    except (OSError, http.client.HTTPException) as error:
                        raise _Interrupted(_network_reason(error), made_progress=received > 0) from None
                    if not chunk:
                        break
                    try:
                        out.write(chunk)
                    except OSError as error:
                        raise _write_error(part, error, size) from None
                    hasher.update(chunk)
                    received += len(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
                    if total is not None and done > total:
                        break
                try:
                    out.flush()
                    os.fsync(out.fileno())
                except OSError as error:
                    raise _write_error(part, error, size) from None
            if remote_total is not None and done < remote_total:
                raise _Interrupted(
                    f"the connection closed after {done} of {remote_total} bytes", made_progress=received > 0
                )
            return hasher.hexdigest()


def _write_error(part: Path, error: OSError, size: int | None) -> DownloadError:
    need = f" (the model needs {size / 1e9:.1f} GB)" if size else ""
    return DownloadError(
        f"Cannot write {part}: {error.strerror or error}. Free some disk space{need} or choose another "
        "folder; run again to resume."
    )


def _hash_file(path: Path, limit: int | None = None, *, return_hasher: bool = False):  # type: ignore[no-untyped-def]
    hasher = hashlib.sha256()
    remaining = limit
    with open(path, "rb") as f:
        while remaining is None or remaining > 0:
            block = f.read(CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining))
            if not block:
                break
            hasher.update(block)
            if remaining is not None:
                remaining -= len(block)
    return hasher if return_hasher else hasher.hexdigest()


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """One download at a time into a folder (POSIX advisory lock on the folder itself, so no
    lock file is left behind). Elsewhere, or where the filesystem refuses, no lock."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DownloadError(
                f"Another download into {folder} is running. Wait for it to finish, then run again."
            ) from None
        except OSError:
            pass  # filesystem without flock: go on unlocked
        yield
    finally:
        os.close(fd)
