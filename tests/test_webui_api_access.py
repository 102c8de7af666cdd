"""Who reaches the depth2img routes in A1111: only where its API is on (--api, --nowebui), behind its
--api-auth, and no model downloads where A1111 refuses extension installs (--listen, ...)."""

from __future__ import annotations

from pathlib import Path

import pytest
import webui_stub  # noqa: F401  (first: A1111's `modules` for the adapter)
from test_ui_panel import handler
from webui_stub import harness

from lib_depth2img.checkpoints import download as model_download
from lib_depth2img.webui import depth_service

webui, started = harness.webui, harness.started  # pytest fixtures

MODELS = "/depth2img/v1/models"
REFUSED = "downloading models is off on this server"


@pytest.fixture
def downloads(monkeypatch) -> list[str]:
    """Model downloads asked for; nothing is fetched."""
    asked: list[str] = []

    def download_depth_model(folder, fmt="safetensors", progress=None) -> Path:
        asked.append(fmt)
        return Path(folder) / f"512-depth-ema.{fmt}"

    monkeypatch.setattr(model_download, "download_depth_model", download_depth_model)
    monkeypatch.setattr(depth_service, "download_estimator",
                        lambda name, folder, progress=None: asked.append(name) or Path(folder) / name)
    return asked


def test_without_api_there_are_no_routes_and_the_panel_still_works(started):
    client = started.serve()
    assert client.get(MODELS).status_code == 404
    assert not any(path.startswith("/depth2img") for path in client.app.openapi()["paths"])
    assert started.script().controls  # the panel talks to the server through gradio events, not the routes


@pytest.mark.parametrize("flags", [{"api": True}, {"nowebui": True}])
def test_with_api_or_nowebui_the_routes_are_there_and_in_the_docs(started, flags):
    client = started.serve(**flags)
    answer = client.get(MODELS)
    assert answer.status_code == 200 and answer.json()["checkpoints"][0].startswith("512-depth-ema.safetensors")
    assert "/depth2img/v1/depth" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


def test_api_auth_guards_the_routes_as_it_guards_a1111s_own(started):
    client = started.serve(api=True, api_auth="alice:wonder,bob:builder")
    for path, body in ((MODELS, None), ("/depth2img/v1/depth", {}), ("/sdapi/v1/txt2img", {})):
        method = client.get if body is None else lambda url, body=body: client.post(url, json=body)
        assert method(path).status_code == 401, path
    assert client.get(MODELS, auth=("alice", "wrong")).status_code == 401
    assert client.get(MODELS, auth=("alice", "wonder")).status_code == 200
    assert client.get(MODELS, auth=("bob", "builder")).status_code == 200
    answer = client.post("/depth2img/v1/install", json={"format": "zip"}, auth=("mallory", "guess"))
    assert answer.status_code == 401 and answer.json()["detail"] == "Incorrect username or password"


@pytest.mark.parametrize("flag", [{"listen": True}, {"share": True}, {"ngrok": "token"}, {"server_name": "0.0.0.0"}])
def test_installs_are_refused_where_a1111_refuses_extension_installs(started, downloads, flag):
    client = started.serve(api=True, **flag)
    answer = client.post("/depth2img/v1/install")
    assert answer.status_code == 403 and REFUSED in answer.json()["detail"]
    assert "--enable-insecure-extension-access" in answer.json()["detail"]
    assert "512-depth-ema.safetensors into" in answer.json()["detail"]  # what to put where by hand
    answer = client.post("/depth2img/v1/install-estimator", json={"estimator": "depth_anything_v2_vits"})
    assert answer.status_code == 403 and REFUSED in answer.json()["detail"]
    assert downloads == []


def test_installs_work_with_enable_insecure_extension_access(started, downloads):
    client = started.serve(api=True, listen=True, enable_insecure_extension_access=True)
    assert client.post("/depth2img/v1/install", json={"format": "ckpt"}).status_code == 200
    assert client.post("/depth2img/v1/install-estimator", json={"estimator": "depth_anything_v2_vits"}).status_code == 200
    assert downloads == ["ckpt", "depth_anything_v2_vits"]


def test_the_panels_install_buttons_follow_the_same_rule(started, downloads):
    started.serve(listen=True)  # the UI without --api
    blocks = started.demo.blocks.values()
    for elem_id in ("depth2img_img2img_install", "depth2img_img2img_install_estimator"):
        button = next(block for block in blocks if getattr(block, "elem_id", None) == elem_id)
        install = handler(started.demo, button)
        outputs = install(progress=lambda *args, **kwargs: None) if elem_id.endswith("install") else install(
            "depth_anything_v2_vits", progress=lambda *args, **kwargs: None)
        assert REFUSED in outputs[-1], elem_id
    assert downloads == []
