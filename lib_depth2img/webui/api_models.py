"""The request and response bodies of the depth2img routes, as pydantic models for A1111's `/docs`.

`Depth2imgArgsModel` and the geometry fields of `DepthRequest` are generated from the settings
classes (`Depth2imgArgs`, `GeometryRequest`: names, types, bounds, choices, defaults, labels and
hints), and validate each field with the same rule (`Settings.coerce`), so the schema that API
users read and the checks their requests meet cannot drift apart. The same `Depth2imgArgs` object
goes into `alwayson_scripts: {"Depth2img": {"args": [<Depth2imgArgs>]}}` of `/sdapi/v1/img2img`.
Works with pydantic 1 (A1111, Forge before 2024) and pydantic 2 (newer hosts).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Literal, Optional

import pydantic
from pydantic import BaseModel, Field, create_model

from ..checkpoints.download import DEFAULT_FORMAT, FORMATS
from ..depthmaps.geometry import GeometryRequest
from ..errors import SettingsError
from ..settings import Depth2imgArgs
from ..specs import Settings

PYDANTIC_2 = pydantic.VERSION.startswith("2.")
BASE64_NOTE = " Base64 (a data:image/...;base64, prefix allowed); never a file name."

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


def settings_model(
    source: type[Settings],
    name: str,
    *,
    base: type[BaseModel] = StrictModel,
    exclude: Collection[str] = (),
    base64_images: Collection[str] = (),
) -> type[BaseModel]:
    """A pydantic model (on `base`) of `source`'s declared fields but `exclude`, each checked by
    `source`'s own rule, whose message becomes pydantic's. `base64_images`: image fields, which
    the API takes as base64 text (decoded by the route, never read as a file name)."""
    defaults = source.defaults()
    fields = {}
    for field_name, spec in source.specs():
        if field_name in exclude:
            continue
        description = f"{spec.label}. {spec.hint}".strip()
        if spec.choices:
            description += f" One of {spec.choices_text}."
        if field_name in base64_images:
            description += BASE64_NOTE
            annotation: Any = Optional[str]
        else:
            annotation = _annotation(source.value_type(field_name), spec.choices, defaults[field_name])
        fields[field_name] = (annotation, Field(
            defaults[field_name], title=spec.label, description=description, ge=spec.minimum, le=spec.maximum,
        ))

    def check(field_name: str, value: Any) -> Any:
        if field_name in base64_images:
            if value is not None and not isinstance(value, str):
                kind = type(value).__name__
                raise ValueError(f"Depth2img: '{field_name}' must be a base64-encoded image, got {kind}.")
            return value
        try:
            return source.coerce(field_name, value)
        except SettingsError as error:
            raise ValueError(str(error)) from None

    if PYDANTIC_2:
        validate = field_validator(*fields, mode="before")(lambda cls, value, info: check(info.field_name, value))
    else:  # pydantic 1 passes the field by the parameter's name, `field`
        validate = validator(*fields, pre=True, allow_reuse=True)(
            lambda cls, value, field: check(field.name, value)
        )
    return create_model(name, __base__=base, __validators__={"check_setting": validate}, **fields)


def _annotation(kind: type | None, choices: tuple[tuple[Any, str], ...], default: Any) -> Any:
    """The field's type for pydantic and its schema: choices as a Literal; optional when the default is None."""
    annotation: Any = Literal[tuple(value for value, _ in choices)] if choices else (kind or Any)
    return Optional[annotation] if default is None else annotation


Depth2imgArgsModel = settings_model(Depth2imgArgs, "Depth2imgArgs", base64_images=("depth_image",))
"""Every `Depth2imgArgs` field by name; in `alwayson_scripts` also as positional values in this order."""


def set_fields(model: BaseModel) -> dict[str, Any]:
    """The fields the request gave, by name (defaults left out)."""
    return model.model_dump(exclude_unset=True) if PYDANTIC_2 else model.dict(exclude_unset=True)


class _DepthBody(StrictModel):
    image: Optional[str] = Field(None, description="Init image, base64; may be left out with args.depth_image.")
    args: Depth2imgArgsModel = Field(  # type: ignore[valid-type]
        default_factory=Depth2imgArgsModel, description="The Depth2img settings (the same as in alwayson_scripts)."
    )
    bit_depth: Literal[8, 16] = Field(8, description="8: a gray PNG to look at; 16: every level kept.")


DepthRequest = settings_model(
    GeometryRequest, "DepthRequest", base=_DepthBody, exclude=("scale_by",), base64_images=("mask",)
)
"""The depth route's body: the image, the settings, and the img2img job's geometry under A1111's names."""


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
