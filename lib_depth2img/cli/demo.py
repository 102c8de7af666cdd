"""`make-demo-checkpoint`: write a tiny checkpoint with random weights, to try the flow without the download.

    python -m lib_depth2img make-demo-checkpoint demo.safetensors
    python -m lib_depth2img generate --ckpt demo.safetensors --init photo.jpg -o out

The file has the 512-depth-ema layout at a tiny size (UNet, VAE, text tower and MiDaS), so it
loads through the same strict code as the real model, and `generate` and the web app run end to
end in seconds. Its weights are random: the depth maps and images it gives are noise.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..engine import write_demo_checkpoint
from ..errors import Depth2imgError

SUFFIXES = (".safetensors", ".ckpt")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "make-demo-checkpoint",
        help="write a tiny random-weight depth checkpoint to try the flow (its images are noise)",
        description=(
            "Write a tiny checkpoint in the 512-depth-ema layout with RANDOM weights. It exists to try "
            "and test the whole flow (generate, the web app) without the 5 GB download; the depth maps "
            "and images it produces are noise."
        ),
    )
    parser.add_argument("output", type=Path, metavar="OUT", help="file to write: .safetensors or .ckpt")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random weights (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    output: Path = args.output
    if output.suffix.lower() not in SUFFIXES:
        raise Depth2imgError(f"{output.name}: the demo checkpoint must end in .safetensors or .ckpt.")
    if output.is_dir():
        raise Depth2imgError(f"{output} is a folder; give a file name such as {output / 'demo.safetensors'}.")
    try:
        path = write_demo_checkpoint(output, seed=args.seed)
    except OSError as error:
        raise Depth2imgError(f"cannot write {output}: {error.strerror or error}.") from None
    size_mb = path.stat().st_size / 1e6
    print(f"wrote {path} ({size_mb:.1f} MB): a DEMO depth checkpoint with RANDOM weights (seed {args.seed}).")
    print("It loads and runs like 512-depth-ema, to try the flow; its depth maps and images are noise.")
    print(f"Try: python -m lib_depth2img generate --ckpt {path} --init IMAGE --prompt '...' -o OUT")
    return 0
