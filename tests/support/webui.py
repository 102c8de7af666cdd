"""Finding and starting the real A1111 v1.10.1 that tier-5 tests run against.

`SD_WEBUI_DIR` names the A1111 checkout (the folder holding `launch.py`), or a folder that holds
it as `webui/`. Its Python is `SD_WEBUI_PYTHON`, else a `venv` inside the checkout or beside it.
"""

from __future__ import annotations

import os
from pathlib import Path

LAUNCH_FLAGS = (
    "--skip-prepare-environment", "--skip-torch-cuda-test", "--skip-version-check",
    "--skip-python-version-check", "--use-cpu", "all", "--no-half", "--precision", "full",
    "--server-name", "127.0.0.1", "--no-download-sd-model", "--api",
)
"""Flags for a CPU-only, offline A1111 bound to this machine (see shared/WEBUI_ON_CPU.md)."""

OFFLINE_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def webui_checkout() -> Path | None:
    root = os.environ.get("SD_WEBUI_DIR")
    if not root:
        return None
    for candidate in (Path(root), Path(root) / "webui"):
        if (candidate / "launch.py").is_file():
            return candidate.resolve()
    return None


def webui_python(webui: Path) -> Path | None:
    candidates = [os.environ.get("SD_WEBUI_PYTHON"), webui / "venv/bin/python", webui.parent / "venv/bin/python"]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def launch_command(webui: Path, port: int, checkpoint: str) -> list[str]:
    """`python launch.py` with the flags above, listening on `port`, starting on `checkpoint`."""
    python = webui_python(webui)
    if python is None:
        raise FileNotFoundError(f"no Python for {webui}: set SD_WEBUI_PYTHON or create {webui}/venv")
    return [str(python), "launch.py", *LAUNCH_FLAGS, "--port", str(port),
            "--ckpt", str(Path("models/Stable-diffusion") / checkpoint)]
