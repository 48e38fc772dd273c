"""Paired statistics of the segmentation benchmark: does a test differ from test 1?

Every test is scored on the same held-out real scans with the same seeds as test 1, so each
(seed, test scan) gives one paired difference ΔDice = Dice(test) - Dice(test 1).  The seeds
and the test scans are crossed (every seed scores every scan) and both are samples: the
seeds of networks that could have been trained, the scans of scans that could have been
tested.  The differences are modelled as crossed random effects,

    ΔDice[seed i, scan j] = mu + a_i + b_j + e_ij,
    a_i ~ N(0, var_seed), b_j ~ N(0, var_scan), e_ij ~ N(0, var_resid),

and mu, the mean ΔDice over networks and scans, is what the verdict is about.  On the
complete seeds x scans table the variance components come from the two-way ANOVA mean
squares (method of moments, each truncated at 0), Var(mean) = var_seed / S + var_scan / T +
var_resid / (S T), and the 95 % interval and the two-sided p-value come from a t
distribution with Satterthwaite's degrees of freedom for that combination of mean squares.
Its coverage is measured by simulation (``coverage`` and benchmarks/segbench_coverage.py,
docs/segmentation.md): 95 % within Monte-Carlo error when the effects are Gaussian,
whichever source dominates.  The two-way percentile bootstrap used before covered only 84 %
with 5 seeds when the seeds' variance dominates, because 5 resampled seeds understate it;
``bootstrap_ci`` keeps it for that comparison.

Beside the interval: an exact sign-flip test on the seed means (with S seeds its smallest
p-value is 2 / 2^S: 0.0625 for 5), the number of seeds whose mean ΔDice is positive, and
the smallest ΔDice the run could detect (``detectable``) with how many seeds would halve it.
Nothing here treats the (seed, scan) pairs as independent.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

from ratgan.arrays import FloatArray

COLLAPSE_DICE = 0.1
"""A (test, seed) whose mean Dice of any tissue is below this is a collapsed network."""
TISSUE_SCORES = ("GM", "WM", "CSF")
LEVEL = 0.95
"""Confidence level of the intervals (two-sided)."""
POWER = 0.8
"""Power at which the smallest detectable ΔDice is stated."""
MAX_SEEDS = 1000
"""The largest number of seeds considered when asking how many would halve that ΔDice."""


@dataclass
class CrossedFit:
    """The crossed random-effects fit of one complete seeds x scans table of ΔDice."""

    mean: float
    se: float
    """Standard error of the mean (0 when every difference is equal)."""
    df: float
    """Satterthwaite degrees of freedom of ``se``."""
    var_seed: float
    var_scan: float
    var_resid: float
    n_seeds: int
    n_scans: int

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        """Two-sided t interval of the mean."""
        half = _t_quantile(0.5 + level / 2, self.df) * self.se
        return self.mean - half, self.mean + half

    def p_value(self) -> float:
        """Two-sided p-value of mean = 0 from the same t distribution."""
        from scipy.stats import t

        if self.se == 0:
            return 1.0 if self.mean == 0 else 0.0
        return float(2 * t.sf(abs(self.mean) / self.se, self.df))


@dataclass
class PairedComparison:
    """One test against test 1 on one score."""

    test: int
    score: str
    n_pairs: int
    """(seed, scan) pairs in the complete table the model was fitted to."""
    n_seeds: int
    n_scans: int
    mean_delta: float
    ci_low: float
    ci_high: float
    p_value: float
    """Two-sided, from the crossed random-effects model (t, Satterthwaite df)."""
    df: float
    se: float
    var_seed: float
    var_scan: float
    var_resid: float
    verdict: str
    seeds_better: int
    """Seeds whose mean ΔDice over the test scans is above 0."""
    p_seed_signs: float
    """Exact two-sided sign-flip p-value of the seed means (at least 2 / 2^n_seeds)."""
    detectable: float
    """The smallest |ΔDice| this design detects with ``POWER`` at the 5 % level."""
    seeds_to_halve: int | None
    """Seeds that would halve ``detectable`` with these scans (None: more seeds cannot)."""

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)


def _t_quantile(q: float, df: float) -> float:
    """Quantile of Student's t (the normal's for infinite df; NaN for NaN df)."""
    from scipy.stats import t

    return float(t.ppf(q, df))


def mean_squares(d: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Two-way ANOVA mean squares (seeds, scans, residual) of complete tables (..., S, T)."""
    s, t = d.shape[-2:]
    grand = d.mean(axis=(-2, -1), keepdims=True)
    rows = d.mean(axis=-1, keepdims=True)
    cols = d.mean(axis=-2, keepdims=True)
    ms_seed = t * ((rows - grand) ** 2).sum(axis=(-2, -1)) / (s - 1)
    ms_scan = s * ((cols - grand) ** 2).sum(axis=(-2, -1)) / (t - 1)
    resid = d - rows - cols + grand
    ms_resid = (resid**2).sum(axis=(-2, -1)) / ((s - 1) * (t - 1))
    return ms_seed, ms_scan, ms_resid


def combine(
    ms_seed: FloatArray, ms_scan: FloatArray, ms_resid: FloatArray, s: int, t: int
) -> dict[str, FloatArray]:
    """Variance components (method of moments, truncated at 0), the variance of the grand
    mean and its Satterthwaite degrees of freedom, from the mean squares of S x T tables.

    E[MS_seed] = var_resid + T var_seed, E[MS_scan] = var_resid + S var_scan and
    E[MS_resid] = var_resid, so Var(mean) = (MS_seed + MS_scan - MS_resid) / (S T) when
    both components are positive; a component truncated at 0 drops its mean square and the
    residual's coefficient moves to the other (e.g. var_seed = 0: Var(mean) = MS_scan / ST).
    """
    var_seed = np.maximum(0.0, (ms_seed - ms_resid) / t)
    var_scan = np.maximum(0.0, (ms_scan - ms_resid) / s)
    c_seed = (var_seed > 0).astype(float)
    c_scan = (var_scan > 0).astype(float)
    c_resid = 1.0 - c_seed - c_scan
    terms = (
        (c_seed * ms_seed, s - 1),
        (c_scan * ms_scan, t - 1),
        (c_resid * ms_resid, (s - 1) * (t - 1)),
    )
    total = np.asarray(sum(term for term, _ in terms), dtype=float)
    denom = np.asarray(sum(term**2 / df for term, df in terms), dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where(denom > 0, total**2 / np.where(denom > 0, denom, 1.0), np.inf)
    return {
        "var_seed": var_seed,
        "var_scan": var_scan,
        "var_resid": ms_resid,
        "var_mean": total / (s * t),
        "df": df,
    }


def complete_table(matrix: FloatArray) -> FloatArray:
    """The seeds x scans table without missing values: seeds with no pair dropped, then
    every scan that lacks a pair for some remaining seed (an empty table stays empty)."""
    m = np.asarray(matrix, dtype=float)
    m = m.reshape(len(m), -1) if m.size else np.zeros((len(m), 0))
    m = m[~np.isnan(m).all(axis=1)]
    return m[:, ~np.isnan(m).any(axis=0)]


def fit_crossed(table: FloatArray) -> CrossedFit:
    """Crossed random-effects fit of a complete seeds x scans table of ΔDice.

    One seed: the seeds' variance cannot be estimated and the interval covers the scans'
    (and residual) variation only; one scan: the seeds' only; one pair: no interval.
    """
    d = np.asarray(table, dtype=float)
    s, t = d.shape
    mean = float(d.mean()) if d.size else float("nan")
    nan = float("nan")
    if s >= 2 and t >= 2:
        c = combine(*mean_squares(d), s, t)
        return CrossedFit(
            mean,
            float(np.sqrt(c["var_mean"])),
            float(c["df"]),
            float(c["var_seed"]),
            float(c["var_scan"]),
            float(c["var_resid"]),
            s,
            t,
        )
    if d.size >= 2:  # one row or one column: a one-sample t interval along it
        v = d.ravel()
        se = float(v.std(ddof=1) / math.sqrt(v.size))
        return CrossedFit(mean, se, float(v.size - 1), nan, nan, nan, s, t)
    return CrossedFit(mean, nan, nan, nan, nan, nan, s, t)


def detectable(fit: CrossedFit, level: float = LEVEL, power: float = POWER) -> float:
    """The smallest |ΔDice| a two-sided test at ``1 - level`` detects with ``power``, for
    the fitted design and variance components: (t_{1-alpha/2} + t_power) x se."""
    if not math.isfinite(fit.se):
        return float("nan")
    return (_t_quantile(0.5 + level / 2, fit.df) + _t_quantile(power, fit.df)) * fit.se


def seeds_to_halve(fit: CrossedFit, level: float = LEVEL, power: float = POWER) -> int | None:
    """Seeds that would halve :func:`detectable` on the same scans, the variance components
    held at their estimates (expected mean squares for the larger design); None when even
    ``MAX_SEEDS`` seeds cannot (the scans' variance then dominates: add test scans)."""
    target = detectable(fit, level, power) / 2
    if not (math.isfinite(target) and target > 0 and math.isfinite(fit.var_seed)):
        return None
    t = fit.n_scans
    ve, va, vb = fit.var_resid, fit.var_seed, fit.var_scan
    for s in range(fit.n_seeds + 1, MAX_SEEDS + 1):
        c = combine(np.asarray(ve + t * va), np.asarray(ve + s * vb), np.asarray(ve), s, t)
        projected = CrossedFit(
            fit.mean, float(np.sqrt(c["var_mean"])), float(c["df"]), va, vb, ve, s, t
        )
        if detectable(projected, level, power) <= target:
            return s
    return None


def sign_flip_p(seed_means: FloatArray, draws: int = 100_000, seed: int = 0) -> float:
    """Two-sided sign-flip p-value of the mean of per-seed means: the share of the 2^S sign
    patterns (exact up to 16 seeds, else ``draws`` seeded random ones) whose mean is at
    least as far from 0 as the observed one. The random estimate counts the observed pattern
    too, (hits + 1) / (draws + 1), so it is never 0: the exact p is at least 2 / 2^S."""
    m = np.asarray(seed_means, dtype=float)
    if m.size == 0:
        return float("nan")
    exact = m.size <= 16
    if exact:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=m.size)))
    else:
        signs = np.random.default_rng([seed, 4242]).choice((1.0, -1.0), (draws, m.size))
    observed = abs(m.mean())
    flipped = np.abs((signs * m).mean(axis=1))
    hits = int(np.count_nonzero(flipped >= observed - 1e-12 * max(1.0, observed)))
    return hits / len(signs) if exact else (hits + 1) / (len(signs) + 1)


def paired_delta_matrix(runs: list[dict], test: int, score: str, base: int = 1) -> FloatArray:
    """ΔDice of ``test`` minus ``base``, one row per seed both have run and one column per
    test scan; NaN where either run has no score for the scan; 0 x 0 without a shared seed."""
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
    if not rows:
        return np.zeros((0, 0))
    return np.asarray(rows, dtype=float).reshape(len(rows), -1)


def paired_deltas(runs: list[dict], test: int, score: str, base: int = 1) -> FloatArray:
    """ΔDice of ``test`` minus ``base`` over the (seed, test scan) pairs both have scored,
    seed by seed."""
    d = paired_delta_matrix(runs, test, score, base)
    return d[~np.isnan(d)]


def bootstrap_ci(
    values: FloatArray, n_boot: int = 10000, level: float = LEVEL, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (seeded), NaNs left out.

    A 1-D array resamples its entries.  A 2-D array (seeds x test scans) resamples its rows
    and, independently, its columns, and takes the mean over the crossed draw (two-way).
    No longer the benchmark's interval (too narrow with 5 seeds, see the module docstring);
    kept for the coverage comparison and for single samples.
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


def verdict(ci_low: float, ci_high: float) -> str:
    """'helped' / 'hurt' / 'no detectable difference' from a confidence interval of ΔDice."""
    if np.isnan(ci_low) or np.isnan(ci_high):
        return "not compared"
    if ci_low > 0:
        return "helped"
    if ci_high < 0:
        return "hurt"
    return "no detectable difference"


def compare(runs: list[dict], test: int, score: str) -> PairedComparison:
    """``test`` against test 1 on ``score`` over their complete seeds x scans table."""
    table = complete_table(paired_delta_matrix(runs, test, score))
    fit = fit_crossed(table)
    lo, hi = fit.interval() if math.isfinite(fit.se) else (float("nan"), float("nan"))
    seed_means = table.mean(axis=1) if table.size else np.zeros(0)
    return PairedComparison(
        test,
        score,
        n_pairs=int(table.size),
        n_seeds=fit.n_seeds,
        n_scans=fit.n_scans,
        mean_delta=fit.mean,
        ci_low=lo,
        ci_high=hi,
        p_value=fit.p_value() if math.isfinite(fit.se) else float("nan"),
        df=fit.df,
        se=fit.se,
        var_seed=fit.var_seed,
        var_scan=fit.var_scan,
        var_resid=fit.var_resid,
        verdict=verdict(lo, hi),
        seeds_better=int((seed_means > 0).sum()),
        p_seed_signs=sign_flip_p(seed_means),
        detectable=detectable(fit),
        seeds_to_halve=seeds_to_halve(fit),
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
