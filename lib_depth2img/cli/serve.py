"""`serve`: the standalone web app (the Depth2img panel over the engine) on this machine.

    python -m lib_depth2img serve [--ckpt PATH | --demo] [--port 7862] [--host 127.0.0.1]

The checkpoint is `--ckpt`, else the first depth checkpoint of the models folder
(`$DEPTH2IMG_MODELS_DIR`, or models/Stable-diffusion). Without one the app still starts and says
where to put one or how to install it. `--demo` writes a tiny checkpoint with random weights
there (once) and loads it: the whole flow runs in seconds, and the images are noise.
The app listens on 127.0.0.1 only, unless `--host` names another address.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..checkpoints.download import MODELS_DIR_ENV_VAR, default_models_dir
from ..errors import Depth2imgError
from .common import add_device_flags, device_and_dtype

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7862  # A1111 takes 7860, its API-only mode 7861
DEFAULT_OUTPUTS = Path("outputs") / "depth2img"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="start the standalone web app: the Depth2img panel, prompts, sampler settings, gallery",
        description=(
            "Start a small web app with the extension's Depth2img panel over the project's own SD2-depth "
            "engine: init image, optional inpaint mask, your own depth map, depth preview and adjustments, "
            "prompts and sampler settings. Results are saved with their parameters in the outputs folder."
        ),
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--ckpt", type=Path, metavar="PATH",
                        help="the depth checkpoint to load (default: the first one in the models folder)")
    source.add_argument("--demo", action="store_true",
                        help="load a tiny DEMO checkpoint with RANDOM weights (written to the models folder "
                        "if missing): to try the flow without the 5.7 GB download; its images are noise")
    parser.add_argument("--models-dir", type=Path, metavar="DIR", default=None,
                        help="where depth checkpoints are looked for and installed (default: "
                        f"${MODELS_DIR_ENV_VAR}, else the WebUI's models/Stable-diffusion when installed as "
                        "an extension, else models/Stable-diffusion here)")
    parser.add_argument("-o", "--output-dir", type=Path, metavar="OUT", default=DEFAULT_OUTPUTS,
                        help="folder for the results, one subfolder per day (default: %(default)s)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 lets "
                        "every machine that reaches this one use the app)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s)")
    add_device_flags(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..ui.app import build_app  # gradio loads only for this command
    from ..ui.engine_services import EngineServices, ensure_demo_checkpoint

    device, dtype = device_and_dtype(args)
    models_dir: Path = args.models_dir or default_models_dir()
    checkpoint: Path | None = args.ckpt
    if checkpoint is not None and not checkpoint.is_file():
        raise Depth2imgError(f"--ckpt {checkpoint}: no such file; give the path of a depth checkpoint.")
    if args.demo:
        checkpoint = ensure_demo_checkpoint(models_dir)
        print(f"demo checkpoint: {checkpoint} (RANDOM weights: the images are noise)", file=sys.stderr)

    services = EngineServices(models_dir, startup_checkpoint=checkpoint, device=device, dtype=dtype)
    if services.depth_checkpoint_titles():
        pipeline = services.pipeline()  # a bad checkpoint fails now, not at the first job
        print(f"checkpoint: {pipeline.checkpoint_path}", file=sys.stderr)
    else:
        print(services.missing_checkpoint_message(), file=sys.stderr)
    app = build_app(services, args.output_dir)
    print(f"results go to {args.output_dir.resolve()}", file=sys.stderr)
    _local_requests_skip_proxies(args.host)
    try:
        app.blocks.launch(server_name=args.host, server_port=args.port)
    except OSError as error:  # gradio: "Cannot find empty port in range"
        raise Depth2imgError(
            f"cannot listen on {args.host}:{args.port} ({error}); pass another --port."
        ) from None
    except ValueError as error:
        # gradio's start-up check gives up when its first request to the page takes over 3 s
        if "localhost is not accessible" not in str(error):
            raise
        app.blocks.close()
        raise Depth2imgError(
            f"the app started, but gradio could not reach it at http://{args.host}:{args.port} within 3 s "
            "(a busy machine, or a firewall on local connections); start it again."
        ) from None
    return 0


def _local_requests_skip_proxies(host: str) -> None:
    """gradio requests the app's own page while starting; sent through an HTTP(S)_PROXY that request
    fails and the app exits, so the app's own addresses join NO_PROXY (remote downloads keep the proxy)."""
    local = [host, "127.0.0.1", "localhost"]  # gradio calls a 0.0.0.0 server "localhost"
    for variable in ("NO_PROXY", "no_proxy"):
        listed = [entry.strip() for entry in os.environ.get(variable, "").split(",") if entry.strip()]
        os.environ[variable] = ",".join(listed + [name for name in dict.fromkeys(local) if name not in listed])
