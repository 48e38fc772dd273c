"""Benchmark: realised false positives and caught copies of the near-copy threshold.

    python benchmarks/memorisation_phantom.py [--pool 200] [--train 24 32 64] [--splits 1000]
        [--cache FILE.npz]

A pool of phantom subjects is split at random, ``--splits`` times per training size, into
``--train`` "training" scans and the rest.  Per split the threshold is fitted on the training
scans' leave-one-out nearest neighbours (as ``ratgan evaluate`` does), and its **realised
false-positive rate** is the share of all the other pool subjects (never seen) whose most
similar training scan lies above it.  Copies of the training scans moved by 1-2 voxels and
rescaled in intensity, without and with 2 % noise, must be caught.  The shift-tolerant
similarity of every pool subject to every other (and of each copy to its original) is
computed once, so each split only indexes it.  Prints, per rule and training size, the mean
realised rate, its 90th percentile and maximum, the share of splits above 2 % and 5 %, and
the shares of copies caught (a copy's nearest training similarity is at least the one to
its original, so that lower bound is what is checked).  Not part of pass/fail
(tests/evaluation/test_memorisation.py asserts the bounds on a smaller pool).
"""

from __future__ import annotations

import argparse
import sys
import time
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


def pool_similarities(vols: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Similarity of every pool subject to every other, and of each subject's two copies
    (plain, 2 % noise) to their original."""
    from ratgan.evaluation import memorisation as mem

    rng = np.random.default_rng([seed, 77])
    sim = mem.similarity_matrix(vols, vols)
    copies = {}
    for name, noise in (("copy", 0.0), ("noisy", 0.02)):
        copies[name] = np.array(
            [mem.similarity_matrix(copy_of(v, rng, noise)[None], v[None])[0, 0] for v in vols]
        )
    return {"sim": sim, **copies}


def split_rates(s: dict[str, np.ndarray], train: int, splits: int, seed: int, rule) -> np.ndarray:
    """(splits, 3): realised false-positive rate, copies caught, noisy copies caught."""
    rng = np.random.default_rng([seed, train])
    n = len(s["sim"])
    out = np.empty((splits, 3))
    for k in range(splits):
        perm = rng.permutation(n)
        tr, new = perm[:train], perm[train:]
        block = s["sim"][np.ix_(tr, tr)].copy()
        np.fill_diagonal(block, -np.inf)
        thr = rule(block.max(axis=1))
        out[k] = (
            np.mean(s["sim"][np.ix_(new, tr)].max(axis=1) > thr),
            np.mean(s["copy"][tr] > thr),
            np.mean(s["noisy"][tr] > thr),
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", type=int, default=200)
    ap.add_argument("--train", type=int, nargs="+", default=[24, 32, 64])
    ap.add_argument("--splits", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=5, help="phantom cohort seed")
    ap.add_argument("--split-seed", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=None, help="keep the similarities here")
    args = ap.parse_args(argv)

    from ratgan.data.phantom import make_subject, subject_seed
    from ratgan.evaluation import memorisation as mem
    from ratgan.evaluation.prepare import rescale_unit

    t0 = time.perf_counter()
    if args.cache is not None and args.cache.is_file():
        s = dict(np.load(args.cache))
    else:
        vols = np.stack(
            [rescale_unit(make_subject(subject_seed(args.seed, i))[0]) for i in range(args.pool)]
        )
        s = pool_similarities(vols, args.split_seed)
        if args.cache is not None:
            np.savez(args.cache, **s)
    print(
        f"pool of {len(s['sim'])} phantom subjects (cohort seed {args.seed}), similarities in "
        f"{time.perf_counter() - t0:.0f} s; {args.splits} random splits per training size\n"
    )
    rules = {
        "plug-in 99 % quantile (before)": lambda nn: (
            1 - np.exp(-(np.mean(t := -np.log1p(-nn)) + 2.3263 * np.std(t, ddof=1)))
        ),
        "tolerance bound 1 % / 95 % (now)": lambda nn: mem.calibrate(nn).value,
    }
    print(
        "| rule | training scans | realised false positives: mean | 90th percentile | max "
        "| splits above 2 % | splits above 5 % | copies caught (worst split) "
        "| copies + 2 % noise caught (worst split) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, rule in rules.items():
        for n in args.train:
            r = split_rates(s, n, args.splits, args.split_seed, rule)
            fp = 100 * r[:, 0]
            print(
                f"| {name} | {n} | {fp.mean():.2f} % | {np.percentile(fp, 90):.2f} % | "
                f"{fp.max():.2f} % | {np.mean(fp > 2):.1%} | {np.mean(fp > 5):.1%} | "
                f"{100 * r[:, 1].mean():.1f} % ({100 * r[:, 1].min():.1f} %) | "
                f"{100 * r[:, 2].mean():.1f} % ({100 * r[:, 2].min():.1f} %) |"
            )
    print(f"\n{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
