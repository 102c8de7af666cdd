"""The panel, the A1111 adapter and the app on the gradio of each WebUI host: 3.41 (A1111 v1.10)
and 4.40 (Forge), besides this environment's gradio 5 (the standalone app).

Each host's web stack (gradio with the fastapi, pydantic and httpx it runs with there) is
installed once into its own virtual environment under the user's cache folder; everything else
(torch, timm, pytest, this project's pins) comes from this environment through a `.pth` line, so
the stack is the only difference. The panel, adapter and app tests then run in a subprocess there.
Without a package index the test is skipped with pip's reason.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import site
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST_STACKS = {
    "a1111-gradio-3.41.2": (
        "gradio==3.41.2", "gradio_client==0.5.0", "fastapi==0.94.0", "starlette==0.26.1", "pydantic==1.10.27",
        "httpx==0.24.1", "httpcore==0.15.0", "huggingface-hub==0.36.2", "websockets==11.0.3", "anyio==3.7.1",
    ),
    "forge-gradio-4.40.0": (
        "gradio==4.40.0", "gradio_client==1.2.0", "fastapi==0.104.1", "starlette==0.27.0", "pydantic==2.8.2",
        "httpx==0.24.1", "httpcore==0.15.0", "huggingface-hub==0.26.2", "websockets==12.0", "anyio==3.7.1",
    ),
}
"""Each host's web stack as its requirements file pins it (A1111 v1.10.1, Forge dfdcbab6)."""
SHARED_PINS = ("numpy", "pillow")
"""Held at this environment's versions, so the stack's dependencies cannot move them."""
TESTS = ("tests/test_external_code.py", *(str(path) for pattern in ("test_ui_*.py", "test_webui_*.py")
                                          for path in sorted((REPO_ROOT / "tests").glob(pattern))))
"""Everything that builds the panel or the app, or goes through the adapter and its routes."""
INSTALL_TIMEOUT = 900
RUN_TIMEOUT = 900


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sd-webui-depth2img"


def host_environment(name: str) -> Path:
    """The Python of a virtual environment holding the host's stack; built once, complete or not at all."""
    root = cache_root() / name
    python = root / "bin" / "python"
    if (root / "ready").is_file():
        return python
    cache_root().mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=cache_root()))
    constraints = staging / "constraints.txt"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(staging)], check=True, capture_output=True, timeout=300)
        constraints.write_text("".join(f"{pin}=={importlib.metadata.version(pin)}\n" for pin in SHARED_PINS))
        result = subprocess.run(
            [str(staging / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "-c", str(constraints), *HOST_STACKS[name]],
            capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False,
        )
    except (OSError, subprocess.SubprocessError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        pytest.skip(f"could not build the {name} environment: {error}")
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"pip could not install the {name} stack (offline?): {last_line}")
    (site_packages,) = staging.glob("lib/python*/site-packages")
    (site_packages / "zz-depth2img-parent.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)
    (root / "ready").touch()
    return python


@pytest.mark.parametrize("stack", list(HOST_STACKS))
def test_panel_adapter_and_app_tests_pass_on_the_hosts_gradio(stack):
    python = host_environment(stack)
    wanted = HOST_STACKS[stack][0].split("==")[1]
    version = subprocess.run([str(python), "-c", "import gradio; print(gradio.__version__)"],
                             capture_output=True, text=True, check=True, cwd=REPO_ROOT).stdout.strip()
    assert version == wanted
    child = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False,
    )
    assert child.returncode == 0, child.stdout[-6000:]
