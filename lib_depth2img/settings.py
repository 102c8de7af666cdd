"""The one settings object of depth2img.

Every setting is declared once, here, with its default, its bounds, its UI label and the key it
gets in the PNG info (`specs.setting`; `specs.Settings` coerces and checks the values). The A1111
panel, the `alwayson_scripts` API, the infotext paste, the XYZ-plot axes, the standalone app and
the CLI all read this table instead of repeating it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import SettingsError
from .specs import Settings, format_number, setting

INFOTEXT_PREFIX = "Depth2img"
EMBEDDED_ESTIMATOR = "embedded"


@dataclass(frozen=True)
class DepthAdjustments:
    """Edits applied to a normalised depth map (0 = far, 1 = near), in this order."""

    invert: bool = False
    far_clip: float = 0.0
    near_clip: float = 1.0
    gamma: float = 1.0
    blur: float = 0.0

    def __post_init__(self) -> None:
        _check_clip_order(self.far_clip, self.near_clip)


@dataclass(frozen=True)
class Depth2imgArgs(Settings):
    """The settings of one depth2img job, in the order of the script's positional args."""

    enabled: bool = setting(False, "Enable", f"{INFOTEXT_PREFIX}")
    checkpoint: str = setting(
        "", "Depth checkpoint", f"{INFOTEXT_PREFIX} checkpoint",
        hint="Empty: the first depth checkpoint found (512-depth-ema).",
    )
    estimator: str = setting(
        EMBEDDED_ESTIMATOR, "Depth estimator", f"{INFOTEXT_PREFIX} estimator",
        hint="'embedded' is the MiDaS inside the depth checkpoint, the one it was trained with. Licences of the "
        "others' weights: MiDaS (dpt_*) MIT; Depth Anything V1 (depth_anything_vit*) Apache-2.0; Depth Anything "
        "V2 Small (depth_anything_v2_vits) Apache-2.0, Base and Large (_vitb, _vitl) CC-BY-NC-4.0, "
        "non-commercial.",
    )
    net_size: int = setting(
        0, "Estimator resolution", f"{INFOTEXT_PREFIX} resolution", minimum=0, maximum=1024, step=32,
        hint="0: the estimator's own (384, 512 for BEiT-L-512, 518 for Depth Anything). Larger sees finer "
        "detail, slower; up to 1024 (768 for BEiT-L-512). Depth Anything works at multiples of 14 and "
        "rounds other values (512 -> 518).",
    )
    depth_image: Any = setting(
        None, "Your own depth map",
        hint="White = near. 8- or 16-bit; replaces the estimated depth. It describes the whole init image "
        "and is cropped and resized with it.",
    )
    depth_folder: str = setting(
        "", "Depth maps folder (batch tab)",
        hint="For the batch tab: a depth map per input image, matched by file name.",
    )
    invert: bool = setting(False, "Invert", f"{INFOTEXT_PREFIX} invert",
                           hint="For depth maps where white is far (Blender Z passes).")
    far_clip: float = setting(
        0.0, "Far clip", f"{INFOTEXT_PREFIX} far clip", minimum=0.0, maximum=1.0, step=0.01,
        hint="Everything farther than this becomes the background plane.",
    )
    near_clip: float = setting(
        1.0, "Near clip", f"{INFOTEXT_PREFIX} near clip", minimum=0.0, maximum=1.0, step=0.01,
        hint="Everything nearer than this becomes the front plane.",
    )
    gamma: float = setting(
        1.0, "Gamma", f"{INFOTEXT_PREFIX} gamma", minimum=0.1, maximum=10.0, step=0.05,
        hint="Below 1 spreads the far range, above 1 the near range.",
    )
    blur: float = setting(
        0.0, "Blur radius", f"{INFOTEXT_PREFIX} blur", minimum=0.0, maximum=64.0, step=0.5,
        hint="Gaussian blur in pixels of the generated image (the depth map the preview shows); softens "
        "hard depth edges.",
    )
    append_depth: bool = setting(False, "Add depth map to results")
    save_depth: bool = setting(False, "Save depth map beside results")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_clip_order(self.far_clip, self.near_clip)

    # -- reading ---------------------------------------------------------------------------

    @classmethod
    def from_values(cls, values: Sequence[Any] | Mapping[str, Any] | None) -> Depth2imgArgs:
        """Build from the script's positional args, or a dict of named fields (the API).

        The API may also send a single dict as the only positional arg. Missing values take
        their defaults; unknown names and out-of-range values raise `SettingsError`.
        """
        if values is None:
            return cls()
        if isinstance(values, Mapping):
            return cls._from_mapping(values)
        values = list(values)
        if len(values) == 1 and isinstance(values[0], Mapping):
            return cls._from_mapping(values[0])
        names = [f.name for f in dataclasses.fields(cls)]
        if len(values) > len(names):
            raise SettingsError(
                f"Depth2img takes at most {len(names)} args ({', '.join(names)}), got {len(values)}."
            )
        return cls._from_mapping(dict(zip(names, values)))

    @classmethod
    def _from_mapping(cls, values: Mapping[str, Any]) -> Depth2imgArgs:
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise SettingsError(
                f"Depth2img: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}."
            )
        return cls(**values)

    @classmethod
    def from_infotext(cls, params: Mapping[str, str]) -> Depth2imgArgs | None:
        """Settings from PNG-info key/values, or None when the image was not made with depth2img."""
        if params.get(INFOTEXT_PREFIX) is None:
            return None
        values = {name: params[spec.infotext] for name, spec in cls.specs() if spec.infotext in params}
        return cls._from_mapping(values)

    # -- writing ---------------------------------------------------------------------------

    def to_infotext(self) -> dict[str, str]:
        """PNG-info entries for an enabled job: every setting that has an infotext key."""
        if not self.enabled:
            return {}
        entries = {}
        for name, spec in self.specs():
            value = getattr(self, name)
            if spec.infotext is not None and value != "":
                entries[spec.infotext] = format_number(value) if isinstance(value, float) else str(value)
        return entries

    def values(self) -> list[Any]:
        """The script's positional args, in field order."""
        return [getattr(self, f.name) for f in dataclasses.fields(self)]

    @property
    def adjustments(self) -> DepthAdjustments:
        return DepthAdjustments(self.invert, self.far_clip, self.near_clip, self.gamma, self.blur)


def _check_clip_order(far_clip: float, near_clip: float) -> None:
    """The clip range keeps depths between far and near, so far must lie below near."""
    if far_clip >= near_clip:
        raise SettingsError(f"Depth2img: far clip ({far_clip:g}) must be below near clip ({near_clip:g}).")

