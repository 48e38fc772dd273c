"""Benchmark: what anti-aliased up-sampling costs in the demo generator (forward + backward).

    python benchmarks/upsample_cost.py [--repeats 5] [--threads 1]

Times G(z) forward and backward (bf16 autocast, batch 8 as in the E/G phase) for the demo
architecture with nearest up-sampling (fused, the paper's layers), trilinear in the last two
blocks in the fused form (nearest conv, then a binomial blur) and in the literal form
(interpolate, then conv).  The variants run interleaved, so a busy machine slows all alike;
the printed ratios are measured in one run.
"""

from __future__ import annotations

import argparse
import time

import torch

from ratgan.config import load_config
from ratgan.models import build_networks

VARIANTS = {
    "nearest (fused)": {},
    "trilinear last 2 (fused: conv + blur)": {
        "model.g_upsample": "trilinear",
        "model.g_trilinear_blocks": 2,
    },
    "trilinear last 2 (literal)": {
        "model.g_upsample": "trilinear",
        "model.g_trilinear_blocks": 2,
        "model.g_fused_upsample": False,
    },
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gens = {}
    for name, over in VARIANTS.items():
        cfg = load_config("demo", over)
        torch.manual_seed(0)
        g = build_networks(cfg.model).generator.to(memory_format=torch.channels_last_3d)
        gens[name] = (g, cfg.model.latent_dim)
    times: dict[str, list[float]] = {k: [] for k in gens}
    for rep in range(args.repeats + 1):
        for name, (g, latent) in gens.items():
            z = torch.randn(8, latent)
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = g(z)
            out.float().square().mean().backward()
            if rep:  # the first round warms the kernels up
                times[name].append(time.perf_counter() - t)
    base = min(times["nearest (fused)"])
    for name, ts in times.items():
        print(f"{name:40s} best {min(ts):.3f} s  ({min(ts) / base:.2f}x nearest)")


if __name__ == "__main__":
    main()
