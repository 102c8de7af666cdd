"""Tier 5: the depth2img routes in a real A1111 v1.10.1 started with `--api-auth`: its credentials
guard them as they guard A1111's own routes, `/docs` shows them, and the bad-input sweep
(tests/support/bad_requests.py) gets the same answers as from the stub. Needs SD_WEBUI_DIR, as
tests/tier5/test_real_webui.py does; one server start (about a minute on a CPU)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.bad_requests import DEPTH, IMG2IMG, PHOTO, alwayson, cases, check_answer
from support.webui import DEPTH_CHECKPOINT, Server, extension_installed, running_server, webui_checkout

WEBUI = webui_checkout()
pytestmark = [
    pytest.mark.webui,
    pytest.mark.skipif(WEBUI is None, reason="tier 5 needs a real A1111 v1.10.1 checkout: set SD_WEBUI_DIR"),
]

CREDENTIALS = ("depth2img", "tier5-secret")
MODELS = "/depth2img/v1/models"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    log_path = tmp_path_factory.mktemp("logs") / "webui-api-auth.log"
    with extension_installed(WEBUI), running_server(WEBUI, log_path, credentials=CREDENTIALS) as server:
        yield server


def files_under(*folders: Path) -> dict[str, int]:
    return {str(path): path.stat().st_size for folder in folders if folder.is_dir()
            for path in folder.rglob("*") if path.is_file()}


def test_api_auth_guards_the_routes(server):
    for method, path, content in (("GET", MODELS, None), ("POST", DEPTH, b"{}"), ("GET", "/depth2img/v1/args", None)):
        status, text = server.send(method, path, content, authenticated=False)
        assert status == 401, (path, text)
        status, text = server.send(method, path, content, credentials=("depth2img", "wrong"))
        assert status == 401 and "Incorrect username or password" in text, (path, text)
    status, text = server.send("GET", MODELS)
    assert status == 200 and json.loads(text)["checkpoints"][0].startswith(DEPTH_CHECKPOINT)


def test_docs_list_the_routes_and_the_settings_schema(server):
    status, text = server.send("GET", "/openapi.json")
    assert status == 200
    schema = json.loads(text)
    assert {"/depth2img/v1/depth", "/depth2img/v1/args", "/depth2img/v1/models", "/depth2img/v1/install",
            "/depth2img/v1/install-estimator"} <= set(schema["paths"])
    gamma = schema["components"]["schemas"]["Depth2imgArgs"]["properties"]["gamma"]
    assert (gamma["type"], gamma["minimum"], gamma["maximum"], gamma["default"]) == ("number", 0.1, 10, 1)
    assert server.send("GET", "/docs")[0] == 200


def test_the_bad_input_sweep_against_the_real_server(server, record_property):
    sweep = cases()
    record_property("bad_requests", len(sweep))
    before = files_under(server.webui / "models", server.webui / "outputs")
    failures = []
    for case in sweep:
        status, text = server.send("POST", case.path, case.content())
        try:
            check_answer(case, status, text)
        except AssertionError as failure:
            failures.append(str(failure))
    assert not failures, "\n".join(failures)
    assert files_under(server.webui / "models", server.webui / "outputs") == before

    status, answer = server.post(DEPTH, {"image": PHOTO, "args": {"checkpoint": DEPTH_CHECKPOINT}})
    assert status == 200, answer
    job = {**alwayson([{"enabled": True, "checkpoint": DEPTH_CHECKPOINT, "append_depth": True}]),
           "sampler_name": "Euler", "cfg_scale": 5, "denoising_strength": 0.8}
    status, answer = server.post(IMG2IMG, job)
    assert status == 200, answer
    assert len(answer["images"]) == 2
