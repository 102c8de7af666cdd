"""The bad-input sweep (tests/support/bad_requests.py) against the stub WebUI's API: each bad request
gets its 4xx and message, nothing is written, and the next valid requests work."""

from __future__ import annotations

from pathlib import Path

import webui_stub  # noqa: F401  (first: A1111's `modules` for the adapter)
from support.bad_requests import DEPTH, IMG2IMG, PHOTO, alwayson, cases, check_answer
from webui_stub import harness

webui, started = harness.webui, harness.started  # pytest fixtures

TIER5_FLAGS = {"api": True, "server_name": "127.0.0.1"}
"""As tests/support/webui.py launches the real A1111: its API on, reachable by name (so no installs)."""


def files_under(root: Path) -> dict[str, int]:
    return {str(path.relative_to(root)): path.stat().st_size for path in root.rglob("*") if path.is_file()}


def test_every_bad_request_gets_a_4xx_that_says_what_to_fix_and_writes_nothing(started, record_property):
    client = started.serve(**TIER5_FLAGS)
    sweep = cases()
    record_property("bad_requests", len(sweep))
    assert len(sweep) >= 40
    before = files_under(started.root)
    failures = []
    for case in sweep:
        answer = client.post(case.path, content=case.content(), headers={"Content-Type": "application/json"})
        try:
            check_answer(case, answer.status_code, answer.text)
        except AssertionError as failure:
            failures.append(str(failure))
    assert not failures, "\n".join(failures)
    assert files_under(started.root) == before

    valid_depth = client.post(DEPTH, json={"image": PHOTO, "args": {"net_size": 64}})
    assert valid_depth.status_code == 200, valid_depth.text
    valid_job = client.post(IMG2IMG, json=alwayson([{"enabled": True, "append_depth": True}]))
    assert valid_job.status_code == 200, valid_job.text
    assert len(valid_job.json()["images"]) == 2
