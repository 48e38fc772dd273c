"""Coverage of the benchmark's ΔDice intervals, measured by simulation.

A simulated benchmark is an S x T table of paired differences drawn from a crossed
random-effects model with known mean ``mu`` (``Design``); an interval method covers when its
interval holds ``mu``.  ``DESIGNS`` are the cases docs/segmentation.md reports at 5 seeds x
13 test scans: one variance source dominating (seeds, scans or the residual), all equal, and
a non-Gaussian case in which each test-1 network trains badly with probability 1/5 (as one
of five did on the phantom cohort), which no interval from 5 seeds can cover reliably: in a
third of the benchmarks no bad network is drawn and nothing in the data reveals the risk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ratgan.arrays import FloatArray
from ratgan.segmentation.stats import LEVEL, bootstrap_ci, combine, mean_squares

TRUE_DELTA = -0.01


@dataclass(frozen=True)
class Design:
    """Standard deviations of the seed, scan and residual effects of simulated ΔDice."""

    name: str
    sd_seed: float
    sd_scan: float
    sd_resid: float
    bad_network_shift: float = 0.0
    """ΔDice added to a seed whose test-1 network trained badly (drawn with ``bad_rate``);
    the seed effects are centred so that the true mean stays ``TRUE_DELTA``."""
    bad_rate: float = 0.2

    def draw(self, rng: np.random.Generator, reps: int, seeds: int, scans: int) -> FloatArray:
        """``reps`` simulated tables (reps, seeds, scans) of ΔDice."""
        a = self.sd_seed * rng.standard_normal((reps, seeds, 1))
        if self.bad_network_shift:
            bad = rng.random((reps, seeds, 1)) < self.bad_rate
            a = a + self.bad_network_shift * (bad - self.bad_rate)
        b = self.sd_scan * rng.standard_normal((reps, 1, scans))
        e = self.sd_resid * rng.standard_normal((reps, seeds, scans))
        return TRUE_DELTA + a + b + e


DESIGNS = (
    Design("seeds dominate", 0.02, 0.005, 0.005),
    Design("scans dominate", 0.005, 0.02, 0.005),
    Design("residual dominates", 0.005, 0.005, 0.02),
    Design("equal", 0.01, 0.01, 0.01),
    Design("one bad network in five (non-Gaussian)", 0.003, 0.01, 0.005, 0.045),
)


def crossed_intervals(d: FloatArray, level: float = LEVEL) -> tuple[FloatArray, FloatArray]:
    """The benchmark's interval (crossed random effects, Satterthwaite t) of every table of
    ``d`` (reps, S, T), vectorised: lows and highs."""
    from scipy.stats import t

    s, n = d.shape[-2:]
    c = combine(*mean_squares(d), s, n)
    half = t.ppf(0.5 + level / 2, c["df"]) * np.sqrt(c["var_mean"])
    mean = d.mean(axis=(-2, -1))
    return mean - half, mean + half


def bootstrap_intervals(d: FloatArray, n_boot: int, seed: int) -> tuple[FloatArray, FloatArray]:
    """The two-way percentile bootstrap interval used before, per table."""
    out = np.array([bootstrap_ci(x, n_boot=n_boot, seed=seed + i) for i, x in enumerate(d)])
    return out[:, 0], out[:, 1]


def pairs_intervals(d: FloatArray, level: float = LEVEL) -> tuple[FloatArray, FloatArray]:
    """A t interval over the S x T pairs as if independent (what pooling pairs claims)."""
    from scipy.stats import t

    v = d.reshape(len(d), -1)
    half = t.ppf(0.5 + level / 2, v.shape[1] - 1) * v.std(axis=1, ddof=1) / np.sqrt(v.shape[1])
    return v.mean(axis=1) - half, v.mean(axis=1) + half


def coverage(
    design: Design,
    reps: int,
    seeds: int = 5,
    scans: int = 13,
    seed: int = 0,
    bootstrap_reps: int = 0,
    n_boot: int = 2000,
) -> dict[str, dict[str, float]]:
    """Share of ``reps`` simulated benchmarks whose interval holds the true ΔDice, and the
    mean interval width, per method (the bootstrap on the first ``bootstrap_reps`` only)."""
    rng = np.random.default_rng([seed, 2121])
    d = design.draw(rng, reps, seeds, scans)
    methods = {"crossed": crossed_intervals(d), "pairs": pairs_intervals(d)}
    if bootstrap_reps:
        methods["bootstrap"] = bootstrap_intervals(d[:bootstrap_reps], n_boot, seed)
    return {
        name: {
            "coverage": float(np.mean((lo <= TRUE_DELTA) & (hi >= TRUE_DELTA))),
            "width": float(np.mean(hi - lo)),
            "reps": len(lo),
        }
        for name, (lo, hi) in methods.items()
    }
