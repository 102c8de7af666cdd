"""Other versions of a package, for tests that run this project against the versions A1111 pins.

`install_pinned(requirement, cache_root)` installs one requirement with pip (no dependencies: torch
and the rest come from this environment) into a folder of the pytest cache, once, and returns it
for a subprocess's PYTHONPATH. Without a package index it skips the test with the reason.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


def cache_folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    return Path(cache.mkdir(name)) if cache is not None else tmp_path_factory.mktemp(name)


def install_pinned(requirement: str, root: Path) -> Path:
    """`root/site` holding only `requirement`; installed complete or not at all."""
    site = root / "site"
    if site.is_dir() and any(site.iterdir()):
        return site
    staging = Path(tempfile.mkdtemp(dir=root))
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check",
               "--quiet", "--target", str(staging), requirement]
    try:
        result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as error:
        shutil.rmtree(staging, ignore_errors=True)
        pytest.skip(f"could not run pip to install {requirement}: {error}")
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"pip could not install {requirement} (offline?): {last_line}")
    shutil.rmtree(site, ignore_errors=True)
    staging.rename(site)
    return site
