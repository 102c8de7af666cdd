"""`generate`: img2img, inpaint and txt2img from depth with the standalone engine.

    python -m lib_depth2img generate --ckpt 512-depth-ema.safetensors --init photo.jpg \\
        --prompt "an oil painting" [--strength 0.75] [--steps 20] [--sampler "DPM++ 2M"] \\
        [--schedule-type Karras] [--cfg 7] [--seed N] [--depth MY_DEPTH.png] [--mask MASK.png] \\
        [--batch N] -o OUT
    python -m lib_depth2img generate --ckpt 512-depth-ema.safetensors --params-from a1111.png \\
        --init frames/ [--frame-seed index] -o OUT

Parameters:
- `--params-from`: every parameter of an A1111 PNG (its PNG Info): prompts, steps, sampler and
  schedule type, CFG scale, seed, variation seed and strength, size, denoising strength, ENSD,
  RNG and the Depth2img entries. Flags given on the command line override them. Entries the engine
  cannot honour (a LoRA, a hires pass, another model, a refiner, prompt emphasis, ...) are named in
  one message and stop the command, unless `--ignore-unsupported`.
- Samplers and schedule types are A1111 v1.10's names; "DPM++ 2M Karras" (the older spelling)
  still sets both. The noise is A1111's ("RNG: CPU" by default, the same image on every device).

Inputs:
- `--init`: image files, folders (every image inside) or glob patterns such as 'frames/*.png';
  the images of a folder or pattern are taken in natural order (frame2 before frame10).
- `--depth`: your own depth map for every init image, or a folder whose maps are matched to the
  init images by file stem. Without `--init` each depth map is a txt2img-from-depth job.
- `--mask`: a mask (white = repaint) for every init image, or a folder matched by stem.
- `--normalize sequence`: for video frames. All raw depth estimates are made first and one
  range (the min and max over all frames) normalises every frame, so a frame's gray levels mean
  the same distance in every frame and the depth does not flicker; the default `image`
  stretches each frame's own min..max to [0, 1].

Writes `<stem>-<seed>.png` per image (A1111 parameters in the PNG's `parameters` chunk) and with
`--save-depth` `<stem>-depth.png` (16-bit). Every input is read and checked before the first file
is written; files are written under a temporary name and renamed, so OUT never holds a partial
file. The seed is the same for every input (seed + index within a batch), or with `--frame-seed
index` seed + the input's number (0, 1, ...); -1 draws one, printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from ..depthmaps.cache import DepthCache
from ..depthmaps.values import depth_to_16bit
from ..engine.pipeline import Depth2ImgPipeline, GenerationRequest, resolve_seed
from ..engine.samplers import ProgressCallback
from ..errors import Depth2imgError, ImageError, SettingsError
from ..estimators import ESTIMATORS, DepthEstimator
from ..images import IMAGE_EXTENSIONS, load_image, make_output_folder, save_atomically
from ..infotext import model_hash, png_info
from ..settings import EMBEDDED_ESTIMATOR, Depth2imgArgs
from .a1111_params import A1111Parameters, parameters_of_png
from .common import add_device_flags, add_setting_flag, device_and_dtype
from .depth import DEPTH_SETTINGS

REQUEST_FLAGS = {
    "--prompt": "prompt", "--negative": "negative_prompt", "--strength": "denoising_strength",
    "--steps": "steps", "--sampler": "sampler", "--schedule-type": "schedule_type", "--cfg": "cfg_scale",
    "--seed": "seed", "--variation-seed": "variation_seed", "--variation-strength": "variation_strength",
    "--ensd": "eta_noise_seed_delta", "--rng": "rng", "--width": "width", "--height": "height",
    "--batch": "batch_size", "--mask-blur": "mask_blur", "--resize-mode": "resize_mode",
}
"""The flag of each `GenerationRequest` setting; unset it is None, so a flag given overrides --params-from."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate images with the SD2 depth model (img2img, inpaint, txt2img from a depth map)",
        description=(
            "Generate images with Stable Diffusion 2 depth-to-image: the init image's depth (estimated, "
            "or your own map) keeps the composition while the prompt restyles it. Without --init, "
            "generates from your own depth maps alone."
        ),
    )
    parser.add_argument("--ckpt", required=True, type=Path, metavar="PATH",
                        help="the depth checkpoint: 512-depth-ema .ckpt/.safetensors (or a demo checkpoint)")
    parser.add_argument("--init", nargs="+", metavar="IMAGE",
                        help="init image(s): files, folders or glob patterns (natural order)")
    parser.add_argument("--depth", type=Path, metavar="PATH",
                        help="your own depth map (white = near), or a folder of maps matched by file stem")
    parser.add_argument("--mask", type=Path, metavar="PATH",
                        help="inpaint mask (white = repaint, same size as the init image), "
                        "or a folder matched by stem")
    parser.add_argument("--params-from", type=Path, metavar="PNG",
                        help="take every parameter from an A1111 PNG's info; flags given here override them")
    parser.add_argument("--ignore-unsupported", action="store_true",
                        help="with --params-from: render even when the PNG has entries the engine cannot "
                        "honour (they are listed as a warning)")
    for flag, name in REQUEST_FLAGS.items():
        add_setting_flag(parser, name, settings=GenerationRequest, flag=flag, unset_is_none=True)
    parser.add_argument("--frame-seed", choices=("same", "index"), default="same",
                        help="several inputs: the same seed for each (default), or seed + the input's number")
    parser.add_argument("--normalize", choices=("image", "sequence"), default="image",
                        help="estimated depth: each image's own range (default), or one range for all "
                        "inputs (video frames: no flicker)")
    parser.add_argument("--estimator", choices=(EMBEDDED_ESTIMATOR, *ESTIMATORS),
                        help=f"{Depth2imgArgs.spec('estimator').hint} Others need --estimator-weights. "
                        f"(default: {EMBEDDED_ESTIMATOR})")
    parser.add_argument("--estimator-weights", type=Path, metavar="PATH",
                        help="weights file of a non-embedded --estimator (a MiDaS or Depth Anything release file)")
    for name in DEPTH_SETTINGS:
        add_setting_flag(parser, name, unset_is_none=True)
    parser.add_argument("--save-depth", action="store_true", help="also write <stem>-depth.png (16-bit)")
    add_device_flags(parser)
    parser.add_argument("-o", "--output-dir", required=True, type=Path, metavar="OUT",
                        help="folder for the results (created if missing)")
    parser.set_defaults(func=run)


@dataclass(frozen=True)
class Job:
    """One input: the init image and/or depth map and mask it uses, and the stem of its outputs."""

    stem: str
    init: Path | None
    depth: Path | None
    mask: Path | None


def run(args: argparse.Namespace) -> int:
    device, dtype = device_and_dtype(args)
    params = _params_from(args)
    settings = _depth_settings(args, params)
    values = _request_values(args, params)
    jobs = plan_jobs(args.init, args.depth, args.mask)
    seed = resolve_seed(values["seed"])
    out_dir: Path = args.output_dir
    if out_dir.exists() and not out_dir.is_dir():
        raise Depth2imgError(f"{out_dir} is a file; give a folder for the results.")
    for number, job in enumerate(jobs):  # read and check every input before anything is loaded or written
        _request(values, job, settings, _job_seed(args, seed, number))

    pipe = Depth2ImgPipeline.from_checkpoint(args.ckpt, device=device, dtype=dtype, cache=DepthCache())
    if settings.estimator != EMBEDDED_ESTIMATOR:
        pipe.estimators[settings.estimator] = DepthEstimator.from_file(
            args.estimator_weights, settings.estimator, device=device, dtype=dtype
        )
    if pipe.model.is_demo:
        print("note: demo checkpoint with random weights: the flow runs, the images are noise.",
              file=sys.stderr)
    if values["seed"] == -1:
        print(f"seed: {seed}", file=sys.stderr)

    depth_range = None
    if args.normalize == "sequence":
        depth_range = pipe.depth_range(_request(values, job, settings, seed) for job in jobs)
        low, high = depth_range
        print(f"depth range for all {len(jobs)} inputs: {low:.4g} .. {high:.4g}", file=sys.stderr)

    make_output_folder(out_dir)
    for number, job in enumerate(jobs):
        request = _request(values, job, settings, _job_seed(args, seed, number))
        request = dataclasses.replace(request, depth_range=depth_range)
        label = f"[{number + 1}/{len(jobs)}] {job.stem}"
        with tqdm(desc=label, unit="step", file=sys.stderr, disable=None) as bar:
            result = pipe(request, progress=_progress_to(bar))
        for image, item_seed, infotext in zip(result.images, result.seeds, result.infotexts, strict=True):
            save_atomically(image, out_dir / f"{job.stem}-{item_seed}.png", pnginfo=png_info(infotext))
        if args.save_depth:
            save_atomically(depth_to_16bit(result.depth), out_dir / f"{job.stem}-depth.png")
        print(f"{job.stem}: wrote {len(result.images)} image(s), seeds {', '.join(map(str, result.seeds))}")
    return 0


def _params_from(args: argparse.Namespace) -> A1111Parameters | None:
    """The PNG's parameters, after saying what of them the engine cannot honour."""
    if args.params_from is None:
        return None
    if not args.params_from.is_file():
        raise ImageError(f"{args.params_from}: file not found; check the path.")
    params = parameters_of_png(args.params_from, model_hash(args.ckpt) if args.ckpt.is_file() else None)
    if params.not_honoured:
        listing = "".join(f"\n  - {entry}" for entry in params.not_honoured)
        message = f"{args.params_from} has parameters the engine cannot honour:{listing}"
        if not args.ignore_unsupported:
            raise SettingsError(f"{message}\nRender anyway without them with --ignore-unsupported.")
        print(f"warning: {message}\n(rendering without them: --ignore-unsupported)", file=sys.stderr)
    if params.depth is None:
        print(f"note: {args.params_from} has no Depth2img entries (A1111's native depth): depth is estimated "
              "as the extension does, which A1111's native path does slightly differently.", file=sys.stderr)
    return params


def _request_values(args: argparse.Namespace, params: A1111Parameters | None) -> dict[str, Any]:
    """Each request field: the flag when given, else the PNG's value, else the request's default."""
    from_png = params.values if params is not None else {}
    values = {}
    for name, default in GenerationRequest.defaults().items():
        flag = getattr(args, name, None)
        values[name] = flag if flag is not None else from_png.get(name, default)
    return values


def _job_seed(args: argparse.Namespace, seed: int, number: int) -> int:
    return seed + number if args.frame_seed == "index" else seed


def _depth_settings(args: argparse.Namespace, params: A1111Parameters | None) -> Depth2imgArgs:
    """The PNG's Depth2img settings (or the defaults), with the flags given here on top."""
    base = params.depth if params is not None and params.depth is not None else Depth2imgArgs()
    given = {name: getattr(args, name) for name in (*DEPTH_SETTINGS, "estimator") if getattr(args, name) is not None}
    settings = Depth2imgArgs.from_values({**dataclasses.asdict(base), "enabled": True, **given})
    if settings.estimator != EMBEDDED_ESTIMATOR and args.estimator_weights is None:
        raise SettingsError(
            f"--estimator {settings.estimator} needs --estimator-weights PATH (its MiDaS weights file)."
        )
    if args.normalize == "sequence" and args.depth is not None:
        raise SettingsError(
            "--normalize sequence applies to estimated depth; your own depth maps (--depth) are used "
            "as they are."
        )
    return settings


def _request(values: dict[str, Any], job: Job, settings: Depth2imgArgs, seed: int) -> GenerationRequest:
    """The job's request, with its images decoded: every bad input fails here, before any output."""
    if job.depth is not None:
        settings = dataclasses.replace(settings, depth_image=load_image(job.depth))
    return GenerationRequest(**{
        **values,
        "init_image": _load_init(job),
        "mask": load_image(job.mask) if job.mask is not None else None,
        "depth": settings,
        "seed": seed,
    })


def _load_init(job: Job) -> Image.Image | None:
    return load_image(job.init) if job.init is not None else None


def plan_jobs(init: list[str] | None, depth: Path | None, mask: Path | None) -> list[Job]:
    """One job per init image (or per depth map without --init), with its depth map and mask."""
    if not init:
        if depth is None:
            raise SettingsError("Give --init images, --depth maps (txt2img from depth), or both.")
        if mask is not None:
            raise SettingsError("--mask needs --init: inpainting repaints part of an init image.")
        maps = _images_in(depth) if depth.is_dir() else [depth]
        jobs = [Job(path.stem, None, path, None) for path in maps]
    else:
        inits = [path for pattern in init for path in _expand(pattern)]
        jobs = [Job(p.stem, p, _match(depth, p, "depth map"), _match(mask, p, "mask")) for p in inits]
    stems: dict[str, Job] = {}
    for job in jobs:
        earlier = stems.setdefault(job.stem, job)
        if earlier is not job:
            raise SettingsError(
                f"{earlier.init or earlier.depth} and {job.init or job.depth} have the same name "
                f"'{job.stem}', so their results would overwrite each other; rename one."
            )
    return jobs


def _expand(pattern: str) -> list[Path]:
    path = Path(pattern)
    if path.is_dir():
        return _images_in(path)
    if glob.has_magic(pattern):
        found = sorted((Path(p) for p in glob.glob(pattern) if _is_image_file(Path(p))), key=natural_key)
        if not found:
            raise ImageError(f"{pattern}: no image files match this pattern; check it.")
        return found
    if not path.exists():
        raise ImageError(f"{path}: file not found; check the path.")
    return [path]


def _images_in(folder: Path) -> list[Path]:
    found = sorted((p for p in folder.iterdir() if _is_image_file(p)), key=natural_key)
    if not found:
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise ImageError(f"{folder} holds no images ({extensions}); check the folder.")
    return found


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _match(source: Path | None, init: Path, what: str) -> Path | None:
    """`source` itself, or the image in folder `source` whose stem is the init image's."""
    if source is None or not source.is_dir():
        if source is not None and not source.exists():
            raise ImageError(f"{source}: file not found; check the path.")
        return source
    matches = [p for p in _images_in(source) if p.stem == init.stem]
    if len(matches) != 1:
        found = "no" if not matches else "more than one"
        raise ImageError(f"{source} has {found} {what} named '{init.stem}.*' for {init}; give exactly one.")
    return matches[0]


def natural_key(path: Path) -> list[Any]:
    """Sort key putting frame2 before frame10: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _progress_to(bar: tqdm) -> ProgressCallback:
    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return progress


