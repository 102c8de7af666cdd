"""Writes the Depth Anything parity data from the official code (run by hand, not by the tests).

    python tests/data/make_depth_anything_reference.py DEPTH_ANYTHING_V2_DIR DEPTH_ANYTHING_V1_DIR

DEPTH_ANYTHING_V2_DIR / _V1_DIR: checkouts of DepthAnything/Depth-Anything-V2 and
LiheYoung/Depth-Anything; needs opencv-python and torch. Writes beside this file:
- `depth_anything.layout.tsv`: every tensor name and shape of the six released networks, built at
  full size on the meta device;
- `depth_anything_reference.npz`: for a small network (the project's `depth_anything.TINY`: DINOv2
  with 64 channels, 4 blocks, 2 heads, 5x5 stored position grid; head features 16) with weights from
  `seeded_state_dict(SEED)`, the official pipeline's network input (the same for V1 and V2), raw
  output and final depth map for a few images (square and not, on and off the stored grid).
"""

import functools
import os
import sys
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/ for support.seeded_weights
sys.path.insert(0, str(HERE.parents[1]))  # the repository, for lib_depth2img.compat
from support.seeded_weights import seeded_state_dict

from lib_depth2img import compat
from lib_depth2img.estimators.timm_parts import building_on

SEED = 20240613
TINY = {"embed_dim": 64, "depth": 4, "num_heads": 2, "img_size": 70, "features": 16, "out_channels": [8, 16, 32, 32]}
FULL_CONFIGS = {
    "vits": {"features": 64, "out_channels": [48, 96, 192, 384]},
    "vitb": {"features": 128, "out_channels": [96, 192, 384, 768]},
    "vitl": {"features": 256, "out_channels": [256, 512, 1024, 1024]},
}
CASES = {  # name: (image height, width, input size)
    "square_stored_grid": (40, 40, 70),  # 5x5 patches: the stored position grid, used as it is
    "square": (40, 40, 56),  # 4x4
    "wide": (30, 53, 42),  # 3x5
    "tall": (60, 37, 56),  # 6x4
}


def images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    return {name: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for name, (h, w, _) in CASES.items()}


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def load_v2(root: Path):
    sys.path.insert(0, str(root))
    from depth_anything_v2 import dinov2, dpt
    from depth_anything_v2.dinov2_layers import MemEffAttention, NestedTensorBlock

    def tiny() -> torch.nn.Module:
        model = dpt.DepthAnythingV2(encoder="vits", features=TINY["features"], out_channels=TINY["out_channels"])
        model.pretrained = dinov2.DinoVisionTransformer(
            img_size=TINY["img_size"], patch_size=14, embed_dim=TINY["embed_dim"], depth=TINY["depth"],
            num_heads=TINY["num_heads"], mlp_ratio=4, init_values=1.0, block_chunks=0,
            block_fn=functools.partial(NestedTensorBlock, attn_class=MemEffAttention),
            interpolate_antialias=False, interpolate_offset=0.1,
        )
        model.depth_head = dpt.DPTHead(TINY["embed_dim"], TINY["features"], False, out_channels=TINY["out_channels"])
        model.intermediate_layer_idx["vits"] = list(range(TINY["depth"] - 4, TINY["depth"]))
        return model

    def full(encoder: str) -> torch.nn.Module:
        return dpt.DepthAnythingV2(encoder=encoder, **FULL_CONFIGS[encoder])

    def run(model, image_bgr: np.ndarray, input_size: int):
        tensor, (h, w) = model.image2tensor(image_bgr, input_size)
        raw = model(tensor)
        depth = torch.nn.functional.interpolate(raw[:, None], (h, w), mode="bilinear", align_corners=True)[0, 0]
        return tensor, raw, depth

    sys.path.remove(str(root))
    return tiny, full, run


def load_v1(root: Path):
    hub = types.ModuleType("huggingface_hub")  # only imported by name for the hub mixin and downloads
    hub.PyTorchModelHubMixin = type("PyTorchModelHubMixin", (), {})
    hub.hf_hub_download = None
    sys.modules.setdefault("huggingface_hub", hub)
    sys.path.insert(0, str(root))
    sys.path.insert(0, str(root / "torchhub" / "facebookresearch_dinov2_main"))
    import cv2
    import vision_transformer
    from depth_anything import dpt
    from depth_anything.util.transform import NormalizeImage, PrepareForNet, Resize
    from torchvision.transforms import Compose

    def build(encoder: str, features: int, out_channels: list[int], dino: torch.nn.Module) -> torch.nn.Module:
        model = dpt.DPT_DINOv2.__new__(dpt.DPT_DINOv2)
        torch.nn.Module.__init__(model)
        model.pretrained = dino
        model.depth_head = dpt.DPTHead(1, dino.embed_dim, features, False, out_channels=out_channels)
        return model

    def dino(size: str, **overrides) -> torch.nn.Module:
        make = {"vits": vision_transformer.vit_small, "vitb": vision_transformer.vit_base, "vitl": vision_transformer.vit_large}[size]
        options = {"img_size": 518, "patch_size": 14, "init_values": 1.0, "block_chunks": 0} | overrides
        return make(**options)

    def tiny() -> torch.nn.Module:
        encoder = vision_transformer.DinoVisionTransformer(
            img_size=TINY["img_size"], patch_size=14, embed_dim=TINY["embed_dim"], depth=TINY["depth"],
            num_heads=TINY["num_heads"], mlp_ratio=4, init_values=1.0, block_chunks=0,
        )
        return build("vits", TINY["features"], TINY["out_channels"], encoder)

    def full(encoder: str) -> torch.nn.Module:
        return build(encoder, **FULL_CONFIGS[encoder], dino=dino(encoder))

    def run(model, image_bgr: np.ndarray, input_size: int):  # the steps of the official run.py
        transform = Compose([
            Resize(width=input_size, height=input_size, resize_target=False, keep_aspect_ratio=True,
                   ensure_multiple_of=14, resize_method="lower_bound", image_interpolation_method=cv2.INTER_CUBIC),
            NormalizeImage(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
            PrepareForNet(),
        ])
        h, w = image_bgr.shape[:2]
        image = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB) / 255.0
        tensor = torch.from_numpy(transform({"image": image})["image"]).unsqueeze(0)
        raw = model(tensor)
        depth = torch.nn.functional.interpolate(raw[None], (h, w), mode="bilinear", align_corners=False)[0, 0]
        return tensor, raw, depth

    return tiny, full, run


def main(v2_root: Path, v1_root: Path) -> None:
    compat.import_timm()  # makes torchvision importable under a mismatched build, as the project does
    families = {"v2": load_v2(v2_root), "v1": load_v1(v1_root)}
    layout_lines = []
    for family, (_, full, _) in families.items():
        prefix = "depth_anything_v2_" if family == "v2" else "depth_anything_"
        for encoder in FULL_CONFIGS:
            with building_on("meta"):
                model = full(encoder)
            for name, shape in shapes(model).items():
                layout_lines.append(f"{prefix}{encoder}\t{name}\t{','.join(map(str, shape))}")
    (HERE / "depth_anything.layout.tsv").write_text("\n".join(layout_lines) + "\n")

    arrays = {"seed": np.array(SEED)}
    for name, image in images().items():
        arrays[f"image/{name}"] = image
    for family, (tiny, _, run) in families.items():
        model = tiny().eval()
        weights = seeded_state_dict(shapes(model), SEED)
        model.load_state_dict(weights, strict=True)
        with torch.no_grad():
            for name, image in images().items():
                tensor, raw, depth = run(model, np.ascontiguousarray(image[..., ::-1]), CASES[name][2])
                if family == "v2":
                    arrays[f"input/{name}"] = tensor[0].numpy()
                elif not np.array_equal(arrays[f"input/{name}"], tensor[0].numpy()):
                    raise AssertionError(f"V1 and V2 prepare {name} differently; store both inputs")
                arrays[f"{family}/{name}/raw"] = raw[0].numpy()
                arrays[f"{family}/{name}/depth"] = depth.numpy()
    np.savez_compressed(HERE / "depth_anything_reference.npz", **arrays)


if __name__ == "__main__":
    os.environ.setdefault("XFORMERS_DISABLED", "1")
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve())
