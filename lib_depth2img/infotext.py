"""A1111's generation-parameters text ("infotext"): writing, reading, and the PNG chunk that holds it.

The format, as A1111 v1.10.1 writes it (`processing.create_infotext`) and reads it back
(`infotext_utils.parse_generation_parameters`):

    <prompt, any number of lines>
    Negative prompt: <negative prompt, any number of lines>     (only when not empty)
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, ...

The last line holds `key: value` pairs joined by ", "; a value containing a comma, a colon or a
newline is written as a JSON string (`quote`). The reader takes the last line as parameters only
when at least three pairs match there, else it belongs to the prompt. A PNG carries the text in
its `parameters` text chunk, which A1111's "PNG Info" tab and its "Send to" buttons read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, PngImagePlugin

PNG_KEY = "parameters"
NEGATIVE_PREFIX = "Negative prompt:"
MODEL_HASH_LENGTH = 10  # A1111 shows the first 10 hex digits of the file's sha256 ("shorthash")

# A1111's `re_param_code`: a key of word characters, spaces, '-' and '/', then a quoted or plain value.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_MIN_PARAMS_ON_LAST_LINE = 3


def quote(value: object) -> str:
    """A value as A1111 writes it: as is, or as a JSON string when it holds ',', ':' or a newline."""
    text = str(value)
    if "," not in text and ":" not in text and "\n" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    """The inverse of `quote`; text that is not a valid JSON string is returned as it is."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def format_value(value: object) -> str:
    """Numbers as A1111 shows them: 7 not 7.0, 0.75 as 0.75, booleans as True/False."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass
class Infotext:
    """The three parts of an infotext. `params` keeps insertion order; values are strings."""

    prompt: str = ""
    negative_prompt: str = ""
    params: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        line = ", ".join(f"{key}: {quote(value)}" for key, value in self.params.items())
        negative = f"\n{NEGATIVE_PREFIX} {self.negative_prompt}" if self.negative_prompt else ""
        return f"{self.prompt}{negative}\n{line}".strip()

    @classmethod
    def parse(cls, text: str) -> Infotext:
        """Read an infotext by A1111's rules (`parse_generation_parameters`, without its UI defaults)."""
        *lines, last = text.strip().split("\n")
        if len(_PARAM.findall(last)) < _MIN_PARAMS_ON_LAST_LINE:
            lines.append(last)
            last = ""
        prompt = negative = ""
        in_negative = False
        for line in lines:
            line = line.strip()
            if line.startswith(NEGATIVE_PREFIX):
                in_negative = True
                line = line[len(NEGATIVE_PREFIX):].strip()
            if in_negative:
                negative += ("\n" if negative else "") + line
            else:
                prompt += ("\n" if prompt else "") + line
        params = {key: unquote(value) for key, value in _PARAM.findall(last)}
        return cls(prompt, negative, params)


def build_infotext(prompt: str, negative_prompt: str, params: Mapping[str, object]) -> str:
    """The text for one image; parameters whose value is None are left out, as A1111 does."""
    values = {key: format_value(value) for key, value in params.items() if value is not None}
    return str(Infotext(prompt, negative_prompt, values))


def png_info(infotext: str) -> PngImagePlugin.PngInfo:
    """A PNG text chunk `parameters` holding `infotext` (iTXt when it is not Latin-1, like A1111)."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_KEY, infotext)
    return info


def read_infotext(image: Image.Image | str | os.PathLike) -> str | None:
    """The `parameters` text of a PNG (path or opened image), or None when it has none."""
    if isinstance(image, Image.Image):
        return image.info.get(PNG_KEY)
    with Image.open(image) as opened:
        return opened.info.get(PNG_KEY)


_hash_cache: dict[tuple[str, int, int], str] = {}


def model_hash(path: str | os.PathLike) -> str:
    """The checkpoint's short hash as A1111 shows it: the first 10 hex digits of its sha256.

    Cached by (path, size, mtime) for this process: hashing a 5 GB file takes seconds.
    """
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _hash_cache:
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
        _hash_cache[key] = digest.hexdigest()[:MODEL_HASH_LENGTH]
    return _hash_cache[key]
