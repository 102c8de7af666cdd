"""Run by A1111 at start-up (`launch_utils.run_extension_installer`): install what the WebUI lacks.

The depth estimator needs timm, which A1111 v1.10 does not pin (it usually comes with
open-clip-torch, and without it A1111 itself fails with "No module named 'timm'"), plus a few
packages A1111 normally has. A package is installed only when it is missing, or upgraded when it
is older than the minimum below and A1111 does not pin it. pip runs with a constraints file that
holds torch, torchvision and every package of A1111's requirements file at its installed version,
so a dependency can never replace torch or move a package A1111 pins. With everything present this
prints nothing and calls pip not at all.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import tempfile
from dataclasses import dataclass

import launch
from packaging.version import InvalidVersion, Version


@dataclass(frozen=True)
class Requirement:
    """A distribution depth2img needs, and the oldest version its code works with."""

    name: str
    minimum: str


REQUIREMENTS = (
    Requirement("timm", "0.6.7"),  # lib_depth2img.estimators.timm_parts: classes stable from 0.6 to 1.x
    Requirement("safetensors", "0.3.0"),
    Requirement("einops", "0.4.1"),
    Requirement("open-clip-torch", "2.7.0"),
)
NEVER_TOUCHED = ("torch", "torchvision")
_PIN = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def webui_pins(requirements_file: str) -> dict[str, str]:
    """`name==version` lines of A1111's requirements file, by canonical name."""
    try:
        with open(requirements_file, encoding="utf8") as file:
            lines = file.readlines()
    except OSError:
        return {}
    return {canonical(m.group(1)): m.group(2) for m in map(_PIN.match, lines) if m}


def plan(pins: dict[str, str]) -> tuple[list[str], list[str]]:
    """(pip requirement specs to install, warnings): what is missing, or too old and not pinned."""
    to_install, warnings = [], []
    for requirement in REQUIREMENTS:
        present = launch.is_installed(requirement.name)
        version = installed_version(requirement.name) if present else None
        if present and (version is None or not _older(version, requirement.minimum)):
            continue
        if present and canonical(requirement.name) in pins:
            warnings.append(
                f"depth2img: {requirement.name} {version} is older than {requirement.minimum}, but the WebUI pins "
                f"{pins[canonical(requirement.name)]}; leaving it as it is."
            )
            continue
        to_install.append(f"{requirement.name}>={requirement.minimum}")
    return to_install, warnings


def constraints(pins: dict[str, str]) -> list[str]:
    """Lines of the pip constraints file: torch, torchvision and every package A1111 pins, held at
    the installed version (a pin that is not installed: at the pin)."""
    held = {name: installed_version(name) for name in NEVER_TOUCHED}
    held.update({name: installed_version(name) or pin for name, pin in pins.items()})
    return [f"{name}=={version}" for name, version in held.items() if version]


def requirements_file() -> str:
    """A1111's requirements file, found as `launch_utils.prepare_environment` finds it."""
    name = os.environ.get("REQS_FILE", "requirements_versions.txt")
    if os.path.isfile(name):
        return name
    from modules.paths_internal import script_path

    return os.path.join(script_path, name)


def main() -> None:
    pins = webui_pins(requirements_file())
    to_install, warnings = plan(pins)
    for warning in warnings:
        print(warning)
    if not to_install:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="depth2img-constraints-", delete=False) as file:
        file.write("\n".join(constraints(pins)) + "\n")
    try:
        specs = " ".join(f'"{spec}"' for spec in to_install)
        launch.run_pip(f'install {specs} -c "{file.name}"', f"depth2img requirements: {', '.join(to_install)}")
    finally:
        os.unlink(file.name)


def _older(version: str, minimum: str) -> bool:
    try:
        return Version(version) < Version(minimum)
    except InvalidVersion:
        return False


if __name__ == "__main__":
    main()
