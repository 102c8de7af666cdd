"""The request and response bodies of the depth2img routes, as pydantic models for A1111's `/docs`.

`Depth2imgArgsModel` is generated from `Depth2imgArgs` (names, types, bounds, defaults, labels
and hints), and validates each field with the same rule (`Depth2imgArgs.coerce`), so the schema
that API users read and the checks their requests meet cannot drift apart. The same object goes
into `alwayson_scripts: {"Depth2img": {"args": [<Depth2imgArgs>]}}` of `/sdapi/v1/img2img`.
Works with pydantic 1 (A1111, Forge before 2024) and pydantic 2 (newer hosts).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Optional

import pydantic
from pydantic import BaseModel, Field, create_model

from ..settings import Depth2imgArgs
from ..errors import SettingsError
from ..checkpoints.download import DEFAULT_FORMAT, FORMATS

PYDANTIC_2 = pydantic.VERSION.startswith("2.")
MAX_SIDE = 8192

if PYDANTIC_2:
    from pydantic import ConfigDict, field_validator

    class StrictModel(BaseModel):
        """A body whose unknown fields are refused, not silently dropped."""

        model_config = ConfigDict(extra="forbid")

else:
    from pydantic import validator

    class StrictModel(BaseModel):  # type: ignore[no-redef]
        """A body whose unknown fields are refused, not silently dropped."""

        class Config:
            extra = "forbid"


def _check_field(name: str, value: Any) -> Any:
    """Each field through `Depth2imgArgs`' own rule; its message becomes pydantic's."""
    if name == "depth_image" and value is not None and not isinstance(value, str):
        raise ValueError(f"Depth2img: 'depth_image' must be a base64-encoded image, got {type(value).__name__}.")
    try:
        return Depth2imgArgs.coerce(name, value)
    except SettingsError as error:
        raise ValueError(str(error)) from None


def _args_model() -> type[BaseModel]:
    fields = {}
    for field in dataclasses.fields(Depth2imgArgs):
        spec = Depth2imgArgs.spec(field.name)
        description = f"{spec.label}. {spec.hint}".strip()
        if field.name == "depth_image":
            description += " Base64 (a data:image/...;base64, prefix allowed); never a file name."
            annotation: Any = Optional[str]
        else:
            annotation = type(field.default)
        fields[field.name] = (annotation, Field(
            field.default, title=spec.label, description=description, ge=spec.minimum, le=spec.maximum,
        ))
    if PYDANTIC_2:
        check = field_validator("*", mode="before")(lambda cls, value, info: _check_field(info.field_name, value))
    else:
        check = validator("*", pre=True, allow_reuse=True)(lambda cls, value, field: _check_field(field.name, value))
    return create_model(
        "Depth2imgArgs", __base__=StrictModel, __validators__={"check_field": check}, **fields
    )


Depth2imgArgsModel = _args_model()
"""Every `Depth2imgArgs` field by name; in `alwayson_scripts` also as positional values in this order."""


def set_fields(model: BaseModel) -> dict[str, Any]:
    """The fields the request gave, by name (defaults left out)."""
    return model.model_dump(exclude_unset=True) if PYDANTIC_2 else model.dict(exclude_unset=True)


class DepthRequest(StrictModel):
    image: Optional[str] = Field(None, description="Init image, base64; may be left out with args.depth_image.")
    args: Depth2imgArgsModel = Field(  # type: ignore[valid-type]
        default_factory=Depth2imgArgsModel, description="The Depth2img settings (the same as in alwayson_scripts)."
    )
    bit_depth: Literal[8, 16] = Field(8, description="8: a gray PNG to look at; 16: every level kept.")
    width: Optional[int] = Field(None, ge=8, le=MAX_SIDE, description="The img2img job's width; with height.")
    height: Optional[int] = Field(None, ge=8, le=MAX_SIDE, description="The img2img job's height; with width.")
    resize_mode: int = Field(0, ge=0, le=3, description="A1111's resize mode: 0 just resize, 1 crop and "
                             "resize, 2 resize and fill, 3 just resize (latent upscale).")
    mask: Optional[str] = Field(None, description="Inpaint mask, base64 (white = repaint).")
    inpaint_full_res: bool = Field(False, description="Inpaint area: Only masked (needs mask).")
    inpaint_full_res_padding: int = Field(32, ge=0, le=MAX_SIDE, description="Only masked padding, pixels.")
    mask_blur: int = Field(4, ge=0, le=64, description="Mask blur, pixels (changes the Only masked region).")
    inpainting_mask_invert: bool = Field(False, description="Mask mode: Inpaint not masked.")


class DepthResponse(BaseModel):
    depth: str = Field(description="The adjusted depth map as a gray PNG, base64; white = near.")
    bit_depth: int
    source: str = Field(description='"estimator", "cache" or "own map".')
    width: int
    height: int


class ScriptArgsResponse(BaseModel):
    args: list[Depth2imgArgsModel] = Field(  # type: ignore[valid-type]
        description='The default settings, as `alwayson_scripts: {"Depth2img": <this>}` takes them.'
    )


class ModelsResponse(BaseModel):
    checkpoints: list[str]
    estimators: list[str]
    cache: dict[str, Any]


class InstallRequest(StrictModel):
    format: Literal[FORMATS] = Field(DEFAULT_FORMAT, description="The file format of 512-depth-ema.")  # type: ignore[valid-type]


class InstallResponse(BaseModel):
    path: str
    checkpoints: list[str]


class InstallEstimatorRequest(StrictModel):
    estimator: str = Field(description="An estimator with an official download, e.g. depth_anything_v2_vits.")


class InstallEstimatorResponse(BaseModel):
    path: str
    estimators: list[str]
