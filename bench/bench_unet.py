"""Seconds per UNet step and peak memory: fused SDPA attention against the plain softmax formula.

One step is one full-size SD2-depth UNet forward at 512x512 (latents 64x64, 4 + 1 depth
channels), batch 2 as classifier-free guidance runs it, with random weights in float32 on the CPU.

- Time: one subprocess builds the UNet once, warms both variants up, then alternates them step by
  step (sdpa, plain, sdpa, ...), so that load from other processes hits both alike.
- Memory: a fresh subprocess per variant runs one step; its peak resident set size
  (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) is read after building the UNet (the weights) and
  after the step (weights + activations), so each variant's peak is its own.

    python bench/bench_unet.py [--steps 2] [--size 512]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("sdpa", "plain")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def unet_step(size: int):
    """A full-size UNet with random weights and a function running one step on fixed inputs."""
    import torch

    from lib_depth2img.engine import FULL
    from lib_depth2img.engine.unet import UNetModel

    torch.manual_seed(0)
    unet = UNetModel(FULL.unet).eval().requires_grad_(False)
    latent = size // 8
    x = torch.randn(2, FULL.unet.in_channels, latent, latent)
    timesteps = torch.tensor([500, 500])
    context = torch.randn(2, 77, FULL.unet.context_dim)

    def step() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            unet(x, timesteps, context)
        return time.perf_counter() - start

    return step


def measure_memory(variant: str, size: int) -> dict[str, float]:
    from lib_depth2img.engine import set_attention_backend

    step = unet_step(size)
    after_build = peak_rss_mib()
    set_attention_backend(variant)
    step()
    return {"after_build_mib": after_build, "peak_mib": peak_rss_mib()}


def measure_time(steps: int, size: int) -> dict[str, list[float]]:
    from lib_depth2img.engine import set_attention_backend

    step = unet_step(size)
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for round_ in range(steps + 1):  # round 0 is the warm-up: first-call allocations, kernel choice
        for variant in VARIANTS:
            set_attention_backend(variant)
            seconds = step()
            if round_:
                times[variant].append(seconds)
    return times


def run_child(args: list[str]) -> dict:
    repo = Path(__file__).resolve().parent.parent
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))
    )
    command = [sys.executable, __file__, *args]
    output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=2, help="timed steps per variant (after one warm-up)")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (latent side = size/8)")
    parser.add_argument("--child", choices=["time", *VARIANTS], help=argparse.SUPPRESS)  # subprocess role
    args = parser.parse_args()

    if args.child == "time":
        print(json.dumps(measure_time(args.steps, args.size)))
        return
    if args.child:
        print(json.dumps(measure_memory(args.child, args.size)))
        return

    import torch

    print(
        f"SD2-depth UNet, full size, fp32 CPU, {args.size}x{args.size} (latent {args.size // 8}), batch 2, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.steps} timed steps per variant after 1 warm-up, variants alternating"
    )
    size = ["--size", str(args.size)]
    times = run_child(["--child", "time", "--steps", str(args.steps), *size])
    memory = {variant: run_child(["--child", variant, *size]) for variant in VARIANTS}
    for variant in VARIANTS:
        t, m = times[variant], memory[variant]
        print(
            f"{variant:>5}: {sum(t) / len(t):7.2f} s/step mean, {min(t):7.2f} min   "
            f"peak RSS {m['peak_mib']:6.0f} MiB (weights {m['after_build_mib']:.0f}, "
            f"one step adds {m['peak_mib'] - m['after_build_mib']:.0f})"
        )
    (ts, tp), (ms, mp) = ((times[v] for v in VARIANTS), (memory[v] for v in VARIANTS))
    print(
        f"plain / sdpa: time {sum(tp) / sum(ts):.2f}x (mean), {min(tp) / min(ts):.2f}x (min); "
        f"peak RSS {mp['peak_mib'] / ms['peak_mib']:.2f}x, memory added by a step "
        f"{(mp['peak_mib'] - mp['after_build_mib']) / (ms['peak_mib'] - ms['after_build_mib']):.2f}x"
    )


if __name__ == "__main__":
    main()
