"""Benchmark: what anti-aliased up-sampling costs in the demo generator (forward + backward).

    python benchmarks/upsample_cost.py [--repeats 5] [--threads 1]

Times G(z) forward and backward (bf16 autocast, batch 8 as in the E/G phase) for the demo
architecture with nearest up-sampling (fused, the paper's layers), trilinear in the last two
blocks in the fused form (nearest conv, then a binomial blur) and in the literal form
(interpolate, then conv), and the `long` generator (trilinear last two blocks and a final
full-resolution conv) with the blur as ratgan runs it (one autograd Function) and as it was
written before (autograd through replicate padding and slices).  The variants run interleaved,
so a busy machine slows all alike; the printed ratios are measured in one run.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import Tensor

import ratgan.models.layers as layers
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
    "long (trilinear last 2 + final conv)": {"preset": "long"},
    "long, blur through padded slices": {"preset": "long", "blur": "slices"},
}


def blur_through_slices(x: Tensor) -> Tensor:
    """The blur as first written: autograd through replicate padding and slices."""
    p = F.pad(x, (1, 1, 1, 1, 1, 1), mode="replicate")
    p = p[:, :, :-2] + 2 * p[:, :, 1:-1] + p[:, :, 2:]
    p = p[:, :, :, :-2] + 2 * p[:, :, :, 1:-1] + p[:, :, :, 2:]
    p = p[..., :-2] + 2 * p[..., 1:-1] + p[..., 2:]
    return p * (1.0 / 64.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gens = {}
    function_blur = layers.binomial_blur3d
    for name, variant in VARIANTS.items():
        over = {k: v for k, v in variant.items() if k.startswith("model.")}
        cfg = load_config(variant.get("preset", "demo"), over)
        torch.manual_seed(0)
        g = build_networks(cfg.model).generator.to(memory_format=torch.channels_last_3d)
        blur = blur_through_slices if variant.get("blur") == "slices" else function_blur
        gens[name] = (g, cfg.model.latent_dim, blur)
    times: dict[str, list[float]] = {k: [] for k in gens}
    for rep in range(args.repeats + 1):
        for name, (g, latent, blur) in gens.items():
            layers.binomial_blur3d = blur  # UpsampleConvBlock looks the blur up at call time
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
