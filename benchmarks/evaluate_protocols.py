"""Benchmark: the paper metrics by both protocols (``ratgan`` and ``authors``) on the same
sets, and the memorisation check's false-positive and catch rates, on the phantom cohort.

    python benchmarks/evaluate_protocols.py [--subjects 48] [--msssim-comparisons 2100]
        [--cache FILE.npy]

Sets (all prepared as ``ratgan evaluate`` prepares scans):
* real: ``--subjects`` phantom subjects (the "training" scans, the reference of every metric);
* held-out: ``--subjects`` other subjects of the same cohort (the reference row);
* blurred: the held-out scans smoothed (Gaussian, sigma 1 voxel) with 2 % noise, a simple
  degraded set;
* copies: the real scans moved by 1-2 voxels and intensity-scaled (memorisation only).

Prints the table docs/evaluation.md quotes, and for memorisation: the share of never-seen real
scans (held-out) flagged as near-copies and the share of copies caught.  Not part of
pass/fail.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage


def _scans(seed: int, start: int, n: int) -> np.ndarray:
    from ratgan.data.phantom import make_subject, subject_seed
    from ratgan.evaluation.prepare import rescale_unit

    return np.stack(
        [rescale_unit(make_subject(subject_seed(seed, start + i))[0]) for i in range(n)]
    )


def _set(name: str, volumes: np.ndarray):
    from ratgan.evaluation.prepare import ScanSet

    return ScanSet(name, volumes, [Path(f"{name}-{i:03d}") for i in range(len(volumes))], name)


def _copies(volumes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from ratgan.evaluation.prepare import rescale_unit

    out = []
    for v in volumes:
        shift = rng.integers(-2, 3, 3)
        if np.abs(shift).max() == 0:
            shift[rng.integers(3)] = rng.choice([-2, -1, 1, 2])
        moved = ndimage.shift(v, shift, order=0, cval=0.0)  # integer shift, zero-filled
        out.append(rescale_unit(moved * rng.uniform(0.6, 1.4) + rng.uniform(0, 0.1)))
    return np.stack(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subjects", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--comparisons", type=int, default=21_000)
    ap.add_argument("--msssim-comparisons", type=int, default=2_100)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="keep the prepared phantom scans in this .npy file between runs",
    )
    args = ap.parse_args(argv)

    from scipy import ndimage

    from ratgan.evaluation import EvaluationSettings, evaluate
    from ratgan.evaluation.report import PAPER_COLUMNS, row_metrics, table

    t0 = time.perf_counter()
    n = args.subjects
    if args.cache is not None and args.cache.is_file():
        cohort = np.load(args.cache)
    else:
        cohort = _scans(args.seed, 0, 2 * n)
        if args.cache is not None:
            np.save(args.cache, cohort)
    if len(cohort) < 2 * n:
        raise SystemExit(f"{args.cache} holds {len(cohort)} scans, fewer than 2 x {n}")
    real = _set("real", cohort[:n])
    held_vols = cohort[n : 2 * n]
    held = _set("held-out", held_vols)
    rng = np.random.default_rng(args.seed)
    blurred = np.stack(
        [ndimage.gaussian_filter(v, 1.0) + 0.02 * rng.standard_normal(v.shape) for v in held_vols]
    ).astype(np.float32)
    from ratgan.evaluation.prepare import rescale_unit

    blurred = _set("blurred", np.stack([rescale_unit(v) for v in blurred]))
    copies = _set("copies", _copies(real.volumes, rng))
    print(f"{n} real, {n} held-out, {n} blurred, {n} copies ({time.perf_counter() - t0:.0f} s)")

    results = {}
    for protocol in ("ratgan", "authors"):
        settings = EvaluationSettings(
            seed=args.seed,
            protocol=protocol,
            progress=False,
            comparisons=args.comparisons,
            msssim_comparisons=args.msssim_comparisons,
            authors_epochs=args.epochs,
            split_repeats=2,
        )
        t = time.perf_counter()
        res = evaluate(real, [held, blurred], settings, heldout=held)
        results[protocol] = res
        last_settings = settings
        print(f"\nprotocol {protocol} ({time.perf_counter() - t:.0f} s)")
        print(table(res, PAPER_COLUMNS))

    print("\n| set | protocol | " + " | ".join(t for t, _ in PAPER_COLUMNS.values()) + " |")
    print("|---|---|" + "---|" * len(PAPER_COLUMNS))
    for name in ("held-out", "blurred"):
        row = "real vs held-out" if name == "held-out" else "blurred vs real"
        for protocol, res in results.items():
            m = row_metrics(res, name)
            cells = []
            for key in PAPER_COLUMNS:
                v = m[key]
                d = 2 if key in ("mmd", "psnr") else 4
                cells.append(f"{v['mean']:.{d}f} ± {v['std']:.{d}f}")
            print(f"| {row} | {protocol} | " + " | ".join(cells) + " |")
    for protocol, res in results.items():
        m = row_metrics(res, res.reference_row)["msssim"]
        print(f"{protocol}: real-set MS-SSIM {m['mean']:.4f} ± {m['std']:.4f}")

    from ratgan.evaluation.protocol import memorisation_check

    # calibrated on the real scans alone (leave-one-out), so the held-out scans are never-seen
    memo = memorisation_check(real, None, [held, copies], last_settings)
    ref = memo.reference
    print(
        f"\nmemorisation ({ref['similarity']}; threshold {ref['threshold']:.4f}, "
        f"{ref['threshold_rule']}):"
    )
    print(
        f"  real scans (leave-one-out, in-sample) flagged: {ref['near_copies']} / "
        f"{len(ref['nn_ncc'])} ({100 * ref['fraction']:.1f}%)"
    )
    for name, m in memo.synthetic.items():
        print(
            f"  {name}: {m['near_copies']} / {len(m['nn_ncc'])} flagged "
            f"({100 * m['fraction']:.1f}%)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
