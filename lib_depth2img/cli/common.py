"""Flags that several subcommands share, declared once."""

from __future__ import annotations

import argparse

import torch

from ..settings import Depth2imgArgs
from ..errors import SettingsError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def add_setting_flag(parser: argparse.ArgumentParser, name: str, *, unset_is_none: bool = False) -> None:
    """A flag whose default, bounds and help come from the settings table in `args.py`.

    `unset_is_none`: the flag is None unless given (a bool gets --name/--no-name), so that a
    value given on the command line can be told from the default and override another source."""
    spec = Depth2imgArgs.spec(name)
    default = Depth2imgArgs.defaults()[name]
    flag = "--" + name.replace("_", "-")
    if isinstance(default, bool):
        action = argparse.BooleanOptionalAction if unset_is_none else "store_true"
        parser.add_argument(flag, action=action, default=None if unset_is_none else False, help=spec.hint)
        return
    bounds = f"{spec.minimum:g}..{spec.maximum:g}, " if spec.minimum is not None else ""
    parser.add_argument(
        flag,
        type=type(default),
        default=None if unset_is_none else default,
        metavar=name.split("_")[-1].upper(),
        help=f"{spec.hint} ({bounds}default: {default:g})",
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
