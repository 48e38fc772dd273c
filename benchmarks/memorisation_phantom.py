"""Benchmark: false positives and caught copies of the near-copy check on the phantom cohort.

    python benchmarks/memorisation_phantom.py [--pool 200] [--train 24] [--splits 40]
        [--cache FILE.npy]

A pool of phantom subjects is split at random, ``--splits`` times, into ``--train``
"training" scans and as many never-seen ones.  Per split, the threshold is calibrated on
the training scans' leave-one-out nearest neighbours (no held-out set), then applied to the
never-seen scans (each flagged one is a false positive) and to copies of the training scans
moved by 1-2 voxels and rescaled in intensity, without and with 2 % noise.  Prints the
flagged shares for several rules, the default (a fitted tail at 1 %) among them, plus the
plain-NCC rule used before.  Not part of pass/fail.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage


def copy_of(volume: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """``volume`` moved by 1-2 voxels on random axes, rescaled, with optional noise."""
    from ratgan.evaluation.prepare import rescale_unit

    while True:
        shift = rng.integers(-2, 3, 3)
        if np.abs(shift).max() >= 1:
            break
    out = ndimage.shift(volume, shift, order=0, cval=0.0)  # integer shift, zero-filled
    out = out * rng.uniform(0.6, 1.4) + rng.uniform(0, 0.1)
    return rescale_unit(out + noise * rng.standard_normal(out.shape))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", type=int, default=200)
    ap.add_argument("--train", type=int, default=24)
    ap.add_argument("--splits", type=int, default=40)
    ap.add_argument("--seed", type=int, default=5, help="phantom cohort seed")
    ap.add_argument("--split-seed", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=None)
    args = ap.parse_args(argv)

    from ratgan.data.phantom import make_subject, subject_seed
    from ratgan.evaluation import memorisation as mem
    from ratgan.evaluation.prepare import rescale_unit

    if args.cache is not None and args.cache.is_file():
        vols = np.load(args.cache)[: args.pool]
    else:
        vols = np.stack(
            [rescale_unit(make_subject(subject_seed(args.seed, i))[0]) for i in range(args.pool)]
        )
        if args.cache is not None:
            np.save(args.cache, vols)
    rng = np.random.default_rng(args.split_seed)
    n = args.train
    rules = ["old: max, global NCC", "max", "95th percentile", "fit 0.001", "fit 0.01", "fit 0.05"]
    got: dict[str, list[tuple[float, float, float]]] = {r: [] for r in rules}
    for _ in range(args.splits):
        perm = rng.permutation(len(vols))
        train, new = vols[perm[:n]], vols[perm[n : 2 * n]]
        copies = np.stack([copy_of(v, rng, 0.0) for v in train])
        noisy = np.stack([copy_of(v, rng, 0.02) for v in train])
        loo, _ = mem.nearest(train, train, exclude_self=True)
        sims = [mem.nearest(s, train)[0] for s in (new, copies, noisy)]
        plain_loo, _ = mem.nearest(train, train, exclude_self=True, max_shift=0)
        plain = [mem.nearest(s, train, max_shift=0)[0] for s in (new, copies, noisy)]
        thresholds = {
            "max": loo.max(),
            "95th percentile": np.quantile(loo, 0.95),
            **{f"fit {a}": mem.calibrate(loo, a).value for a in (0.001, 0.01, 0.05)},
        }
        got["old: max, global NCC"].append(tuple(np.mean(s > plain_loo.max()) for s in plain))
        for rule, thr in thresholds.items():
            got[rule].append(tuple(np.mean(s > thr) for s in sims))
    print(
        f"{args.splits} splits of {n} training + {n} never-seen phantom subjects "
        f"(pool {len(vols)}, cohort seed {args.seed})\n"
    )
    print(
        "| rule | never-seen flagged: mean | worst split | copies caught: mean | worst split "
        "| copies + 2 % noise caught: mean | worst split |"
    )
    print("|---|---|---|---|---|---|---|")
    for rule, rows in got.items():
        a = np.asarray(rows)
        print(
            f"| {rule} | {100 * a[:, 0].mean():.1f}% | {100 * a[:, 0].max():.1f}% | "
            f"{100 * a[:, 1].mean():.1f}% | {100 * a[:, 1].min():.1f}% | "
            f"{100 * a[:, 2].mean():.1f}% | {100 * a[:, 2].min():.1f}% |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
