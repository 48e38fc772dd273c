"""Benchmark: is a synthetic set's excess MS-SSIM missing anatomy variation, or missing noise?

    python benchmarks/diversity.py --reference NAME=DIR NAME=DIR [NAME=DIR ...]
        [--sigmas 0.7 1.0 1.5] [--pairs 300] [--seed 0]

MS-SSIM between scans of one set (the paper's diversity measure) is higher when scans are
alike, but also when they are smoother: independent noise in two real scans lowers their
fine-scale SSIM even where their anatomy agrees. A generator that draws less noise than the
scanner therefore looks "too alike" without drawing less varied anatomy. For every set (folders
of NIfTI scans, prepared as ``ratgan evaluate`` prepares them: rescaled to [0, 1] and cropped to
the first set's shape) this prints:

- within-set MS-SSIM over the same seeded pairs of scan indices (``pairs.within_msssim``, as
  ``ratgan evaluate`` measures it; the same indices in sets of equal size), raw and after the same
  Gaussian smoothing of every scan (``--sigmas``, voxels): smoothing removes fine texture from
  both sets alike, so a gap that survives it is a gap in coarser structure;
- ``xstd``: the cross-subject standard deviation of each voxel after smoothing by 1 voxel,
  averaged inside the head (voxels whose mean over the ``--reference`` set exceeds 0.1): how
  much the scans' anatomy varies, in intensity units, free of pairing;
- ``bg std``: the voxel standard deviation in the 6x6 corner columns (background noise).

The first set named in ``--reference`` defines the head mask. Prints one row per set; writes
nothing. Not part of pass/fail (tests/evaluation/test_diversity_benchmark.py checks the
definitions on volumes with known answers).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from ratgan.evaluation.pairs import within_msssim
from ratgan.evaluation.settings import EvaluationSettings


@dataclass
class Diversity:
    """The figures of one set."""

    msssim: dict[float, float]
    """Mean within-set MS-SSIM by smoothing sigma (0.0: raw)."""
    xstd: float
    bg_std: float


def smoothed(volumes: np.ndarray, sigma: float) -> np.ndarray:
    """Every volume smoothed by an isotropic Gaussian of ``sigma`` voxels (0: unchanged)."""
    if sigma == 0:
        return volumes
    return np.stack([gaussian_filter(v, sigma) for v in volumes]).astype(np.float32)


def diversity(
    volumes: np.ndarray, head: np.ndarray, sigmas: list[float], pairs: int = 300, seed: int = 0
) -> Diversity:
    """Within-set MS-SSIM raw and smoothed (``pairs`` pairs drawn with ``seed``, the same
    indices for every sigma and for every set of the same size), cross-subject std in
    ``head``, background std."""
    settings = EvaluationSettings(progress=False)
    smooth = {s: smoothed(volumes, s) for s in {0.0, 1.0, *sigmas}}  # each sigma once
    scores = {
        s: within_msssim(smooth[s], pairs, np.random.default_rng(seed), settings, "")["mean"]
        for s in [0.0, *sigmas]
    }
    xstd = float(smooth[1.0].std(axis=0)[head].mean())
    return Diversity(scores, xstd, float(volumes[:, :6, :6, :].std()))


def main(argv: list[str] | None = None) -> None:
    from ratgan.evaluation.prepare import load_set

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", required=True, help="NAME=DIR of the real scans")
    ap.add_argument("sets", nargs="+", help="NAME=DIR of further sets")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.7, 1.0, 1.5])
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    named = [args.reference, *args.sets]
    if any("=" not in a for a in named):
        ap.error("every set is NAME=DIR")
    loaded: dict[str, np.ndarray] = {}
    shape = None
    for k, (name, folder) in enumerate(a.split("=", 1) for a in named):
        # the reference's blank scans are refused, a generated set's measured as they are
        s = load_set(name, folder, shape, progress=False, blank="note" if k else "refuse")
        shape = s.shape
        loaded[name] = s.volumes
    head = next(iter(loaded.values())).mean(axis=0) > 0.1
    cols = " ".join(f"s={s:g}".rjust(7) for s in args.sigmas)
    print(f"{'set':14s} {'n':>3s} {'raw':>7s} {cols} {'xstd':>7s} {'bg std':>7s}")
    for name, vols in loaded.items():
        d = diversity(vols, head, args.sigmas, args.pairs, args.seed)
        row = " ".join(f"{d.msssim[s]:7.3f}" for s in [0.0, *args.sigmas])
        print(f"{name:14s} {len(vols):3d} {row} {d.xstd:7.4f} {d.bg_std:7.4f}")
    print(f"({args.pairs} pairs per set, seed {args.seed}; head: {head.sum()} voxels)")


if __name__ == "__main__":
    main()
