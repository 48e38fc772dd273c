"""Sampling time per scan of a latent diffusion run for several DDIM step counts.

    python benchmarks/ldm_sampling.py RUN [--steps 10 50 250] [--n 16] [--batch-size 8]
                                          [--precision bf16] [--out DIR]

Loads RUN's latest diffusion-stage checkpoint once, then for each step count times
``generate_scans`` (what `ratgan generate` calls: sampling, decoding, inverse preprocessing,
.nii.gz writing, manifest) on --n scans, and prints wall-clock and process CPU seconds per
scan.  The network weights do not change the cost.  On a machine shared with other jobs the
wall-clock figures are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from ratgan.generation import generate_scans


def main() -> None:
    """Parse the arguments, time each step count, print one JSON line per count."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 50, 250])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    print(json.dumps({"threads": torch.get_num_threads(), "n": args.n}))
    tmp = Path(tempfile.mkdtemp(prefix="ldm-sampling-"))
    try:
        # Warm-up with the timed batch size and precision: oneDNN builds its kernels for each
        # shape and data type on first use (about 2 s per batch of 8 in bf16 here), which
        # `ratgan generate` pays once per call, not per batch.
        generate_scans(
            args.run,
            args.batch_size,
            tmp / "warm",
            steps=2,
            batch_size=args.batch_size,
            precision=args.precision,
            device=args.device,
            progress=False,
        )
        for steps in args.steps:
            cpu, wall = time.process_time(), time.perf_counter()
            generate_scans(
                args.run,
                args.n,
                tmp / f"s{steps}",
                steps=steps,
                batch_size=args.batch_size,
                precision=args.precision,
                device=args.device,
                progress=False,
            )
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            row = {
                "steps": steps,
                "precision": args.precision,
                "batch_size": args.batch_size,
                "wall_s_per_scan": round(wall / args.n, 3),
                "cpu_s_per_scan": round(cpu / args.n, 3),
            }
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
