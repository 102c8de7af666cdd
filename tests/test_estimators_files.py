"""Estimator weights: found where users keep them, installed over real HTTP from a local server, used by the CLI."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import torch
from PIL import Image
from support.fake_http import FakeServer

from lib_depth2img.checkpoints.download import DownloadError, ModelSource
from lib_depth2img.cli import main
from lib_depth2img.errors import WeightsError
from lib_depth2img.estimators import DepthEstimator, build_dpt
from lib_depth2img.estimators import files as estimator_files
from lib_depth2img.estimators.files import OFFICIAL_DOWNLOADS, find_weights, install_estimator

NAME = "depth_anything_v2_vits"


def official_file_bytes() -> bytes:
    """A tiny network's weights saved as the release saves them: a bare state dict with the mask token."""
    torch.manual_seed(0)
    weights = build_dpt(NAME, tiny=True).state_dict() | {"pretrained.mask_token": torch.zeros(1, 64)}
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    return buffer.getvalue()


@pytest.fixture
def served(monkeypatch):
    """The local server holding the file, and the download entry pointing at it with its real SHA-256."""
    payload = official_file_bytes()
    server = FakeServer()
    server.files["depth_anything_v2_vits.pth"] = payload
    source = OFFICIAL_DOWNLOADS[NAME]
    monkeypatch.setitem(
        OFFICIAL_DOWNLOADS, NAME,
        ModelSource(source.name, server.url(source.name), len(payload), hashlib.sha256(payload).hexdigest()),
    )
    yield server, payload
    server.close()


def test_files_are_found_in_the_folders_other_tools_use_in_order(tmp_path):
    webui, controlnet = tmp_path / "models", tmp_path / "annotator"
    assert find_weights(NAME, [webui, controlnet]) is None
    (controlnet / "depth_anything_v2").mkdir(parents=True)
    converted = controlnet / "depth_anything_v2" / "depth_anything_v2_vits.safetensors"
    converted.write_bytes(b"x")
    assert find_weights(NAME, [webui, controlnet]) == converted
    (webui / "midas").mkdir(parents=True)
    (webui / "midas" / "depth_anything_v2_vits.pth").write_bytes(b"x")
    assert find_weights(NAME, [webui, controlnet]) == webui / "midas" / "depth_anything_v2_vits.pth"
    assert find_weights("depth_anything_vitl", [webui]) is None  # V1 files are named ..._vitl14.pth
    (webui / "depth_anything").mkdir()
    (webui / "depth_anything" / "depth_anything_vitl14.pth").write_bytes(b"x")
    assert find_weights("depth_anything_vitl", [webui]) == webui / "depth_anything" / "depth_anything_vitl14.pth"


def test_every_official_download_is_a_verified_hugging_face_file():
    assert "depth_anything_v2_vitl" not in OFFICIAL_DOWNLOADS  # no verified SHA-256: no download
    for name, source in OFFICIAL_DOWNLOADS.items():
        assert source.url.startswith("https://huggingface.co/") and source.url.endswith("/" + source.name)
        assert len(source.sha256) == 64 and source.name in estimator_files.weights_file_names(name)


def test_install_downloads_verifies_and_the_file_loads(served, tmp_path):
    server, payload = served
    reports = []
    path = install_estimator(NAME, tmp_path, progress=lambda done, total: reports.append((done, total)))
    assert path == tmp_path / "depth_anything_v2" / "depth_anything_v2_vits.pth"
    assert path.read_bytes() == payload and reports[-1] == (len(payload), len(payload))
    assert DepthEstimator.from_file(path, NAME).tiny
    assert install_estimator(NAME, tmp_path) == path and len(server.requests) == 1  # found: not again


def test_a_damaged_download_is_deleted_and_never_published(served, tmp_path):
    server, payload = served
    server.files["depth_anything_v2_vits.pth"] = payload[:-1] + b"!"
    with pytest.raises(DownloadError, match="SHA-256"):
        install_estimator(NAME, tmp_path)
    assert not any((tmp_path / "depth_anything_v2").iterdir())


def test_an_estimator_without_a_verified_download_says_so(tmp_path):
    with pytest.raises(WeightsError, match="no verified official download"):
        install_estimator("depth_anything_v2_vitl", tmp_path)


def test_cli_install_then_depth_with_the_installed_estimator(served, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("lib_depth2img.cli.depth.default_models_root", lambda: tmp_path / "models")
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(image)
    depth_args = ["depth", str(image), "--estimator", NAME, "-o", str(tmp_path / "out"), "--net-size", "64"]
    assert main(depth_args) == 2
    assert f"install-estimator {NAME}" in capsys.readouterr().err
    assert main(["install-estimator", NAME, "--dest", str(tmp_path / "models"), "--quiet"]) == 0
    assert "depth_anything_v2/depth_anything_v2_vits.pth" in capsys.readouterr().out
    assert main(depth_args) == 0
    assert "resolution 64 is used as 70" in capsys.readouterr().err
    assert Image.open(tmp_path / "out" / "photo_depth.png").size == (60, 40)


def test_cli_help_lists_every_estimator_with_its_licence(capsys):
    with pytest.raises(SystemExit):
        main(["depth", "--help"])
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # argparse wraps after hyphens
    for name in ("dpt_hybrid", "depth_anything_v2_vits", "depth_anything_v2_vitl", "depth_anything_vitb"):
        assert name in text
    assert "depth_anything_v2_vitb (CC-BY-NC-4.0 (non-commercial), installable)" in text
