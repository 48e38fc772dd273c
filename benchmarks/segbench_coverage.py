"""Benchmark: coverage of segbench's 95 % ΔDice interval on simulated benchmarks.

    python benchmarks/segbench_coverage.py [--reps 1000] [--seeds 5] [--scans 13] [--seed 0]

Each simulated benchmark is a seeds x test scans table of paired ΔDice drawn from a crossed
random-effects model with true mean -0.01 (``ratgan.segmentation.coverage.DESIGNS``).  Prints,
per design, the share of ``--reps`` benchmarks whose interval holds -0.01 and the mean
interval width for: the crossed random-effects interval segbench reports, the two-way
percentile bootstrap it reported before (2,000 draws) and a t interval over the pairs as if
they were independent.  Not pass/fail (tests/segmentation/test_stats.py asserts the bounds).
"""

from __future__ import annotations

import argparse
import math
import sys
import time

from ratgan.segmentation.coverage import DESIGNS, coverage


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--scans", type=int, default=13)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    mc = 100 * math.sqrt(0.95 * 0.05 / args.reps)
    print(
        f"{args.reps} simulated benchmarks per design, {args.seeds} seeds x {args.scans} "
        f"test scans, true ΔDice -0.01 (Monte-Carlo standard error at 95 %: {mc:.1f} points)\n"
    )
    print(
        "| design (sd seed / scan / residual) | crossed random effects (segbench) "
        "| two-way bootstrap (before) | pairs as independent |"
    )
    print("|---|---|---|---|")
    for d in DESIGNS:
        got = coverage(d, args.reps, args.seeds, args.scans, args.seed, bootstrap_reps=args.reps)
        cells = [
            f"{100 * got[m]['coverage']:.1f} % (width {got[m]['width']:.4f})"
            for m in ("crossed", "bootstrap", "pairs")
        ]
        label = f"{d.name} ({d.sd_seed:g} / {d.sd_scan:g} / {d.sd_resid:g})"
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(f"\n{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
