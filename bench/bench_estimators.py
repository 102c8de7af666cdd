"""Depth estimators side by side on this machine: one forward pass each and its peak memory.

    python bench/bench_estimators.py [--runs 3] [--estimators dpt_hybrid depth_anything_v2_vits ...]

Full-size networks with random weights (speed does not depend on the values), each at its own net
size on a square input; by default DPT-Hybrid (SD2's own MiDaS) at 384 against Depth Anything V2
Small and Base at 518. Figures, with the ratio to the first estimator:
- forward: median seconds of one forward, the estimators run in turns so that load from other
  processes hits them alike;
- memory: growth of the peak resident set size during one forward, over the RSS before it. The
  peak is reset through /proc/self/clear_refs (Linux), so it is the forward's own working memory,
  not what building the network left behind; elsewhere it falls back to getrusage's lifetime peak,
  which only shows growth beyond any earlier peak.
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib_depth2img.estimators import ESTIMATORS, build_dpt
from lib_depth2img.estimators.preprocess import to_network_input

COMPARED = ("dpt_hybrid", "depth_anything_v2_vits", "depth_anything_v2_vitb")


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


def forward_of(name: str):
    """A no-argument forward of the full network at its net size, on a normalised random square image."""
    spec = ESTIMATORS[name]
    torch.manual_seed(0)
    model = build_dpt(name)
    pixels = torch.randint(0, 256, (spec.net_size, spec.net_size, 3), dtype=torch.uint8).numpy()
    x = to_network_input(pixels, spec.net_size, torch.device("cpu"), torch.float32, spec.input_rule)

    def forward() -> None:
        with torch.inference_mode():
            model(x)

    return forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--estimators", nargs="+", default=list(COMPARED), choices=list(ESTIMATORS),
                        help="the first is the baseline the ratios are against (default: %(default)s)")
    args = parser.parse_args()
    compared = args.estimators
    print(
        f"full size, random weights; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    forwards = {name: forward_of(name) for name in compared}
    times = dict(zip(compared, median_seconds(*forwards.values(), runs=args.runs)))
    memory = {name: peak_memory_growth_mib(forward) for name, forward in forwards.items()}
    base = compared[0]
    print(f"\n{'estimator':26}{'input':>10}{'forward':>11}{'vs base':>11}{'peak memory':>14}{'vs base':>11}")
    for name in compared:
        size = ESTIMATORS[name].net_size
        mib = memory[name][0]
        print(
            f"{name:26}{f'{size}x{size}':>10}{times[name]:>9.3f} s{times[name] / times[base]:>10.2f}x"
            f"{mib:>10.0f} MiB{mib / memory[base][0]:>10.2f}x"
        )
    print(f"\nforward: median of {args.runs}, run in turns; memory: {memory[base][1]}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
