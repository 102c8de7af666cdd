"""Benchmark: what the depth cache and batch de-duplication save, with a full-size DPT-Hybrid.

    .venv/bin/python bench/bench_depth_cache.py [--image-size 512] [--repeats 3]

The network is the real full-size DPT-Hybrid (the one inside 512-depth-ema) with random weights,
so the timings are those of the real model without downloading it. Everything is measured side
by side in one run at the estimator's 384 resolution and printed as ratios:
- a cache miss (the estimator runs) against a cache hit (hash the pixels, look up), through
  `depth_source`, as a preview click followed by Generate would;
- a batch of 4 identical init images through `depth_source` (one estimate) against what A1111
  v1.10 does natively (MiDaS on every batch item): one forward of 4 copies, and 4 separate
  estimates;
- a preview of a 12 MP photo with a job's geometry (Crop and resize to 512 x 384): a miss, and the
  hit a second click or Generate gets (the photo is still resized, then hashed), with the size of
  one cache entry at the generation size against one at the photo's size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib_depth2img.depthmaps.cache import DepthCache
from lib_depth2img.depthmaps.geometry import Geometry
from lib_depth2img.depthmaps.source import DepthOrigin, depth_for_images
from lib_depth2img.estimators import ESTIMATORS, DepthEstimator, build_dpt
from lib_depth2img.estimators.preprocess import to_depth_map, to_network_input
from lib_depth2img.settings import Depth2imgArgs

BATCH = 4
PHOTO_SIZE = (4000, 3000)
JOB_GEOMETRY = Geometry(512, 384, resize_mode=1)


def scene(size: int) -> Image.Image:
    """A synthetic photo: a gradient floor, a bright disc in front, a little noise."""
    y, x = np.mgrid[0:size, 0:size] / size
    pixels = np.stack([0.3 + 0.5 * y, 0.4 + 0.2 * x, 0.5 - 0.3 * y], axis=2)
    pixels[(x - 0.5) ** 2 + (y - 0.6) ** 2 < 0.04] = (0.9, 0.8, 0.7)
    pixels += np.random.default_rng(0).normal(0, 0.02, pixels.shape)
    return Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))


def seconds(action: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` runs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def a1111_native_batch(estimator: DepthEstimator, images: list[Image.Image]) -> list[np.ndarray]:
    """What A1111 v1.10 does: MiDaS over the whole batch of (identical) init images in one forward."""
    arrays = [np.array(image.convert("RGB")) for image in images]
    with torch.inference_mode():
        batch = torch.cat(
            [
                to_network_input(array, estimator.net_size, estimator.device, estimator.dtype)
                for array in arrays
            ]
        )
        predictions = estimator.model(batch)
    return [to_depth_map(p, *a.shape[:2]) for p, a in zip(predictions, arrays, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=512, help="side of the square init image")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (median)")
    options = parser.parse_args()

    start = time.perf_counter()
    model = build_dpt("dpt_hybrid")
    build_seconds = time.perf_counter() - start
    estimator = DepthEstimator(model, ESTIMATORS["dpt_hybrid"], weights_id="random-full-size")
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    image = scene(options.image_size)
    settings = Depth2imgArgs(enabled=True)

    def load() -> DepthEstimator:
        return estimator

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; full-size dpt_hybrid, "
        f"{parameters:.0f} M parameters, random init took {build_seconds:.1f} s"
    )
    print(
        f"init image {options.image_size}x{options.image_size}, estimated at {estimator.net_size}, "
        f"median of {options.repeats}\n"
    )
    estimator.estimate(image)  # warm-up: the first forward pays for allocator and kernel set-up

    cache = DepthCache()

    def miss() -> None:
        cache.clear()
        assert depth_for_images([image], settings, load, cache)[0].origin is DepthOrigin.ESTIMATOR

    def hit() -> None:
        assert depth_for_images([image.copy()], settings, load, cache)[0].origin is DepthOrigin.CACHE

    miss_s = seconds(miss, options.repeats)
    hit_s = seconds(hit, max(options.repeats, 10))

    copies = [image.copy() for _ in range(BATCH)]
    ours_s = seconds(lambda: depth_for_images(copies, settings, load, DepthCache()), options.repeats)
    native_batch_s = seconds(lambda: a1111_native_batch(estimator, copies), options.repeats)
    separate_s = seconds(lambda: [estimator.estimate(copy) for copy in copies], options.repeats)

    photo = scene(max(PHOTO_SIZE)).crop((0, 0, *PHOTO_SIZE))
    photo_cache = DepthCache()

    def photo_miss() -> None:
        photo_cache.clear()
        result = depth_for_images([photo], settings, load, photo_cache, geometry=JOB_GEOMETRY)[0]
        assert result.origin is DepthOrigin.ESTIMATOR

    def photo_hit() -> None:
        result = depth_for_images([photo], settings, load, photo_cache, geometry=JOB_GEOMETRY)[0]
        assert result.origin is DepthOrigin.CACHE

    photo_miss_s = seconds(photo_miss, options.repeats)
    photo_hit_s = seconds(photo_hit, max(options.repeats, 5))

    rows = [
        ("cache miss (estimate + normalise)", miss_s),
        ("cache hit (hash + normalise)", hit_s),
        (f"batch of {BATCH} copies via depth_source", ours_s),
        (f"A1111 native: one forward of {BATCH} copies", native_batch_s),
        (f"{BATCH} separate estimates", separate_s),
        ("12 MP photo -> 512x384 preview, miss", photo_miss_s),
        ("12 MP photo -> 512x384 preview, hit", photo_hit_s),
    ]
    for label, value in rows:
        print(f"{label:<45} {value * 1000:9.1f} ms")
    print()
    print(f"miss / hit:                                   {miss_s / hit_s:8.1f}x")
    print(f"A1111 native batch / depth_source batch:      {native_batch_s / ours_s:8.2f}x")
    print(f"{BATCH} separate estimates / depth_source batch:   {separate_s / ours_s:8.2f}x")
    print(f"12 MP preview miss / hit:                     {photo_miss_s / photo_hit_s:8.1f}x")
    entry_mib = photo_cache.nbytes / 2**20
    photo_mib = PHOTO_SIZE[0] * PHOTO_SIZE[1] * 4 / 2**20
    print(f"cache entry of the 12 MP photo: {entry_mib:.2f} MiB at the generation size "
          f"({photo_mib:.0f} MiB at the photo's size, {photo_mib / entry_mib:.0f}x more)")


if __name__ == "__main__":
    main()
