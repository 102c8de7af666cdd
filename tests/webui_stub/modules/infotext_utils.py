"""Stand-in for `modules.infotext_utils`: quoting, parsing, and the value conversion of a paste."""

from __future__ import annotations

import json
import re

from modules import script_callbacks

re_param = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def quote(text):
    if "," not in str(text) and "\n" not in str(text) and ":" not in str(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text):
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:  # noqa: BLE001  (as A1111: report and go on)
        return text


def parse_generation_parameters(x: str, skip_fields: list[str] | None = None):
    """Prompt lines, then one line of `key: value` pairs; callbacks see the raw text and the dict."""
    res = {}
    *lines, lastline = x.strip().split("\n")
    if len(re_param.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""
    res["Prompt"] = "\n".join(lines).strip()
    for k, v in re_param.findall(lastline):
        res[k] = unquote(v)
    for key in skip_fields or []:
        res.pop(key, None)
    return res


def paste_values(paste_fields, infotext):
    """What pasting `infotext` sets each component to, as A1111's `connect_paste` does (None: unchanged)."""
    params = parse_generation_parameters(infotext)
    script_callbacks.infotext_pasted_callback(infotext, params)
    values = []
    for output, key in paste_fields:
        v = key(params) if callable(key) else params.get(key, None)
        if v is None:
            values.append(None)
            continue
        try:
            valtype = type(output.value)
            if valtype == bool and v == "False":
                values.append(False)
            elif valtype == int:
                values.append(float(v))
            else:
                values.append(valtype(v))
        except Exception:  # noqa: BLE001  (as A1111: report and go on)
            values.append(None)
    return values
