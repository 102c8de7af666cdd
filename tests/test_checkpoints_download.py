"""Downloading the depth model over real HTTP from a local server (lib_depth2img.checkpoints.download)."""

from __future__ import annotations

import argparse
import hashlib
import itertools
import logging
import re
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import save_file
from support.fake_http import FakeServer

from lib_depth2img.checkpoints import discovery, download
from lib_depth2img.checkpoints.discovery import DEPTH_MARKER_KEY
from lib_depth2img.checkpoints.download import (
    DownloadError,
    ModelSource,
    download_depth_model,
    download_file,
    resolve_url,
)

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes: several chunks
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server():
    s = FakeServer()
    s.files["model.bin"] = PAYLOAD
    yield s
    s.close()


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def fetch(server, tmp_path, **kwargs):
    kwargs.setdefault("size", len(PAYLOAD))
    kwargs.setdefault("sha256", PAYLOAD_SHA)
    kwargs.setdefault("timeout", 5)
    kwargs.setdefault("retry_wait", 0)
    return download_file(server.url("model.bin"), tmp_path / "model.bin", **kwargs)


# --------------------------------------------------------------------------- transfers


def test_full_download(server, tmp_path):
    seen = []
    path = fetch(server, tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == PAYLOAD
    assert names(tmp_path) == ["model.bin"]
    assert [r["range"] for r in server.requests] == [None]
    assert seen[0] == (0, len(PAYLOAD)) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(seen))


def test_resume_requests_only_the_remaining_bytes(server, tmp_path):
    have = 300_000
    (tmp_path / "model.bin.part").write_bytes(PAYLOAD[:have])
    seen = []
    path = fetch(server, tmp_path, progress=lambda done, total: seen.append(done))
    assert path.read_bytes() == PAYLOAD
    assert [(r["range"], r["sent"]) for r in server.requests] == [(f"bytes={have}-", len(PAYLOAD) - have)]
    assert seen[0] == have
    assert names(tmp_path) == ["model.bin"]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path, caplog):
    server.honour_range = False
    (tmp_path / "model.bin.part").write_bytes(b"X" * 1000)  # would corrupt the file if appended to
    with caplog.at_level(logging.WARNING):
        path = fetch(server, tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert server.requests[0]["range"] == "bytes=1000-" and server.requests[0]["sent"] == len(PAYLOAD)
    assert "ignored the resume request" in caplog.text


def test_wrong_content_range_restarts(server, tmp_path):
    server.content_range_shift = 7
    (tmp_path / "model.bin.part").write_bytes(PAYLOAD[:5000])
    path = fetch(server, tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert [r["range"] for r in server.requests] == ["bytes=5000-", None]


def test_416_with_a_complete_part_publishes_it(server, tmp_path):
    (tmp_path / "model.bin.part").write_bytes(PAYLOAD)
    path = fetch(server, tmp_path, size=None)  # size unknown: the server has to say it is complete
    assert path.read_bytes() == PAYLOAD
    assert [r["range"] for r in server.requests] == [f"bytes={len(PAYLOAD)}-"]


def test_complete_part_with_known_size_needs_no_request(server, tmp_path):
    (tmp_path / "model.bin.part").write_bytes(PAYLOAD)
    assert fetch(server, tmp_path).read_bytes() == PAYLOAD
    assert server.requests == []


def test_oversized_part_is_discarded(server, tmp_path):
    (tmp_path / "model.bin.part").write_bytes(PAYLOAD + b"junk")
    assert fetch(server, tmp_path).read_bytes() == PAYLOAD
    assert [r["range"] for r in server.requests] == [None]


def test_unknown_sha_skips_the_check_and_says_so(server, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        path = fetch(server, tmp_path, sha256=None, size=None)
    assert path.read_bytes() == PAYLOAD
    assert "No known SHA-256" in caplog.text


def test_without_content_length(server, tmp_path):
    server.send_length = False
    seen = []
    fetch(server, tmp_path, size=None, progress=lambda done, total: seen.append(total))
    assert set(seen) == {None}
    assert (tmp_path / "model.bin").read_bytes() == PAYLOAD


# --------------------------------------------------------------------------- failures


def test_sha_mismatch_deletes_everything(server, tmp_path):
    with pytest.raises(DownloadError, match="SHA-256") as info:
        fetch(server, tmp_path, sha256="0" * 64)
    assert PAYLOAD_SHA in str(info.value) and "deleted" in str(info.value)
    assert names(tmp_path) == []


def test_corrupt_part_is_caught_by_the_sha_after_resume(server, tmp_path):
    (tmp_path / "model.bin.part").write_bytes(b"\x00" * 5000)  # right length, wrong bytes
    with pytest.raises(DownloadError, match="SHA-256"):
        fetch(server, tmp_path)
    assert names(tmp_path) == []
    assert fetch(server, tmp_path).read_bytes() == PAYLOAD  # the next run starts afresh


def test_size_mismatch_announced_by_the_server(server, tmp_path):
    with pytest.raises(DownloadError, match=f"offers {len(PAYLOAD)} bytes"):
        fetch(server, tmp_path, size=len(PAYLOAD) + 10)
    assert names(tmp_path) == []


def test_size_mismatch_found_after_the_transfer(server, tmp_path):
    server.send_length = False
    with pytest.raises(DownloadError, match="not the expected file"):
        fetch(server, tmp_path, size=len(PAYLOAD) - 10, sha256=None)
    assert names(tmp_path) == []


def test_http_404(server, tmp_path):
    with pytest.raises(DownloadError) as info:
        download_file(
            server.url("absent.bin"),
            tmp_path / "absent.bin",
            timeout=5,
            manual_url="https://example.org/absent.bin",
        )
    message = str(info.value)
    assert "HTTP 404" in message
    assert f"Download it by hand from https://example.org/absent.bin and put it in {tmp_path}" in message
    assert names(tmp_path) == []


def test_http_404_keeps_an_existing_part(server, tmp_path):
    (tmp_path / "absent.bin.part").write_bytes(b"abc")
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(server.url("absent.bin"), tmp_path / "absent.bin", timeout=5)
    assert names(tmp_path) == ["absent.bin.part"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/model.bin"
    start = time.perf_counter()
    with pytest.raises(DownloadError) as info:
        download_file(url, tmp_path / "model.bin", timeout=5)
    message = str(info.value)
    assert f"Could not reach {url}" in message and "refused" in message
    assert "Download it by hand from" in message
    assert time.perf_counter() - start < 3  # no retries when nothing ever arrived
    assert names(tmp_path) == []


def test_timeout(server, tmp_path):
    server.delay = 1.5
    with pytest.raises(DownloadError, match="timed out"):
        fetch(server, tmp_path, timeout=0.3)
    assert names(tmp_path) == []


def test_invalid_url(tmp_path):
    with pytest.raises(DownloadError, match="Invalid download URL"):
        download_file("not a url", tmp_path / "x.bin")


def test_interrupted_download_keeps_the_part_and_resumes_next_time(server, tmp_path):
    server.fail_after = [400_000]
    with pytest.raises(DownloadError) as info:
        fetch(server, tmp_path, retries=0)
    assert "run again to resume" in str(info.value)
    assert names(tmp_path) == ["model.bin.part"]
    assert (tmp_path / "model.bin.part").read_bytes() == PAYLOAD[:400_000]
    assert fetch(server, tmp_path).read_bytes() == PAYLOAD
    assert server.requests[-1]["range"] == "bytes=400000-"
    assert names(tmp_path) == ["model.bin"]


def test_interrupted_download_resumes_by_itself(server, tmp_path):
    server.fail_after = [100_000, 200_000]
    assert fetch(server, tmp_path, retries=3).read_bytes() == PAYLOAD
    assert [r["range"] for r in server.requests] == [None, "bytes=100000-", "bytes=300000-"]
    assert names(tmp_path) == ["model.bin"]


def test_existing_final_file(server, tmp_path):
    (tmp_path / "model.bin").write_bytes(PAYLOAD)
    assert fetch(server, tmp_path) == tmp_path / "model.bin"
    assert server.requests == []
    (tmp_path / "model.bin").write_bytes(b"short")
    with pytest.raises(DownloadError, match="already exists with 5 bytes"):
        fetch(server, tmp_path)
    assert (tmp_path / "model.bin").read_bytes() == b"short"


def test_one_download_per_folder(server, tmp_path):
    pytest.importorskip("fcntl")
    with download._folder_lock(tmp_path), pytest.raises(DownloadError, match="Another download"):
        fetch(server, tmp_path)
    assert fetch(server, tmp_path).read_bytes() == PAYLOAD


# --------------------------------------------------------------------------- the depth model


def depth_safetensors_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "src.safetensors"
    save_file(
        {DEPTH_MARKER_KEY: np.arange(4, dtype=np.float32), "model.x": np.zeros(1000, np.float32)}, str(path)
    )
    data = path.read_bytes()
    path.unlink()
    return data


@pytest.fixture
def depth_source(server, tmp_path):
    data = depth_safetensors_bytes(tmp_path)
    server.files["512-depth-ema.safetensors"] = data
    return ModelSource(
        "512-depth-ema.safetensors",
        "https://example.org/512-depth-ema.safetensors",
        len(data),
        hashlib.sha256(data).hexdigest(),
    )


def test_download_depth_model_writes_the_yaml(server, tmp_path, depth_source):
    dest = tmp_path / "models"
    path = download_depth_model(dest, base_url=server.base, source=depth_source, timeout=5)
    assert path == dest / "512-depth-ema.safetensors"
    assert discovery.is_depth_checkpoint(path)
    loaded = yaml.safe_load((dest / "512-depth-ema.yaml").read_text())
    assert loaded == discovery.DEPTH_CONFIG
    assert names(dest) == ["512-depth-ema.safetensors", "512-depth-ema.yaml"]
    # Run again: nothing downloaded, existing YAML kept.
    (dest / "512-depth-ema.yaml").write_text("mine: 1\n")
    assert download_depth_model(dest, base_url=server.base, source=depth_source) == path
    assert len(server.requests) == 1
    assert (dest / "512-depth-ema.yaml").read_text() == "mine: 1\n"


def test_base_url_from_the_environment(server, tmp_path, depth_source, monkeypatch):
    monkeypatch.setenv(download.URL_ENV_VAR, server.base + "/")
    path = download_depth_model(tmp_path, source=depth_source, write_yaml=False, timeout=5)
    assert path.is_file() and names(tmp_path) == ["512-depth-ema.safetensors"]
    assert server.requests[0]["path"] == "/models/512-depth-ema.safetensors"


def test_unknown_format():
    with pytest.raises(DownloadError, match="Unknown format"):
        download_depth_model("/nonexistent", fmt="gguf")


def test_resolve_url(monkeypatch):
    source = download.MODEL_SOURCES["safetensors"]
    monkeypatch.delenv(download.URL_ENV_VAR, raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert resolve_url(source) == source.url
    assert resolve_url(source, "http://mirror/x/") == "http://mirror/x/512-depth-ema.safetensors"
    assert (
        resolve_url(source, "http://mirror/x/512-depth-ema.safetensors")
        == "http://mirror/x/512-depth-ema.safetensors"
    )
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example/")
    assert (
        resolve_url(source)
        == "https://hf-mirror.example/stabilityai/stable-diffusion-2-depth/resolve/main/512-depth-ema.safetensors"
    )
    monkeypatch.setenv(download.URL_ENV_VAR, "http://env/base")
    assert resolve_url(source) == "http://env/base/512-depth-ema.safetensors"
    assert resolve_url(source, "http://arg") == "http://arg/512-depth-ema.safetensors"  # the argument wins


def test_model_sources_table():
    assert set(download.MODEL_SOURCES) == {"safetensors", "ckpt"}
    for fmt, source in download.MODEL_SOURCES.items():
        assert source.name == f"512-depth-ema.{fmt}"
        assert (
            source.url
            == f"https://huggingface.co/stabilityai/stable-diffusion-2-depth/resolve/main/{source.name}"
        )
        assert re.fullmatch(r"[0-9a-f]{64}", source.sha256)
        assert 5_700_000_000 < source.size < 5_710_000_000  # "5.71 GB" on the model page


def test_default_models_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(download.MODELS_DIR_ENV_VAR, str(tmp_path))
    assert download.default_models_dir() == tmp_path
    monkeypatch.delenv(download.MODELS_DIR_ENV_VAR)
    repo = Path(__file__).resolve().parents[1]  # the repository, found independently of the module
    assert download.default_models_dir() in (
        repo / "models" / "Stable-diffusion",
        repo.parent.parent / "models" / "Stable-diffusion",
    )


# --------------------------------------------------------------------------- CLI


def run_cli(argv):
    from lib_depth2img.cli import install

    parser = argparse.ArgumentParser()
    install.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.parametrize("quiet", [False, True])
def test_cli_install_model(server, tmp_path, depth_source, monkeypatch, capsys, quiet):
    monkeypatch.setitem(download.MODEL_SOURCES, "safetensors", depth_source)
    argv = ["install-model", "--dest", str(tmp_path), "--url", server.base] + (["--quiet"] if quiet else [])
    assert run_cli(argv) == 0
    out, err = capsys.readouterr()
    assert f"checkpoint: {tmp_path / '512-depth-ema.safetensors'}" in out
    assert "512-depth-ema.yaml" in out
    assert ("B/s" in err or "100%" in err) != quiet  # the tqdm bar
    assert names(tmp_path) == ["512-depth-ema.safetensors", "512-depth-ema.yaml"]


def test_cli_install_model_error_is_a_depth2img_error(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(DownloadError, match="Could not reach"):
        run_cli(["install-model", "--dest", str(tmp_path), "--url", url, "--quiet", "--format", "ckpt"])
    assert names(tmp_path) == []


def test_disk_errors_are_not_reported_as_network_errors(server, tmp_path, monkeypatch):
    import builtins

    real_open = builtins.open

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def fake_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return FullDisk(f) if str(file).endswith(".part") and ("w" in mode or "a" in mode) else f

    monkeypatch.setattr(download, "open", fake_open, raising=False)
    with pytest.raises(DownloadError, match="No space left on device.*run again to resume") as info:
        fetch(server, tmp_path)
    assert "Could not reach" not in str(info.value)
    monkeypatch.undo()
    assert fetch(server, tmp_path).read_bytes() == PAYLOAD


def test_wrong_server_leaves_an_existing_part_alone(server, tmp_path):
    (tmp_path / "model.bin.part").write_bytes(PAYLOAD[:1000])
    with pytest.raises(DownloadError, match="offers"):
        fetch(server, tmp_path, size=len(PAYLOAD) + 10)
    assert (tmp_path / "model.bin.part").read_bytes() == PAYLOAD[:1000]
