"""Estimator weights files: where users already keep them, and installing those with an official download.

A weights file is the release's own name (`depth_anything_v2_vits.pth`) or a `.safetensors`
conversion under the same stem, in one of the folders other tools use under a models folder:
`depth_anything_v2/` and `depth_anything/` (depthmap-script, and ControlNet's annotator folder,
which is the WebUI's models folder unless configured), then `midas/`. Downloads go to the first
of those folders, through the verified downloader (`model_download.download_file`: size when
known and SHA-256, resume, atomic rename).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..checkpoints.download import DEFAULT_TIMEOUT, ModelSource, ProgressCallback, download_file, resolve_url
from ..errors import WeightsError
from .registry import get_spec

MIDAS_FOLDER = "midas"

_V2 = "https://huggingface.co/depth-anything/Depth-Anything-V2-{size}/resolve/main/depth_anything_v2_vit{s}.pth"
_V1 = "https://huggingface.co/spaces/LiheYoung/Depth-Anything/resolve/main/checkpoints/depth_anything_vit{s}14.pth"

# SHA-256 (and size, where the LFS pointer was seen) of the official files on Hugging Face:
# - V2 Small/Base: depth-anything/Depth-Anything-V2-{Small,Base}, the LFS details of
#   depth_anything_v2_vit{s,b}.pth (Small: commit 05bbaec, Base: f11825d).
# - V1: the LiheYoung/Depth-Anything space, commit 843bd97 "Upload 101 files",
#   checkpoints/depth_anything_vit{s,b,l}14.pth; vitl's pointer gives its size.
# V2 Large has no download here: no verified SHA-256 of the official file was found.
OFFICIAL_DOWNLOADS: dict[str, ModelSource] = {
    "depth_anything_v2_vits": ModelSource(
        "depth_anything_v2_vits.pth", _V2.format(size="Small", s="s"), None,
        "715fade13be8f229f8a70cc02066f656f2423a59effd0579197bbf57860e1378",
    ),
    "depth_anything_v2_vitb": ModelSource(
        "depth_anything_v2_vitb.pth", _V2.format(size="Base", s="b"), None,
        "0d2b7002e62d39d655571c371333340bd88f67ab95050c03591555aa05645328",
    ),
    "depth_anything_vits": ModelSource(
        "depth_anything_vits14.pth", _V1.format(s="s"), None,
        "59afe57cfd9f4284deaf5b753d954723d7136ae842fba3e068ba03537ca1e60e",
    ),
    "depth_anything_vitb": ModelSource(
        "depth_anything_vitb14.pth", _V1.format(s="b"), None,
        "64ae214ae4e27424b644c49464c0aa243016f6f753d95097c8eb9ad0b9cb2d9b",
    ),
    "depth_anything_vitl": ModelSource(
        "depth_anything_vitl14.pth", _V1.format(s="l"), 1_341_401_882,
        "6c6a383e33e51c5fdfbf31e7ebcda943973a9e6a1cbef1564afe58d7f2e8fe63",
    ),
}


def weights_folders(name: str) -> tuple[str, ...]:
    """Folder names, under a models folder, where estimator `name`'s weights are looked for, in order."""
    spec = get_spec(name)
    return (spec.models_folder, MIDAS_FOLDER) if spec.models_folder != MIDAS_FOLDER else (MIDAS_FOLDER,)


def weights_file_names(name: str) -> tuple[str, str]:
    """The release's file name and its `.safetensors` conversion."""
    file_name = get_spec(name).file_name
    return file_name, Path(file_name).stem + ".safetensors"


def find_weights(name: str, models_roots: Sequence[str | os.PathLike[str]]) -> Path | None:
    """The first weights file of estimator `name` under any of `models_roots`, else None."""
    for root in models_roots:
        for folder in weights_folders(name):
            for file_name in weights_file_names(name):
                path = Path(root) / folder / file_name
                if path.is_file():
                    return path
    return None


def missing_weights_message(name: str, models_roots: Sequence[str | os.PathLike[str]]) -> str:
    """Where the file was looked for and how to get it: said wherever an estimator's weights are missing."""
    places = ", ".join(str(Path(root) / folder) for root in models_roots for folder in weights_folders(name))
    spec = get_spec(name)
    if name in OFFICIAL_DOWNLOADS:
        how = f"install it (Install button, or: python -m lib_depth2img install-estimator {name})"
    else:
        how = "download it from the model's official release"
    return (
        f"Depth2img: the {name} estimator needs its weights file {spec.file_name} (or .safetensors) in one of "
        f"{places}; {how}, or choose 'embedded'."
    )


def install_estimator(
    name: str,
    models_root: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Download estimator `name`'s official weights into `<models_root>/<its folder>`, verified.

    A file already found there (or a conversion of it) is kept. `base_url` (else
    `$DEPTH2IMG_MODEL_URL`) is a mirror folder holding the file; `$HF_ENDPOINT` is honoured.
    """
    source = OFFICIAL_DOWNLOADS.get(name)
    if source is None:
        raise WeightsError(
            f"Depth2img: {name!r} has no verified official download here (those that have: "
            f"{', '.join(OFFICIAL_DOWNLOADS)}); put its weights file in {Path(models_root)}/<its folder> yourself."
        )
    spec = get_spec(name)
    found = find_weights(name, [models_root])
    if found is not None:
        return found
    return download_file(
        resolve_url(source, base_url),
        Path(models_root) / spec.models_folder / source.name,
        size=source.size,
        sha256=source.sha256,
        progress=progress,
        timeout=timeout,
        manual_url=source.url,
    )


def estimator_hint(name: str) -> str:
    """The estimator for choosers: its name, its weights' licence, and whether it can be installed from here."""
    installable = ", installable" if name in OFFICIAL_DOWNLOADS else ""
    return f"{name} ({get_spec(name).licence}{installable})"
