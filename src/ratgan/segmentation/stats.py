"""Paired statistics of the segmentation benchmark: does a test differ from test 1?

Every test is scored on the same held-out real scans with the same seeds as test 1, so each
(seed, test scan) gives one paired difference ΔDice = Dice(test) - Dice(test 1).  Over those
pairs we report the mean ΔDice, a two-way percentile bootstrap 95 % confidence interval of the
mean and the Wilcoxon signed-rank p-value of the pairs (scipy).  The verdict comes from the
interval: "helped" when it lies above 0, "hurt" when below, "no detectable difference" when
it holds 0.

Why two-way: the seeds and the test scans are crossed (every seed scores every scan), and the
pairs of one seed share a trained network.  Resampling the pairs as if they were independent
ignores the network-to-network variation: on the phantom cohort one seed whose test-1
network trained badly made conventional augmentation look like a significant gain (pairs
bootstrap [+0.002, +0.011]) although four of the five seeds were slightly worse.  Each
bootstrap draw here resamples the seeds and, independently, the test scans with replacement
and takes the mean over the crossed draw (the bootstrap for crossed random effects), so the
interval is as wide as both sources of variation make it.  The Wilcoxon p-value still treats
the pairs as independent and is reported only beside the interval; the number of seeds whose
mean ΔDice is positive is reported too.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ratgan.arrays import FloatArray

COLLAPSE_DICE = 0.1
"""A (test, seed) whose mean Dice of any tissue is below this is a collapsed network."""
TISSUE_SCORES = ("GM", "WM", "CSF")


@dataclass
class PairedComparison:
    """One test against test 1 on one score."""

    test: int
    score: str
    n_pairs: int
    mean_delta: float
    ci_low: float
    ci_high: float
    p_wilcoxon: float
    verdict: str
    n_seeds: int
    """Seeds with at least one pair."""
    seeds_better: int
    """Seeds whose mean ΔDice over their test scans is above 0."""

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)


def paired_delta_matrix(runs: list[dict], test: int, score: str, base: int = 1) -> FloatArray:
    """ΔDice of ``test`` minus ``base``, one row per seed both have run and one column per
    test scan; NaN where either run has no score for the scan."""
    by = {(r["test"], r["seed"]): r for r in runs}
    rows: list[list[float]] = []
    for (t, seed), r in sorted(by.items()):
        if t != test or (base, seed) not in by:
            continue
        a = r["per_scan"][score]
        b = by[(base, seed)]["per_scan"][score]
        rows.append(
            [math.nan if x is None or y is None else x - y for x, y in zip(a, b, strict=True)]
        )
    return np.asarray(rows, dtype=float).reshape(len(rows), -1)


def paired_deltas(runs: list[dict], test: int, score: str, base: int = 1) -> FloatArray:
    """ΔDice of ``test`` minus ``base`` over the (seed, test scan) pairs both have scored,
    seed by seed."""
    d = paired_delta_matrix(runs, test, score, base)
    return d[~np.isnan(d)]


def bootstrap_ci(
    values: FloatArray, n_boot: int = 10000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (seeded), NaNs left out.

    A 1-D array resamples its entries.  A 2-D array (seeds x test scans) resamples its rows
    and, independently, its columns, and takes the mean over the crossed draw (two-way).
    """
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]  # a column of entries: the two-way draw of one column
    elif values.ndim != 2:
        raise ValueError(f"values must be 1-D or 2-D, got shape {values.shape}")
    known = ~np.isnan(values)
    if not known.any():
        return float("nan"), float("nan")
    rng = np.random.default_rng([seed, 5150])
    n_rows, n_cols = values.shape
    rows = rng.integers(0, n_rows, (n_boot, n_rows, 1))
    cols = rng.integers(0, n_cols, (n_boot, 1, n_cols))
    total = np.where(known, values, 0.0)[rows, cols].sum(axis=(1, 2))
    count = known[rows, cols].sum(axis=(1, 2))
    means = total[count > 0] / count[count > 0]  # a draw of only missing pairs has no mean
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def wilcoxon_p(deltas: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the paired differences (1.0 if all are 0)."""
    from scipy.stats import wilcoxon

    deltas = np.asarray(deltas, dtype=float)
    if deltas.size == 0:
        return float("nan")
    if not np.any(deltas):
        return 1.0
    return float(wilcoxon(deltas).pvalue)


def verdict(ci_low: float, ci_high: float) -> str:
    """'helped' / 'hurt' / 'no detectable difference' from a confidence interval of ΔDice."""
    if np.isnan(ci_low) or np.isnan(ci_high):
        return "not compared"
    if ci_low > 0:
        return "helped"
    if ci_high < 0:
        return "hurt"
    return "no detectable difference"


def compare(runs: list[dict], test: int, score: str, seed: int = 0) -> PairedComparison:
    """``test`` against test 1 on ``score`` over their shared (seed, scan) pairs."""
    matrix = paired_delta_matrix(runs, test, score)
    known = ~np.isnan(matrix)
    d = matrix[known]
    lo, hi = bootstrap_ci(matrix, seed=seed)
    seed_means = [float(row[ok].mean()) for row, ok in zip(matrix, known, strict=True) if ok.any()]
    return PairedComparison(
        test,
        score,
        int(d.size),
        float(d.mean()) if d.size else float("nan"),
        lo,
        hi,
        wilcoxon_p(d),
        verdict(lo, hi),
        n_seeds=len(seed_means),
        seeds_better=sum(m > 0 for m in seed_means),
    )


def collapses(runs: list[dict], threshold: float = COLLAPSE_DICE) -> list[dict]:
    """The (test, seed) runs whose mean Dice of any tissue fell below ``threshold``."""
    out = []
    for r in sorted(runs, key=lambda r: (r["test"], r["seed"])):
        low = {
            s: r["scores"][s]
            for s in TISSUE_SCORES
            if not np.isnan(r["scores"][s]) and r["scores"][s] < threshold
        }
        if low:
            out.append(
                {
                    "test": r["test"],
                    "seed": r["seed"],
                    "tissues": {k: round(float(v), 4) for k, v in low.items()},
                }
            )
    return out
