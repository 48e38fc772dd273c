"""Benchmark: do the two feature spaces rank known corruptions of real scans correctly?

    python benchmarks/feature_space_validation.py [--subjects 96] [--seed 0] [--other-seed 1]
        [--reference-sizes 10 20] [--splits 3] [--cache-dir DIR]

On the built-in phantom cohort (subject i of ``--seed``, as ``ratgan data phantom`` writes it):
the first half of ``--subjects`` scans is the reference real set (and trains the anatomy
network with its label maps), the second half is the held-out real set.  Every row compares a
set with the reference in the random space (``ratgan.evaluation.features``) and in the anatomy
space (``ratgan.evaluation.anatomy``): held-out real scans (the known answer: what real scans
score), a cohort drawn with ``--other-seed`` (a control: the same distribution, so it should
score like the held-out set), and each corruption of the held-out scans
(``ratgan.evaluation.corruptions``) at three strengths.  Prints the anatomy network's
training (steps, held-out Dice curve, CPU time), the full table, whether each corruption is
ranked worse than held-out and monotonically with strength, and the costs.  Then, for each
of ``--reference-sizes``, the Fréchet distance of the held-out set and of the strongest
corruptions against ``--splits`` random reference subsets of that size (every compared set
subsampled to the same size, as ``ratgan evaluate`` does): the anatomy features stay
standardised by the whole reference set the network was fitted on.  Not part of pass/fail.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def cohort(seed: int, n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Prepared volumes (n, 64, 64, 40) in [0, 1] and label maps of phantom subjects."""
    from ratgan.data.phantom import make_subject, subject_seed
    from ratgan.evaluation.prepare import rescale_unit

    vols, labs = [], []
    for i in range(start, start + n):
        image, labels, _ = make_subject(subject_seed(seed, i))
        vols.append(rescale_unit(image))
        labs.append(labels)
    return np.stack(vols), np.stack(labs)


def main() -> None:
    from ratgan.evaluation import features as feat
    from ratgan.evaluation.anatomy import AnatomySettings, fit_anatomy_features
    from ratgan.evaluation.corruptions import CORRUPTIONS, METRICS, ranking, validation_rows

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--other-seed", type=int, default=1)
    ap.add_argument("--feature-seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=AnatomySettings().steps, help="at most")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reference-sizes", type=int, nargs="*", default=[10, 20])
    ap.add_argument("--splits", type=int, default=3)
    ap.add_argument(
        "--cache-dir",
        default=None,
        help="keep the trained anatomy network here (default: train afresh)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    half = args.subjects // 2
    t = time.perf_counter()
    real, labels = cohort(args.seed, half)
    held, _ = cohort(args.seed, args.subjects - half, half)
    other, _ = cohort(args.other_seed, args.subjects - half)
    print(
        f"cohort: {half} reference + {len(held)} held-out scans of seed {args.seed}, "
        f"{len(other)} of seed {args.other_seed}, rendered in {time.perf_counter() - t:.0f} s"
    )

    t, cpu = time.perf_counter(), time.process_time()
    space = fit_anatomy_features(
        real,
        labels,
        seed=args.feature_seed,
        settings=AnatomySettings(steps=args.steps, threads=args.threads),
        cache_dir=args.cache_dir,
    )
    fit_s, fit_cpu = time.perf_counter() - t, time.process_time() - cpu
    how = "loaded from the cache" if space.cached else "fitted"
    print(
        f"anatomy network: {how} in {fit_s:.0f} s wall, {fit_cpu:.0f} s CPU of this process "
        f"(training: {space.fit_seconds:.0f} s wall when fitted), {space.steps_run} of at most "
        f"{args.steps} steps, target {space.settings.target_dice} reached: {space.reached}; "
        f"{space.dim} of {space.raw_dim} features kept; Dice on {space.n_validation} held-out "
        f"labelled scans {space.val_dice}, on training scans {space.train_dice}"
    )
    print("held-out Dice curve (step: label 1 / 2 / 3):")
    for c in space.curve:
        print(f"  {c['step']}: " + " / ".join(f"{v:.3f}" for v in c["dice"].values()))
    rnd = feat.RandomConvFeatures(args.feature_seed)

    def random_features(v: np.ndarray) -> np.ndarray:
        return feat.extract(v, rnd, 4, progress=False)

    costs = {}
    for name, fn in (("anatomy", space.features), ("random", random_features)):
        t = time.perf_counter()
        fn(held)
        costs[name] = (time.perf_counter() - t) / len(held) * 100
    print("features: " + ", ".join(f"{k} {v:.1f} s per 100 scans" for k, v in costs.items()))

    t = time.perf_counter()
    rows = validation_rows(
        {"anatomy": space.features, "random": random_features},
        real,
        held,
        {f"other cohort (seed {args.other_seed})": other},
        seed=args.seed,
        standardised=("anatomy",),
    )
    print(f"table computed in {time.perf_counter() - t:.0f} s\n")

    spaces = ("anatomy", "random")
    titles = {"fd": "Fréchet ↓", "rbf_mmd2": "RBF-MMD² ↓", "precision": "P ↑", "recall": "R ↑"}
    print(
        "| set | strength | "
        + " | ".join(f"{s} {titles[m]}" for s in spaces for m in METRICS)
        + " |"
    )
    print("|---|---|" + "---|" * (len(spaces) * len(METRICS)))
    for r in rows:
        strength = "" if r["strength"] is None else f"{r['strength']:.3g}"
        unit = (
            f" ({CORRUPTIONS[r['set']][2]})"
            if r["set"] in CORRUPTIONS and r["strength"] == CORRUPTIONS[r["set"]][1][0]
            else ""
        )
        cells = [
            f"{r[s][m]:.2f}" if m == "fd" else f"{r[s][m]:.3f}" for s in spaces for m in METRICS
        ]
        print(f"| {r['set']}{unit} | {strength} | " + " | ".join(cells) + " |")

    print(
        "\nranked worse than held-out at every strength / monotonic in strength "
        "(P, R: strongest below held-out, never rising):"
    )
    print(
        "| corruption | " + " | ".join(f"{s} {titles[m]}" for s in spaces for m in METRICS) + " |"
    )
    print("|---|" + "---|" * (len(spaces) * len(METRICS)))
    checks = {(s, m): ranking(rows, s, m) for s in spaces for m in METRICS}
    for name in CORRUPTIONS:
        cells = []
        for s in spaces:
            for m in METRICS:
                c = checks[(s, m)][name]
                cells.append(
                    ("worse" if c["worse_than_heldout"] else "NOT worse")
                    + " / "
                    + ("mono" if c["monotonic"] else "NOT mono")
                )
        print(f"| {name} | " + " | ".join(cells) + " |")

    small_references(
        {"anatomy": space.features, "random": random_features},
        real,
        held,
        args.reference_sizes,
        args.splits,
        args.seed,
    )


def small_references(spaces, real, held, sizes, splits, seed) -> None:
    """Fréchet distance of held-out and strongest corruptions against small reference subsets
    (median and range over ``splits`` random subsets; compared sets subsampled alike)."""
    from ratgan.evaluation.anatomy import set_distances
    from ratgan.evaluation.corruptions import CORRUPTIONS, corrupt

    sets = {"held-out real": held}
    for k, (name, (_, strengths, _)) in enumerate(CORRUPTIONS.items()):
        if name in ("blur", "noise", "gamma", "shift"):
            sets[f"{name} {strengths[-1]:g}"] = corrupt(held, name, strengths[-1], seed + k)
    feats = {s: {n: fn(v) for n, v in sets.items()} for s, fn in spaces.items()}
    f_real = {s: fn(real) for s, fn in spaces.items()}
    rng = np.random.default_rng([seed, 99])
    print(
        "\nFréchet distance against small reference subsets: median [min, max] over "
        f"{splits} random subsets; anatomy features standardised by all {len(real)} "
        "reference scans, random features by each subset"
    )
    print(
        "| set | reference scans | anatomy Fréchet ↓ | anatomy, z-scored by the subset "
        "(before) | random Fréchet ↓ |"
    )
    print("|---|---|---|---|---|")
    columns = (("anatomy", False), ("anatomy", True), ("random", True))
    for size in sizes:
        draws = [
            (rng.choice(len(real), size, replace=False), rng.choice(len(held), size, replace=False))
            for _ in range(max(1, splits))
        ]
        for name in sets:
            cells = []
            for s, by_subset in columns:
                vals = [
                    set_distances(
                        f_real[s][ref_idx], feats[s][name][held_idx], standardise=by_subset
                    )["fd"]
                    for ref_idx, held_idx in draws
                ]
                cells.append(f"{np.median(vals):.1f} [{min(vals):.1f}, {max(vals):.1f}]")
            print(f"| {name} | {size} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
