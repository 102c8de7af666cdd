"""Flags that several subcommands share, declared once."""

from __future__ import annotations

import argparse

import torch

from ..errors import SettingsError
from ..settings import Depth2imgArgs
from ..specs import Settings, format_number

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def add_setting_flag(
    parser: argparse.ArgumentParser,
    name: str,
    *,
    settings: type[Settings] = Depth2imgArgs,
    flag: str | None = None,
    unset_is_none: bool = False,
) -> None:
    """A flag (by default --the-name) for field `name` of `settings`, whose type, bounds, choices,
    default and help come from its declaration.

    `unset_is_none`: the flag is None unless given (a bool gets --name/--no-name), so that a
    value given on the command line can be told from the default and override another source."""
    spec = settings.spec(name)
    default = settings.defaults()[name]
    flag = flag or "--" + name.replace("_", "-")
    text = (spec.hint or spec.label).replace("%", "%%")
    if settings.value_type(name) is bool:
        action = argparse.BooleanOptionalAction if unset_is_none else "store_true"
        default = None if unset_is_none else False
        parser.add_argument(flag, dest=name, action=action, default=default, help=text)
        return
    allowed = []
    if spec.minimum is not None and spec.maximum is not None:
        allowed.append(f"{format_number(spec.minimum)}..{format_number(spec.maximum)}")
    if default not in (None, ""):
        allowed.append(f"default: {format_number(default) if isinstance(default, float) else default}")
    if spec.choices:
        allowed = [f"one of {spec.choices_text}; {', '.join(allowed)}"]
    parser.add_argument(
        flag,
        dest=name,
        type=settings.value_type(name),
        default=None if unset_is_none else default,
        metavar=name.split("_")[-1].upper(),
        help=f"{text} ({', '.join(allowed)})" if allowed else text,
    )


def add_device_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device (default: %(default)s)")
    parser.add_argument("--dtype", choices=("auto", *DTYPES), default="auto",
                        help="weights dtype; auto: float16 on CUDA, float32 elsewhere")


def device_and_dtype(args: argparse.Namespace) -> tuple[torch.device, torch.dtype]:
    """The `--device` and `--dtype` flags checked against what this torch can do."""
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise SettingsError(f"--device {args.device!r} is not a torch device; use cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError("--device cuda: this torch sees no CUDA GPU; use --device cpu.")
    dtype = DTYPES.get(args.dtype) or (torch.float16 if device.type == "cuda" else torch.float32)
    return device, dtype
