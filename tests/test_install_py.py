"""install.py decides with A1111's `launch` helpers what to pip-install: only the missing, never torch,
never past A1111's pins, and nothing at all (silently) when everything is there."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

INSTALL_PY = Path(__file__).resolve().parents[1] / "install.py"
A1111_PINS = (
    "setuptools==69.5.1  # temp fix\neinops==0.4.1\nopen-clip-torch==2.20.0\nsafetensors==0.4.2\ntorch\n"
)


class Environment:
    """Installed distributions as the stand-in `launch` and importlib.metadata see them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, installed: dict[str, str]) -> None:
        self.installed = installed
        self.pip_commands: list[str] = []
        self.constraints: list[str] = []
        launch = types.ModuleType("launch")
        launch.is_installed = lambda package: package in self.installed
        launch.run_pip = self.run_pip
        monkeypatch.setitem(sys.modules, "launch", launch)
        requirements = tmp_path / "requirements_versions.txt"
        requirements.write_text(A1111_PINS)
        monkeypatch.setenv("REQS_FILE", str(requirements))
        spec = importlib.util.spec_from_file_location("depth2img_install", INSTALL_PY)
        self.module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, self.module)
        spec.loader.exec_module(self.module)
        monkeypatch.setattr(self.module, "installed_version", self.installed.get)

    def run_pip(self, command: str, desc: str | None = None) -> str:
        self.pip_commands.append(command)
        constraints_file = command.split('-c "')[1].rstrip('"')
        self.constraints = Path(constraints_file).read_text().split()
        return ""


EVERYTHING = {
    "timm": "1.0.31",
    "safetensors": "0.4.2",
    "einops": "0.4.1",
    "open-clip-torch": "2.20.0",
    "torch": "2.1.2+cu121",
    "torchvision": "0.16.2+cu121",
}


def environment(monkeypatch, tmp_path, **changes: str | None) -> Environment:
    installed = {k: v for k, v in {**EVERYTHING, **changes}.items() if v is not None}
    return Environment(monkeypatch, tmp_path, installed)


def test_nothing_to_do_is_silent_and_never_calls_pip(monkeypatch, tmp_path, capsys):
    env = environment(monkeypatch, tmp_path)
    env.module.main()
    assert env.pip_commands == [] and capsys.readouterr().out == ""


def test_missing_timm_is_installed_with_torch_and_the_webui_pins_held(monkeypatch, tmp_path):
    env = environment(monkeypatch, tmp_path, timm=None)
    env.module.main()
    (command,) = env.pip_commands
    assert command.startswith('install "timm>=0.6.7" -c ')
    assert "torch" not in command.split(" -c ")[0]  # never a bare torch
    assert {"torch==2.1.2+cu121", "torchvision==0.16.2+cu121", "einops==0.4.1", "safetensors==0.4.2"} <= set(
        env.constraints
    )
    assert not Path(command.split('-c "')[1].rstrip('"')).exists()  # the constraints file is cleaned up


def test_too_old_unpinned_package_is_upgraded(monkeypatch, tmp_path):
    env = environment(monkeypatch, tmp_path, timm="0.4.12")
    env.module.main()
    assert env.pip_commands[0].startswith('install "timm>=0.6.7"')


def test_too_old_package_that_the_webui_pins_is_left_alone_with_a_warning(monkeypatch, tmp_path, capsys):
    env = environment(monkeypatch, tmp_path, einops="0.3.0")
    env.module.main()
    assert env.pip_commands == []
    assert "einops 0.3.0 is older than 0.4.1, but the WebUI pins 0.4.1" in capsys.readouterr().out


def test_several_missing_packages_go_in_one_pip_call(monkeypatch, tmp_path):
    env = environment(monkeypatch, tmp_path, timm=None, einops=None)
    env.module.main()
    (command,) = env.pip_commands
    assert '"timm>=0.6.7" "einops>=0.4.1"' in command


def test_pins_are_read_like_a1111_reads_its_requirements_file(monkeypatch, tmp_path):
    env = environment(monkeypatch, tmp_path)
    pins = env.module.webui_pins(str(tmp_path / "requirements_versions.txt"))
    assert pins == {
        "setuptools": "69.5.1",
        "einops": "0.4.1",
        "open-clip-torch": "2.20.0",
        "safetensors": "0.4.2",
    }
