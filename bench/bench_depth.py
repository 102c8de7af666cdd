"""Depth estimation cost on this machine: one forward pass, its memory, and batch handling.

    python bench/bench_depth.py [--estimator dpt_hybrid] [--runs 5] [--image-size 512]

Full-size network with random weights (speed does not depend on the values). Figures:
- forward: median seconds of the network alone on one input at the estimator's net size;
- memory: growth of the peak resident set size during that forward, over the RSS before it.
  The peak is reset through /proc/self/clear_refs (Linux), so it is the forward's own working
  memory, not what building the network left behind; elsewhere it falls back to getrusage's
  lifetime peak, which only shows growth beyond any earlier peak;
- batch: a batch of 4 copies of one image in one `estimate_batch` call (estimated once) against 4
  `estimate` calls (A1111's native behaviour: MiDaS once per batch item), and 4 different images
  in one call (one batched forward) against 4 calls.
Every comparison runs side by side in this process, the two sides in turns; the ratios are what to read.
"""

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib_depth2img.estimators import ESTIMATORS, DepthEstimator, build_dpt


def seconds(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def median_seconds(*actions: Callable[[], object], runs: int) -> list[float]:
    """Median time of each action, run in turns (ABAB...) so that load from other processes hits both alike."""
    for action in actions:
        action()  # warm-up: first calls pay for kernel selection and allocation
    times: list[list[float]] = [[] for _ in actions]
    for _ in range(runs):
        for action, series in zip(actions, times):
            series.append(seconds(action))
    return [statistics.median(series) for series in times]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_memory_growth_mib(action: Callable[[], object]) -> tuple[float, str]:
    """Peak RSS during `action` minus RSS before it, in MiB, and how it was measured."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak RSS, to the current RSS
        before = _status_kib("VmRSS")
        action()
        return (_status_kib("VmHWM") - before) / 1024, "peak RSS reset via /proc/self/clear_refs"
    except (OSError, KeyError):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        action()
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        scale = 1024 * 1024 if platform.system() == "Darwin" else 1024  # bytes on macOS, KiB on Linux
        return grown / scale, "getrusage lifetime peak (growth beyond earlier peaks only)"


def photo(size: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--estimator", default="dpt_hybrid", choices=list(ESTIMATORS))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=512, help="side of the square test images")
    args = parser.parse_args()

    spec = ESTIMATORS[args.estimator]
    print(
        f"{args.estimator}, full size, random weights; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    torch.manual_seed(0)
    estimator = DepthEstimator(build_dpt(args.estimator), spec, weights_id="bench:random")

    x = torch.rand(1, 3, spec.net_size, spec.net_size) * 2 - 1

    def forward() -> None:
        with torch.inference_mode():
            estimator.model(x)

    (forward_s,) = median_seconds(forward, runs=args.runs)
    memory_mib, how = peak_memory_growth_mib(forward)
    print(f"forward {spec.net_size}x{spec.net_size}: {forward_s:.3f} s (median of {args.runs})")
    print(f"forward peak memory: +{memory_mib:.0f} MiB over the loaded network ({how})")

    same = [photo(args.image_size, 0)] * 4
    different = [photo(args.image_size, seed) for seed in range(4)]
    rows = [
        (
            "4 copies of one image",
            lambda: estimator.estimate_batch(same),
            lambda: [estimator.estimate(i) for i in same],
        ),
        (
            "4 different images",
            lambda: estimator.estimate_batch(different),
            lambda: [estimator.estimate(i) for i in different],
        ),
    ]
    print(f"\nbatch of 4 images {args.image_size}x{args.image_size} (median of {args.runs}, run in turns):")
    print(f"{'':24}{'one estimate_batch':>20}{'4 x estimate':>16}{'ratio':>9}")
    for label, batched, separate in rows:
        batched_s, separate_s = median_seconds(batched, separate, runs=args.runs)
        print(f"{label:24}{batched_s:>18.3f} s{separate_s:>14.3f} s{separate_s / batched_s:>8.2f}x")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
