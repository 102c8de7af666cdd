"""`install-model`, `install-estimator` and `write-yaml`: get the depth checkpoint, estimator weights
and the checkpoint's A1111 config.

    python -m lib_depth2img install-model [--format safetensors|ckpt] [--dest DIR] [--url URL]
    python -m lib_depth2img install-estimator NAME [--dest MODELS_DIR] [--url URL]
    python -m lib_depth2img write-yaml CHECKPOINT [--overwrite] [--force]

`install-model` downloads 512-depth-ema (resumable, size and SHA-256 checked) with a progress bar
and writes `512-depth-ema.yaml` beside it. `write-yaml` writes that YAML beside a depth checkpoint
you already have, which A1111 and its forks then use as the checkpoint's config.
`install-estimator` downloads the official weights of a depth estimator (Depth Anything) the same
way, into the folder of a models folder where the WebUI panel and the other commands find them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..checkpoints import discovery as checkpoints
from ..checkpoints import download as model_download
from ..estimators import files as estimator_files

MODEL_DEST_HELP = (
    f"folder to put it in (default: ${model_download.MODELS_DIR_ENV_VAR}, else the WebUI's "
    "models/Stable-diffusion when installed as an extension, else models/Stable-diffusion here)"
)
MODEL_URL_HELP = (
    "folder URL to download from, the file name is appended "
    f"(default: ${model_download.URL_ENV_VAR}, else Hugging Face, honouring $HF_ENDPOINT)"
)
ESTIMATOR_DEST_HELP = (
    "the models folder (default: the WebUI's models folder when installed as an extension, else models/ here)"
)
ESTIMATOR_URL_HELP = (
    f"folder URL holding the file (default: ${model_download.URL_ENV_VAR}, else the official address, "
    "honouring $HF_ENDPOINT)"
)


def register(subparsers: Any) -> None:
    install = subparsers.add_parser(
        "install-model",
        help="download the SD2 depth checkpoint (512-depth-ema) and write its YAML",
        description=(
            "Download 512-depth-ema from Hugging Face (stabilityai/stable-diffusion-2-depth) into a "
            "folder, resuming an interrupted download, checking its size and SHA-256, and write "
            "512-depth-ema.yaml beside it."
        ),
    )
    install.add_argument(
        "--format",
        choices=model_download.FORMATS,
        default=model_download.DEFAULT_FORMAT,
        help="file format (default: %(default)s; safetensors cannot run code when loaded)",
    )
    _add_download_flags(install, "DIR", MODEL_DEST_HELP, MODEL_URL_HELP)
    install.add_argument("--no-yaml", action="store_true", help="do not write the YAML beside the checkpoint")
    install.set_defaults(func=run, install_action="install-model")

    estimator = subparsers.add_parser(
        "install-estimator",
        help="download a depth estimator's official weights (Depth Anything)",
        description=(
            "Download the official weights of a depth estimator into <models folder>/<its folder> "
            "(depth_anything_v2/ or depth_anything/), resuming an interrupted download and checking its "
            "SHA-256. Licences: "
            + ", ".join(estimator_files.estimator_hint(name) for name in estimator_files.OFFICIAL_DOWNLOADS)
            + "."
        ),
    )
    estimator.add_argument(
        "estimator", metavar="NAME", choices=sorted(estimator_files.OFFICIAL_DOWNLOADS),
        help=f"one of: {', '.join(sorted(estimator_files.OFFICIAL_DOWNLOADS))}",
    )
    _add_download_flags(estimator, "MODELS_DIR", ESTIMATOR_DEST_HELP, ESTIMATOR_URL_HELP)
    estimator.set_defaults(func=run, install_action="install-estimator")

    yaml_cmd = subparsers.add_parser(
        "write-yaml",
        help="write the depth-model YAML beside an existing depth checkpoint",
        description=(
            "Write <checkpoint name>.yaml (Stability's v2-midas-inference.yaml) beside a depth "
            "checkpoint, so that A1111 and its forks load it as the depth model."
        ),
    )
    yaml_cmd.add_argument(
        "checkpoint", metavar="CHECKPOINT", type=Path, help="a .ckpt or .safetensors depth checkpoint"
    )
    yaml_cmd.add_argument("--overwrite", action="store_true", help="replace an existing YAML")
    yaml_cmd.add_argument(
        "--force",
        action="store_true",
        help="write it even when the file cannot be recognised as a depth checkpoint",
    )
    yaml_cmd.set_defaults(func=run, install_action="write-yaml")


def _add_download_flags(
    parser: argparse.ArgumentParser, dest_metavar: str, dest_help: str, url_help: str
) -> None:
    """--dest, --url, --timeout and --quiet: what both downloads take."""
    parser.add_argument("--dest", metavar=dest_metavar, type=Path, default=None, help=dest_help)
    parser.add_argument("--url", metavar="URL", default=None, help=url_help)
    parser.add_argument("--timeout", metavar="SECONDS", type=float, default=model_download.DEFAULT_TIMEOUT,
                        help="network timeout per connection and read (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")

def run(args: argparse.Namespace) -> int:
    if args.install_action == "write-yaml":
        return _write_yaml(args)
    if args.install_action == "install-estimator":
        return _install_estimator(args)
    return _install_model(args)


def _write_yaml(args: argparse.Namespace) -> int:
    target = checkpoints.depth_yaml_path(args.checkpoint)
    written = checkpoints.write_depth_yaml(args.checkpoint, overwrite=args.overwrite, check=not args.force)
    if written is None:
        print(f"{target} already exists; left unchanged (pass --overwrite to replace it)")
    else:
        print(f"wrote {written}")
    return 0


class _ProgressBar:
    """A tqdm bar created on the first report, so that a resumed download starts where it was."""

    def __init__(self, description: str, enabled: bool):
        self.description = description
        self.enabled = enabled
        self.bar: Any = None

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=done,
                desc=self.description,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=sys.stderr,
                dynamic_ncols=True,
            )
        elif done < self.bar.n:  # the server ignored the resume request: restarted from 0
            self.bar.reset(total=total)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _install_model(args: argparse.Namespace) -> int:
    source = model_download.MODEL_SOURCES[args.format]
    dest_dir = args.dest if args.dest is not None else model_download.default_models_dir()
    url = model_download.resolve_url(source, args.url)
    print(f"{source.name}: {url} -> {dest_dir}", file=sys.stderr)
    bar = _ProgressBar(source.name, enabled=not args.quiet)
    try:
        path = model_download.download_depth_model(
            dest_dir,
            fmt=args.format,
            base_url=args.url,
            progress=bar,
            timeout=args.timeout,
            write_yaml=not args.no_yaml,
        )
    except KeyboardInterrupt:
        bar.close()
        part = Path(dest_dir) / f"{source.name}.part"
        if part.exists():
            print(
                f"the partial download is kept in {part}; run the same command again to resume",
                file=sys.stderr,
            )
        raise
    finally:
        bar.close()
    print(f"checkpoint: {path}")
    if not args.no_yaml:
        print(f"config:     {checkpoints.depth_yaml_path(path)}")
    return 0


def _install_estimator(args: argparse.Namespace) -> int:
    source = estimator_files.OFFICIAL_DOWNLOADS[args.estimator]
    models_root = args.dest if args.dest is not None else model_download.default_models_root()
    print(f"{source.name}: {model_download.resolve_url(source, args.url)} -> {models_root}", file=sys.stderr)
    bar = _ProgressBar(source.name, enabled=not args.quiet)
    try:
        path = estimator_files.install_estimator(
            args.estimator, models_root, base_url=args.url, progress=bar, timeout=args.timeout
        )
    finally:
        bar.close()
    print(f"weights: {path}")
    return 0
