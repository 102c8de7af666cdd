"""Imports go one way: hosts -> core, never back.

The core (everything in lib_depth2img outside the host packages) must run without A1111, gradio or
the standalone engine, so that the WebUI adapter, the engine and the CLI can each build on it.
Read from the source with `ast`, so a lazy import inside a function counts as much as a top one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "lib_depth2img"
HOSTS = ("webui", "ui", "cli", "engine")
HOST_MODULES = ("external_code", "__main__")  # the API for other extensions; `python -m lib_depth2img`
FOREIGN = ("modules", "gradio")  # A1111's own package and the UI toolkit


def _module_name(path: Path, root: Path = PACKAGE_ROOT) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, root: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved to absolute dotted names."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from . import webui`
    return found


def _layer(module: str) -> str | None:
    """'core', 'engine', another host's name, or None for modules outside lib_depth2img."""
    parts = module.split(".")
    if parts[0] != "lib_depth2img":
        return None
    if len(parts) == 1:
        return "core"
    if parts[1] in HOSTS:
        return parts[1]
    if parts[1] in HOST_MODULES:
        return "host"
    return "core"


def _is_under(module: str, roots: tuple[str, ...]) -> bool:
    return any(module == root or module.startswith(root + ".") for root in roots)


SOURCES = sorted(PACKAGE_ROOT.rglob("*.py"))


BANNED = {
    "core": (*FOREIGN, *(f"lib_depth2img.{host}" for host in (*HOSTS, *HOST_MODULES))),
    "engine": ("modules", "gradio", "lib_depth2img.webui", "lib_depth2img.ui", "lib_depth2img.cli"),
    "ui": ("modules", "lib_depth2img.webui", "lib_depth2img.cli"),
    "webui": ("lib_depth2img.cli", "lib_depth2img.engine"),
    "cli": ("modules", "lib_depth2img.webui"),
}
"""What each layer must not import; hosts stack as cli -> ui -> engine -> core and webui -> ui -> core."""


def _forbidden(path: Path, root: Path = PACKAGE_ROOT) -> list[str]:
    banned = BANNED.get(_layer(_module_name(path, root)) or "", ())
    return sorted(module for module in _imported_modules(path, root) if _is_under(module, banned))


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(PACKAGE_ROOT)))
def test_module_imports_only_downwards(path: Path) -> None:
    assert _forbidden(path) == [], f"{_module_name(path)} imports a host or a host's toolkit"


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """The rule is not vacuous: a core module importing gradio, the WebUI or a host is caught."""
    fake_root = tmp_path / "lib_depth2img"
    (fake_root / "depthmaps").mkdir(parents=True)
    bad = fake_root / "depthmaps" / "bad.py"
    bad.write_text(
        "import gradio\nfrom modules import shared\nfrom ..webui import api\n\n"
        "def f():\n    from ..engine import model\n"
    )
    engine_module = fake_root / "engine" / "bad.py"
    engine_module.parent.mkdir()
    engine_module.write_text("from ..ui import panel\nfrom ..depthmaps import source\n")
    assert _forbidden(bad, fake_root) == [
        "gradio",
        "lib_depth2img.engine",
        "lib_depth2img.engine.model",
        "lib_depth2img.webui",
        "lib_depth2img.webui.api",
        "modules",
        "modules.shared",
    ]
    assert _forbidden(engine_module, fake_root) == ["lib_depth2img.ui", "lib_depth2img.ui.panel"]
    panel = fake_root / "ui" / "bad.py"
    panel.parent.mkdir()
    panel.write_text("from ..cli.generate import REQUEST_DEFAULTS\nfrom ..engine import pipeline\n")
    assert _forbidden(panel, fake_root) == [
        "lib_depth2img.cli.generate",
        "lib_depth2img.cli.generate.REQUEST_DEFAULTS",
    ]


CORE_FLOW = ("errors", "compat", "specs", "settings", "images", "checkpoints", "estimators", "depthmaps", "infotext")
"""The core's packages in the order of the flow: each may import only those before it (and itself)."""


def _upstream_violations(path: Path, root: Path = PACKAGE_ROOT) -> list[str]:
    """Core modules `path` imports that come later in `CORE_FLOW` than its own package."""
    name = _module_name(path, root)
    if name == "lib_depth2img":  # the package's own __init__: its version only
        return []
    own = CORE_FLOW.index(name.split(".")[1])  # a new core package must take its place in the flow
    later = tuple(f"lib_depth2img.{package}" for package in CORE_FLOW[own + 1:])
    return sorted(module for module in _imported_modules(path, root) if _is_under(module, later))


CORE_SOURCES = [path for path in SOURCES if _layer(_module_name(path)) == "core"]


@pytest.mark.parametrize("path", CORE_SOURCES, ids=lambda path: str(path.relative_to(PACKAGE_ROOT)))
def test_core_follows_the_flow(path: Path) -> None:
    assert _upstream_violations(path) == [], f"{_module_name(path)} imports a later stage of the flow"


def test_the_flow_check_sees_a_violation(tmp_path: Path) -> None:
    """images decoding must not reach forward into depthmaps (it once did, for one function)."""
    fake_root = tmp_path / "lib_depth2img"
    fake_root.mkdir()
    bad = fake_root / "images.py"
    bad.write_text("from .depthmaps.values import normalize_depth\nfrom .errors import ImageError\n")
    assert _upstream_violations(bad, fake_root) == [
        "lib_depth2img.depthmaps.values", "lib_depth2img.depthmaps.values.normalize_depth",
    ]


def test_every_source_is_checked() -> None:
    assert {path.parent.name for path in SOURCES} >= {"estimators", "depthmaps", "checkpoints", *HOSTS}
