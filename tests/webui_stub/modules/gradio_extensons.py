"""Stand-in for `modules.gradio_extensons` (A1111's spelling): every gradio component takes a
`tooltip=` keyword, kept as `webui_tooltip` and written into the component's config, from which
A1111's javascript/hints.js makes it the element's title once the page is loaded.

A1111 patches gradio for good when the module is imported; here `patch(monkeypatch)` does it for
one test, so the tests of plain gradio (the standalone app) keep plain gradio. On gradio 3.41
(A1111) the keyword is popped in `IOComponent.__init__`, which every component's **kwargs reach;
gradio 4 and 5 components take no **kwargs, so each class's own `__init__` is wrapped, as Forge's
`modules/gradio_extensions.py` (`repair`) does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gradio as gr

if TYPE_CHECKING:
    import pytest

GRADIO_MAJOR = int(gr.__version__.split(".")[0])


def patch(monkeypatch: pytest.MonkeyPatch) -> None:
    if GRADIO_MAJOR < 4:
        io_component = gr.components.IOComponent
        monkeypatch.setattr(io_component, "__init__", _popping_tooltip(io_component.__init__))
    else:
        for name in gr.components.__all__:
            component = getattr(gr.components, name)
            if isinstance(component, type) and "__init__" in vars(component):
                monkeypatch.setattr(component, "__init__", _popping_tooltip(vars(component)["__init__"]))
    original_get_config = gr.blocks.Block.get_config

    def get_config(self: Any) -> dict[str, Any]:
        config = original_get_config(self)
        if getattr(self, "webui_tooltip", None):
            config["webui_tooltip"] = self.webui_tooltip
        return config

    monkeypatch.setattr(gr.blocks.Block, "get_config", get_config)


def _popping_tooltip(init: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(init)  # gradio 4 and 5 read a component's config keys from its __init__ signature
    def with_tooltip(self: Any, *args: Any, tooltip: str | None = None, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.webui_tooltip = tooltip  # after the class's own init: a subclass's keyword wins

    return with_tooltip
