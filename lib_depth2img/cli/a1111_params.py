"""An A1111 PNG's generation parameters as the engine's request values, and what it cannot honour.

`generate --params-from IMAGE.png` reads the `parameters` text A1111 v1.10 writes (its PNG Info),
maps every entry the engine honours to a `GenerationRequest` field, and names every other entry
that would change A1111's picture (a LoRA, a hires pass, another model, a refiner, ...) so that
nothing is silently dropped. Entries that do not change the picture (Version, ...) are accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.pipeline import GenerationRequest
from ..errors import SettingsError
from ..infotext import Infotext, read_infotext
from ..settings import INFOTEXT_PREFIX, Depth2imgArgs

FIELDS: dict[str, str] = {spec.infotext: name for name, spec in GenerationRequest.specs() if spec.infotext}
"""A1111 infotext key -> `GenerationRequest` field, from the request's own declarations."""

NO_EFFECT = frozenset({"Version", "User", "Init image hash", "Model", "Size-1", "Size-2", "Pad conds"})
"""Entries that do not change the picture ("Pad conds": only prompts over 75 tokens get padded)."""

DEFAULT_VALUES = {"Clip skip": "1", "Eta": "1", "Eta DDIM": "0", "VAE Encoder": "Full", "VAE Decoder": "Full",
                  "Mask mode": "Inpaint masked", "Masked content": "original", "Inpaint area": "Whole picture",
                  "Emphasis": "Original"}
"""Entries whose value here is A1111's default, which the engine does."""

_A1111_PROMPT_SYNTAX = re.compile(r"(?<!\\)[()\[\]]|<[^<>:]+:[^<>]*>|\bBREAK\b|\bAND\b")
"""Emphasis (word:1.2), [prompt editing], <lora:...>/<hypernet:...> and BREAK/AND, which A1111
interprets and the engine would read as plain text."""


@dataclass(frozen=True)
class A1111Parameters:
    """Request values read from an A1111 infotext; `not_honoured` lists the entries the engine
    cannot reproduce, as "key: value" (or a sentence for prompt syntax and another model)."""

    values: dict[str, Any]
    depth: Depth2imgArgs | None
    not_honoured: list[str] = field(default_factory=list)


def read_parameters(text: str, checkpoint_hash: str | None = None) -> A1111Parameters:
    """Read `text` (A1111's format); `checkpoint_hash` is the short hash of the checkpoint the
    engine will use, compared with the image's "Model hash"."""
    info = Infotext.parse(text)
    values: dict[str, Any] = {"prompt": info.prompt, "negative_prompt": info.negative_prompt}
    not_honoured = []
    for name, prompt in (("prompt", info.prompt), ("negative prompt", info.negative_prompt)):
        syntax = sorted(set(_A1111_PROMPT_SYNTAX.findall(prompt)))
        if syntax:
            not_honoured.append(f"the {name} uses A1111 prompt syntax {' '.join(syntax)} (emphasis, "
                                "prompt editing, LoRA/hypernetwork tags or BREAK), which the engine reads as text")
    depth_entries = {key: value for key, value in info.params.items() if key.startswith(INFOTEXT_PREFIX)}
    depth = Depth2imgArgs.from_infotext(depth_entries) if depth_entries else None
    for key, value in info.params.items():
        if key == "RNG" and value == "NV":
            not_honoured.append("RNG: NV (NVidia's generator; the engine draws with torch: CPU or GPU)")
        elif key in FIELDS:
            values[FIELDS[key]] = _request_value(FIELDS[key], key, value)
        elif key == "Size":
            values["width"], values["height"] = _size(value)
        elif key == "Model hash":
            if checkpoint_hash is not None and value != checkpoint_hash:
                model = info.params.get("Model", "?")
                not_honoured.append(f"another model: the image was made with {model} [{value}], --ckpt is "
                                    f"[{checkpoint_hash}]")
        elif key in depth_entries or key in NO_EFFECT or DEFAULT_VALUES.get(key) == value:
            continue
        else:
            not_honoured.append(f"{key}: {value}")
    return A1111Parameters(values, depth, not_honoured)


def parameters_of_png(path: Path, checkpoint_hash: str | None = None) -> A1111Parameters:
    text = read_infotext(path)
    if not text:
        raise SettingsError(f"{path} holds no A1111 parameters (no 'parameters' text in the PNG).")
    return read_parameters(text, checkpoint_hash)


def _request_value(name: str, key: str, value: str) -> Any:
    """The entry as the request field's type, within its bounds; the message names the entry."""
    try:
        return GenerationRequest.coerce(name, value)
    except SettingsError as error:
        raise SettingsError(f"The image's '{key}: {value}' cannot be used: {error}") from None


def _size(value: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)x(\d+)\s*", value)
    if match is None:
        raise SettingsError(f"The image's 'Size: {value}' is not WIDTHxHEIGHT.")
    return int(match.group(1)), int(match.group(2))
