"""Paired statistics of the segmentation benchmark: does a test differ from test 1?

Every test is scored on the same held-out real scans with the same seeds as test 1, so each
(seed, test scan) gives one paired difference ΔDice = Dice(test) - Dice(test 1).  Over those
pairs we report the mean ΔDice, a percentile bootstrap 95 % confidence interval of the mean
(pairs resampled with replacement, seeded) and the Wilcoxon signed-rank p-value (scipy).
The verdict comes from the interval: "helped" when it lies above 0, "hurt" when below,
"no detectable difference" when it holds 0.

The pairs are not independent (the scans of one seed share a network), so the interval is
optimistic when networks differ a lot between seeds; the per-seed means are reported too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

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

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)


def paired_deltas(runs: list[dict], test: int, score: str, base: int = 1) -> np.ndarray:
    """ΔDice of ``test`` minus ``base`` over the (seed, test scan) pairs both have scored."""
    by = {(r["test"], r["seed"]): r for r in runs}
    out: list[float] = []
    for (t, seed), r in sorted(by.items()):
        if t != test or (base, seed) not in by:
            continue
        a = r["per_scan"][score]
        b = by[(base, seed)]["per_scan"][score]
        out += [x - y for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    return np.asarray(out, dtype=float)


def bootstrap_ci(
    values: np.ndarray, n_boot: int = 10000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (seeded)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng([seed, 5150])
    means = values[rng.integers(0, values.size, (n_boot, values.size))].mean(1)
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
    d = paired_deltas(runs, test, score)
    lo, hi = bootstrap_ci(d, seed=seed)
    return PairedComparison(
        test,
        score,
        int(d.size),
        float(d.mean()) if d.size else float("nan"),
        lo,
        hi,
        wilcoxon_p(d),
        verdict(lo, hi),
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
