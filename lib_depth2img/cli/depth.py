"""`depth`: estimate the depth maps of images and save them as PNGs.

    python -m lib_depth2img depth IMAGE_OR_FOLDER... -o OUT_DIR [--estimator NAME] [--weights PATH]
        [--net-size N] [--invert] [--far-clip F] [--near-clip F]
        [--gamma G] [--blur R] [--16bit]

Writes `<stem>_depth.png` per image (white = near), through the same depth source, adjustments and
settings table as the WebUI panel. Without `--weights`, the estimator's file is looked for where
`install-estimator` puts it (the models folder). A bad image is reported on one line and the others still
complete (exit code 1); bad weights or settings stop everything at once (exit code 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..checkpoints.download import default_models_root
from ..depthmaps.source import depth_for_images
from ..depthmaps.values import depth_to_16bit, depth_to_preview
from ..errors import Depth2imgError, WeightsError
from ..estimators import ESTIMATORS, DepthEstimator
from ..estimators.files import estimator_hint, find_weights, missing_weights_message
from ..estimators.registry import resolution_note
from ..images import IMAGE_EXTENSIONS, load_image, make_output_folder, save_atomically
from ..settings import Depth2imgArgs
from .common import add_setting_flag

DEPTH_SETTINGS = ("net_size", "invert", "far_clip", "near_clip", "gamma", "blur")
"""The settings this command exposes, as flags named after them (`--far-clip` ...)."""

OUTPUT_SUFFIX = "_depth.png"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "depth",
        help="estimate depth maps of images and save them as PNGs",
        description=(
            "Estimate the depth map of each image (white = near) with a MiDaS or Depth Anything model and write it "
            f"as <name>{OUTPUT_SUFFIX} into the output folder."
        ),
    )
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        type=Path,
        help="image files, or folders whose images are all processed",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        metavar="PATH",
        help="the estimator's weights: an SD depth checkpoint (512-depth-ema .ckpt/.safetensors) or MiDaS "
        "file for the dpt_* estimators, the official .pth (or a .safetensors conversion) for depth_anything_*; "
        f"default: its file under {default_models_root()}",
    )
    parser.add_argument(
        "--estimator",
        default="dpt_hybrid",
        choices=sorted(ESTIMATORS),
        metavar="NAME",
        help="the depth model (default: %(default)s); licence of the weights: "
        + ", ".join(estimator_hint(name) for name in ESTIMATORS),
    )
    for name in DEPTH_SETTINGS:
        add_setting_flag(parser, name)
    parser.add_argument(
        "-o",
        "--output-dir",
        required=True,
        type=Path,
        metavar="OUT_DIR",
        help="folder for the depth maps (created if missing)",
    )
    parser.add_argument(
        "--16bit",
        dest="sixteen_bit",
        action="store_true",
        help="write 16-bit PNGs (65536 depth levels instead of 256)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = Depth2imgArgs.from_values({name: getattr(args, name) for name in DEPTH_SETTINGS})
    inputs = image_paths(args.images)
    estimator = DepthEstimator.from_file(weights_path(args.weights, args.estimator), args.estimator)
    note = resolution_note(args.estimator, settings.net_size)
    if note:
        print(note, file=sys.stderr)
    out_dir: Path = args.output_dir
    make_output_folder(out_dir)
    written, failures = 0, []
    claimed: dict[Path, Path] = {}
    for path in tqdm(inputs, desc="depth maps", unit="image", file=sys.stderr, disable=None):
        try:
            output = _output_path(path, out_dir, claimed)
            image = load_image(path).convert("RGB")
            depth = depth_for_images([image], settings, lambda: estimator)[0].depth
            save_atomically(depth_to_16bit(depth) if args.sixteen_bit else depth_to_preview(depth), output)
            written += 1
        except Depth2imgError as error:
            failures.append(path)
            tqdm.write(f"error: {error}", file=sys.stderr)
    summary = f"wrote {written} depth map{'s' if written != 1 else ''} to {out_dir}"
    print(summary + (f"; {len(failures)} of {len(inputs)} failed" if failures else ""), file=sys.stderr)
    return 1 if failures else 0


def weights_path(given: Path | None, estimator: str) -> Path:
    """`--weights`, or the estimator's file found in the models folder."""
    if given is not None:
        return given
    found = find_weights(estimator, [default_models_root()])
    if found is None:
        raise WeightsError(missing_weights_message(estimator, [default_models_root()]) + " Or give --weights PATH.")
    return found


def image_paths(arguments: list[Path]) -> list[Path]:
    """The files named, and the images inside the folders named (sorted, not recursive).

    A missing path stays in the list, so it is reported as a failed input like any bad image; a
    folder without images is an error at once (probably the wrong folder).
    """
    paths = []
    for argument in arguments:
        if not argument.is_dir():
            paths.append(argument)
            continue
        found = sorted(p for p in argument.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise Depth2imgError(
                f"{argument} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); check the folder."
            )
        paths.extend(found)
    return paths


def _output_path(image_path: Path, out_dir: Path, claimed: dict[Path, Path]) -> Path:
    """`<stem>_depth.png` in out_dir; refused when an earlier input of this run already wrote it."""
    output = out_dir / f"{image_path.stem}{OUTPUT_SUFFIX}"
    earlier = claimed.setdefault(output, image_path)
    if earlier != image_path:
        raise Depth2imgError(
            f"{image_path}: its depth map {output.name} would overwrite the one of {earlier}; "
            "rename one of them or run them separately."
        )
    return output
