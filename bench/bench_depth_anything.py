"""Depth Anything V2 Small/Base at 518 against DPT-Hybrid (SD2's own MiDaS) at 384 on this machine.

    python bench/bench_depth_anything.py [--runs 3]

Full-size networks with random weights (speed does not depend on the values), each at its own
net size on a square input. Figures: median seconds of one forward (the three run in turns, so
load from other processes hits them alike) and the growth of the peak resident set size during one
forward (see bench_depth.py), printed side by side with the ratio to DPT-Hybrid.
"""

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_depth import median_seconds, peak_memory_growth_mib  # noqa: E402

from lib_depth2img.estimators import ESTIMATORS, build_dpt  # noqa: E402
from lib_depth2img.estimators.preprocess import to_network_input  # noqa: E402

COMPARED = ("dpt_hybrid", "depth_anything_v2_vits", "depth_anything_v2_vitb")


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
    args = parser.parse_args()
    print(
        f"full size, random weights; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    forwards = {name: forward_of(name) for name in COMPARED}
    times = dict(zip(COMPARED, median_seconds(*forwards.values(), runs=args.runs)))
    memory = {name: peak_memory_growth_mib(forward) for name, forward in forwards.items()}
    base = COMPARED[0]
    print(f"\n{'estimator':26}{'input':>10}{'forward':>11}{'vs hybrid':>11}{'peak memory':>14}{'vs hybrid':>11}")
    for name in COMPARED:
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
