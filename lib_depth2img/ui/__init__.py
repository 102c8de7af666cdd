"""User interfaces over the depth2img core: the gradio panel (`ui.panel`) and the services it needs.

The panel is shared by the A1111 script and the standalone app, so it never imports A1111: each
host hands it a `DepthServices` object (the A1111 adapter passes its `webui.depth_service`
module, the standalone app its engine's services) and, where it has them, its image components
and layout classes. This module holds only that contract and imports no gradio, so the HTTP
routes (`webui.api`) can share it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image

from ..depthmaps.geometry import GeometryRequest
from ..depthmaps.source import DepthResult
from ..depthmaps.values import depth_to_16bit, depth_to_preview
from ..settings import Depth2imgArgs

InstallProgress = Callable[[int, "int | None"], None]
"""Called with (bytes done, total bytes or None) while the depth model or estimator weights download."""


class DepthServices(Protocol):
    """What a host provides to the panel. A module with these functions satisfies it.

    Errors the user can fix are raised as `Depth2imgError` (their message is shown as it is);
    anything else is treated as a bug.
    """

    def depth_checkpoint_titles(self) -> list[str]:
        """The depth checkpoints found, as the host names them; empty when there is none."""

    def estimator_choices(self) -> list[str]:
        """"embedded" (the depth checkpoint's own MiDaS), the other estimators whose weights are here,
        and those that can be installed."""

    def estimate_depth(
        self,
        image: Image.Image | None,
        args: Depth2imgArgs,
        geometry: GeometryRequest | None = None,
        task_id: str | None = None,
    ) -> DepthResult:
        """The adjusted depth map a job with `geometry` would use for `image` (None: the user's own
        map alone; no geometry: at the image's own size), through the cache that generation uses,
        so that a preview makes the next job's depth step free. `task_id`: the host's id for its
        progress display, if it has one."""

    def install_depth_model(self, fmt: str = "safetensors", progress: InstallProgress | None = None) -> str:
        """Download the depth checkpoint where the host looks for it; returns where it was put.
        `AccessDenied` where the host's owner turned downloads off (A1111: as extension installs)."""

    def installable_estimators(self) -> list[str]:
        """Estimators with an official download whose weights are not here yet."""

    def install_estimator(self, name: str, progress: InstallProgress | None = None) -> str:
        """Download estimator `name`'s official weights where the host looks for them; returns where;
        `AccessDenied` as for `install_depth_model`."""


class DepthApiServices(DepthServices, Protocol):
    """What the HTTP routes need beyond the panel's services."""

    def cache_stats(self) -> dict[str, Any]:
        """Counters and sizes of the depth cache, shown as they are by `GET /depth2img/v1/models`."""


def depth_png(depth: np.ndarray, bits: Literal[8, 16]) -> bytes:
    """A normalised depth map as gray PNG bytes: 8-bit to look at, 16-bit to keep every level."""
    image = depth_to_16bit(depth) if bits == 16 else depth_to_preview(depth)
    with io.BytesIO() as buffer:
        image.save(buffer, format="PNG")
        return buffer.getvalue()
