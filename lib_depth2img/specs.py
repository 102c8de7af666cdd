"""Settings declared once: each field's label, bounds and help beside its type and default.

    @dataclass(frozen=True)
    class Job(Settings):
        steps: int = setting(20, "Sampling steps", minimum=1, maximum=150)

A `Settings` dataclass coerces and checks every declared field when it is built, so a value
from the UI, the API, an infotext or the command line ("20", 20.0) becomes the field's type
inside its bounds, or raises `SettingsError` in the one message format below. Hosts read the
same declarations for their sliders, flags and API schema instead of repeating them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import operator
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import SettingsError

SCALAR_TYPES = (bool, int, float, str)
"""The field types a declaration coerces; a field of any other type takes its value as it is
(an image, checked where it is decoded)."""

_ALLOWED_KIND = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


@dataclass(frozen=True)
class Spec:
    """How one setting is shown, bounded and written to the PNG info.

    `choices`: (value, label) pairs; when given, only those values are accepted."""

    label: str
    infotext: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    hint: str = ""
    choices: tuple[tuple[Any, str], ...] = ()

    @property
    def choices_text(self) -> str:
        """The choices as a reader sees them: "CPU, GPU" or "0 (Just resize), 1 (Crop and resize)"."""
        shown = (label if label == str(value) else f"{value} ({label})" for value, label in self.choices)
        return ", ".join(shown)


def setting(
    default: Any,
    label: str,
    infotext: str | None = None,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    step: float | None = None,
    hint: str = "",
    choices: Mapping[Any, str] | Iterable[Any] = (),
) -> Any:
    """A dataclass field with its `Spec`; `default` may be `dataclasses.MISSING` (required).

    `choices`: a mapping of value to label, or the values alone (each its own label)."""
    pairs = choices.items() if isinstance(choices, Mapping) else ((value, str(value)) for value in choices)
    spec = Spec(label, infotext, minimum, maximum, step, hint, tuple(pairs))
    return dataclasses.field(default=default, metadata={"spec": spec})


def setting_from(source: type[Settings], name: str, **changes: Any) -> Any:
    """A field declared as `source`'s field `name` (its default and spec, with `changes` to the
    spec), for a setting that two requests share."""
    original = _declared_fields(source)[name]
    spec = dataclasses.replace(original.metadata["spec"], **changes)
    return dataclasses.field(default=original.default, metadata={"spec": spec})


class Settings:
    """Base of a frozen dataclass whose fields declared with `setting` are coerced and checked
    when it is built; a subclass with rules beyond the bounds calls `super().__post_init__()` first."""

    def __post_init__(self) -> None:
        for name, _ in self.specs():
            object.__setattr__(self, name, self.coerce(name, getattr(self, name)))

    @classmethod
    def specs(cls) -> Iterator[tuple[str, Spec]]:
        """(name, spec) of every declared field, in field order."""
        for name, f in _declared_fields(cls).items():
            yield name, f.metadata["spec"]

    @classmethod
    def spec(cls, name: str) -> Spec:
        return _declared_fields(cls)[name].metadata["spec"]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The default of every declared field that has one."""
        fields = _declared_fields(cls).items()
        return {name: f.default for name, f in fields if f.default is not dataclasses.MISSING}

    @classmethod
    def value_type(cls, name: str) -> type | None:
        """The scalar type field `name` is coerced to (`X | None` gives X), or None: taken as it is."""
        return _value_types(cls)[name]

    @classmethod
    def coerce(cls, name: str, value: Any) -> Any:
        """Field `name`'s value from the UI, the API, an infotext or the CLI, as its type and inside
        its bounds and choices (None: the default); `SettingsError` says what is allowed."""
        f = _declared_fields(cls)[name]
        spec: Spec = f.metadata["spec"]
        kind = cls.value_type(name)
        if value is None and f.default is not dataclasses.MISSING:
            return f.default
        if kind is None:
            return value
        try:
            coerced = _CONVERTERS[kind](value)
        except (TypeError, ValueError):
            raise _invalid(name, spec, kind, value) from None
        if not _allowed(coerced, spec):
            raise _invalid(name, spec, kind, value)
        return coerced


def _allowed_in_words(spec: Spec, kind: type) -> str:
    """What a setting accepts, in words: "a whole number between 1 and 150", "one of CPU, GPU"."""
    if spec.choices:
        return f"one of {spec.choices_text}"
    words = _ALLOWED_KIND[kind]
    if kind not in (int, float):
        return words
    if spec.minimum is not None and spec.maximum is not None:
        return f"{words} between {format_number(spec.minimum)} and {format_number(spec.maximum)}"
    if spec.minimum is not None:
        return f"{words} of at least {format_number(spec.minimum)}"
    if spec.maximum is not None:
        return f"{words} of at most {format_number(spec.maximum)}"
    return words


def format_number(value: float) -> str:
    """A bound or value as people write it: 10 not 10.0, 4294967295 not 4.29497e+09, 0.05, nan."""
    number = float(value)
    return str(int(number)) if number.is_integer() else f"{number:g}"


def _invalid(name: str, spec: Spec, kind: type, value: Any) -> SettingsError:
    """The one message of a rejected value: the field, its label, what is allowed, what came."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        shown = format_number(value)
    else:
        shown = repr(value)
    allowed = _allowed_in_words(spec, kind)
    return SettingsError(f"Depth2img: '{name}' ({spec.label}) must be {allowed}, got {shown}.")


def _allowed(value: Any, spec: Spec) -> bool:
    if spec.choices:
        return any(value == choice for choice, _ in spec.choices)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    return math.isfinite(value) and (spec.minimum is None or value >= spec.minimum) and (
        spec.maximum is None or value <= spec.maximum
    )


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Real) and value in (0, 1):
        return bool(value)
    word = value.strip().lower() if isinstance(value, str) else None
    if word in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return word in ("true", "1", "yes", "on")
    raise ValueError


def _to_int(value: Any) -> int:
    """Integers (numpy's too) as they are; whole floats and numeric text ("20", "20.0") as ints."""
    try:
        return operator.index(value)
    except TypeError:
        pass
    number = float(value)
    if not number.is_integer():
        raise ValueError
    return int(number)


def _to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError
    return value


_CONVERTERS = {bool: _to_bool, int: _to_int, float: float, str: _to_str}


@functools.cache
def _declared_fields(cls: type[Settings]) -> dict[str, dataclasses.Field]:
    """The fields declared with `setting`, by name in field order, read once per class."""
    return {f.name: f for f in dataclasses.fields(cls) if "spec" in f.metadata}


@functools.cache
def _value_types(cls: type[Settings]) -> dict[str, type | None]:
    """Each declared field's scalar type, read from its annotation once per class."""
    hints = typing.get_type_hints(cls)
    found: dict[str, type | None] = {}
    for name, _ in cls.specs():
        hint = hints[name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            options = [option for option in typing.get_args(hint) if option is not type(None)]
            hint = options[0] if len(options) == 1 else None
        found[name] = hint if hint in SCALAR_TYPES else None
    return found
