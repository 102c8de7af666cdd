"""`python -m lib_depth2img`: one entry point, one module per subcommand.

A subcommand module exposes `register(subparsers)`, which adds its parser and sets `func` to its
`run(args) -> int`. User errors (`Depth2imgError`) end as one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import Depth2imgError

SUBCOMMAND_MODULES = ("depth", "generate", "serve", "demo", "install")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lib_depth2img",
        description="Stable Diffusion 2 depth-to-image: depth maps, generation and a small web app.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Depth2imgError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
