"""Uncertainty of the set-level distances against held-out real scans.

With ``--heldout`` the reference set A (the real scans) and the held-out set B are fixed, so
repeating random splits gives no spread at all (the report used to print "± 0.00").  Two
numbers say how much the distances could move with other scans:

* **Bootstrap over scans** (``bootstrap``): each draw resamples A's scans and the compared
  set's scans with replacement and recomputes the Fréchet distance, RBF-MMD², precision,
  recall, density and coverage; the standard deviation over draws is the "±", and the
  95 % interval in metrics.json is the reported value ± 1.96 of it (clipped to the
  measure's range).  Standardisation and kernel bandwidth stay those of the whole A, so the
  kernel is the same in every draw.  A scan drawn twice shrinks the k-NN balls (its nearest
  neighbour is itself) and lifts the Fréchet distance and RBF-MMD² (fewer distinct scans),
  so the draws sit off the reported value: their own 2.5-97.5 % percentiles held the
  expected Fréchet distance of two 30-scan samples in 8 % of samples, RBF-MMD² in 70 %,
  coverage in 35 % (tests/evaluation/test_set_uncertainty.py), while their spread is a fair
  std (for the Fréchet distance and RBF-MMD² 1.2 times the spread over fresh samples).
  Read the k-NN measures' ± as a rough guide.
* **Permutation p-value of RBF-MMD²** (``mmd_permutation_p``): is this set distinguishable
  from the held-out real scans?  The two sets' labels are permuted over their pooled scans
  (seeded) and the unbiased MMD² recomputed with the same kernel; p = (1 + permutations
  with MMD² at least the observed) / (1 + permutations).  For a set drawn from the same
  distribution as the held-out scans p is uniform on (0, 1]; a set that differs gives small
  p (tests/evaluation/test_set_uncertainty.py checks both).
"""

from __future__ import annotations

from collections.abc import Mapping
from statistics import NormalDist
from typing import Any

import numpy as np

from ratgan.evaluation import features as feat

METRICS = ("rbf_mmd", "fd", "precision", "recall", "density", "coverage")
RANGES: dict[str, tuple[float, float]] = {
    "rbf_mmd": (-np.inf, np.inf),
    "fd": (0.0, np.inf),
    "precision": (0.0, 1.0),
    "recall": (0.0, 1.0),
    "density": (0.0, np.inf),
    "coverage": (0.0, 1.0),
}
"""The values each distance can take (the unbiased RBF-MMD² can be negative)."""


def _distances(za: np.ndarray, zs: np.ndarray, sigma: float, k: int) -> dict[str, float]:
    p, r = feat.precision_recall(za, zs, k)
    density, coverage = feat.density_coverage(za, zs, k)
    return {
        "rbf_mmd": feat.rbf_mmd2(za, zs, sigma),
        "fd": feat.frechet_distance(za, zs),
        "precision": p,
        "recall": r,
        "density": density,
        "coverage": coverage,
    }


def bootstrap(
    za: np.ndarray,
    zs: np.ndarray,
    size: int,
    sigma: float,
    k: int,
    draws: int,
    rng: np.random.Generator,
    centre: Mapping[str, float],
    level: float = 0.95,
) -> dict[str, dict[str, Any]]:
    """Bootstrap std of each distance of ``size`` scans of the (standardised) set ``zs``
    against the reference ``za``, both resampled per draw, and the normal ``level`` interval
    ``centre[metric]`` ± z std (``centre``: the reported values), clipped to ``RANGES``."""
    z = NormalDist().inv_cdf(0.5 + level / 2)
    values: dict[str, list[float]] = {m: [] for m in METRICS}
    for _ in range(draws):
        a = za[rng.integers(0, len(za), len(za))]
        s = zs[rng.integers(0, len(zs), size)]
        for m, x in _distances(a, s, sigma, k).items():
            values[m].append(x)
    out: dict[str, dict[str, Any]] = {}
    for m, v in values.items():
        arr = np.asarray(v)
        std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
        lo, hi = RANGES[m]
        c = float(centre[m])
        out[m] = {
            "std": std,
            "ci": [float(max(lo, c - z * std)), float(min(hi, c + z * std))],
            "draws": int(len(arr)),
        }
    return out


def _mmd2_from_kernel(kernel: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Unbiased MMD² for each boolean membership row of ``first`` (p, n) over a pooled
    kernel matrix (n, n) with a zero diagonal."""
    f = first.astype(float)
    g = 1.0 - f
    n_f, n_g = f.sum(1), g.sum(1)
    kf, kg = f @ kernel, g @ kernel
    t_ff = (kf * f).sum(1) / (n_f * (n_f - 1))
    t_gg = (kg * g).sum(1) / (n_g * (n_g - 1))
    t_fg = (kf * g).sum(1) / (n_f * n_g)
    return t_ff + t_gg - 2 * t_fg


def mmd_permutation_p(
    x: np.ndarray, y: np.ndarray, sigma: float, permutations: int, rng: np.random.Generator
) -> float:
    """Permutation p-value of the unbiased RBF-MMD² between feature sets ``x`` and ``y``."""
    pooled = np.concatenate([x, y])
    gamma = 1.0 / (2 * sigma**2)
    kernel = np.exp(-gamma * feat.sq_dists(pooled, pooled))
    np.fill_diagonal(kernel, 0.0)
    n = len(pooled)
    observed = np.zeros((1, n), dtype=bool)
    observed[0, : len(x)] = True
    first = np.zeros((permutations, n), dtype=bool)
    for i in range(permutations):
        first[i, rng.permutation(n)[: len(x)]] = True
    stat = _mmd2_from_kernel(kernel, observed)[0]
    null = _mmd2_from_kernel(kernel, first)
    return float((1 + np.sum(null >= stat - 1e-12)) / (1 + permutations))
