"""What the tests read from gradio's wiring, the same way on gradio 3.41 (A1111), 4.40 (Forge) and 5.x.

gradio 3 keeps a Blocks' events as two parallel lists (`dependencies` dicts with the targets'
ids and browser code, `fns`); gradio 4 and 5 keep one `fns` dict of `BlockFunction`s holding
everything, targets as `(id, event)`. Uploads reach `preprocess` as a data URL in gradio 3 and as a `FileData`
(a file already on the server) in gradio 4 and 5.
"""

from __future__ import annotations

import base64
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

GRADIO_MAJOR = int(gr.__version__.split(".")[0])


@dataclass(frozen=True)
class WiredEvent:
    """One event listener: its key for `Blocks.process_api`, its function and browser code."""

    key: int
    fn: Any
    inputs: list[Any]
    outputs: list[Any]
    js: str | None
    tracks_progress: bool


def wired_events(blocks: gr.Blocks) -> list[tuple[list[int], WiredEvent]]:
    """(ids of the triggering components, the listener) for every listener of `blocks`."""
    found = []
    if GRADIO_MAJOR < 4:
        for key, (dependency, function) in enumerate(zip(blocks.dependencies, blocks.fns)):
            if dependency.get("trigger_after") is not None:
                continue  # a `.then()`: gradio 3 lists it under the first event's targets too
            event = WiredEvent(key, function.fn, list(function.inputs), list(function.outputs), dependency["js"],
                               function.tracks_progress)
            found.append((list(dependency["targets"]), event))
        return found
    for key, function in blocks.fns.items():
        event = WiredEvent(key, function.fn, list(function.inputs), list(function.outputs), function.js,
                           function.tracks_progress)
        found.append(([target[0] for target in function.targets], event))
    return found


def event_of(blocks: gr.Blocks, trigger: Any) -> WiredEvent:
    """The one listener wired to `trigger` (a click, or a change)."""
    matches = [event for targets, event in wired_events(blocks) if trigger._id in targets]
    assert len(matches) == 1, f"{len(matches)} listeners on {trigger.elem_id}"
    return matches[0]


def page_scripts(blocks: gr.Blocks) -> list[str]:
    """The browser code of every listener (page load included)."""
    return [event.js for _, event in wired_events(blocks) if event.js]


def choice_values(component: Any) -> list[Any]:
    """A dropdown's or radio's choices as values (gradio 4+ keeps (label, value) pairs)."""
    return [choice[1] if isinstance(choice, (tuple, list)) else choice for choice in component.choices]


def choice_labels(component: Any) -> list[Any]:
    return [choice[0] if isinstance(choice, (tuple, list)) else choice for choice in component.choices]


def upload(data: bytes, suffix: str = ".png") -> Any:
    """An uploaded file as an image component's `preprocess` receives it."""
    if GRADIO_MAJOR < 4:
        return "data:image/png;base64," + base64.b64encode(data).decode()
    from gradio.data_classes import FileData

    return FileData(**sent(data, suffix))


def sent(data: bytes, suffix: str = ".png") -> Any:
    """An uploaded file as the browser sends it to an event (gradio 4+: a file in gradio's upload
    folder, which is the only place it accepts paths from)."""
    if GRADIO_MAJOR < 4:
        return "data:image/png;base64," + base64.b64encode(data).decode()
    folder = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(suffix=suffix, delete=False, dir=folder) as file:
        file.write(data)
    return {"path": file.name, "orig_name": f"upload{suffix}", "meta": {"_type": "gradio.FileData"}}


def output_file(value: Any) -> Path:
    """The server path of a file or image in an answer of `process_api`."""
    if isinstance(value, dict):
        value = value.get("image", value)
        value = value.get("path") or value.get("name")
    elif hasattr(value, "path"):
        value = value.path
    return Path(value)


def output_image(value: Any) -> Image.Image:
    """An image in an answer of `process_api`: a data URL (gradio 3) or a file on the server."""
    if isinstance(value, str) and value.startswith("data:"):
        return Image.open(io.BytesIO(base64.b64decode(value.split(",", 1)[1])))
    return Image.open(output_file(value))
