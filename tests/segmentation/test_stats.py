"""Paired statistics against hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ratgan.segmentation.stats import (
    bootstrap_ci,
    collapses,
    compare,
    paired_deltas,
    verdict,
    wilcoxon_p,
)


def run(test, seed, per_scan, scores=None):
    scores = scores or {
        k: float(np.mean([v for v in vals if v is not None])) for k, vals in per_scan.items()
    }
    return {"test": test, "seed": seed, "per_scan": per_scan, "scores": scores}


def test_pairs_are_matched_by_seed_and_scan():
    runs = [
        run(1, 0, {"global": [0.80, 0.70, None]}),
        run(1, 1, {"global": [0.60, 0.50, 0.9]}),
        run(3, 0, {"global": [0.85, 0.65, 0.70]}),
        run(3, 1, {"global": [0.60, 0.55, 0.8]}),
        run(3, 2, {"global": [0.99, 0.99, 0.99]}),
    ]  # seed 2 has no test-1 partner
    d = paired_deltas(runs, 3, "global")
    assert np.allclose(d, [0.05, -0.05, 0.0, 0.05, -0.1])


def test_wilcoxon_matches_the_exact_signed_rank_distribution():
    # five positive differences: the rank sum 15 is the most extreme of 2^5 sign patterns
    assert wilcoxon_p(np.array([0.1, 0.2, 0.3, 0.4, 0.5])) == pytest.approx(2 / 32)
    # ranks 1..5 with signs - + + + +: W- = 1; P(W- <= 1) = 2/32 per side
    assert wilcoxon_p(np.array([-0.1, 0.2, 0.3, 0.4, 0.5])) == pytest.approx(4 / 32)
    assert wilcoxon_p(np.zeros(4)) == 1.0


def test_bootstrap_interval_matches_the_normal_approximation():
    rng = np.random.default_rng(3)
    x = rng.normal(0.02, 0.05, 400)
    lo, hi = bootstrap_ci(x, n_boot=4000, seed=1)
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert lo == pytest.approx(x.mean() - half, abs=0.0015)
    assert hi == pytest.approx(x.mean() + half, abs=0.0015)
    assert bootstrap_ci(np.full(7, 0.25)) == (pytest.approx(0.25), pytest.approx(0.25))
    assert bootstrap_ci(x, seed=5) == bootstrap_ci(x, seed=5)


def test_verdict_comes_from_the_interval():
    assert verdict(0.001, 0.02) == "helped"
    assert verdict(-0.03, -0.002) == "hurt"
    assert verdict(-0.01, 0.02) == "no detectable difference"
    runs = [run(1, s, {"GM": list(0.8 + 0.01 * np.arange(5))}) for s in range(3)]
    runs += [run(2, s, {"GM": list(0.85 + 0.01 * np.arange(5))}) for s in range(3)]
    c = compare(runs, 2, "GM")
    assert c.n_pairs == 15 and c.mean_delta == pytest.approx(0.05)
    assert c.verdict == "helped" and c.p_wilcoxon < 0.001


def test_collapsed_seeds_are_listed():
    good = {"GM": 0.9, "WM": 0.8, "CSF": 0.6, "global": 0.8}
    runs = [
        run(9, 0, {}, good),
        run(9, 1, {}, {**good, "WM": 0.0}),
        run(1, 0, {}, {**good, "CSF": 0.05, "GM": float("nan")}),
    ]
    assert collapses(runs) == [
        {"test": 1, "seed": 0, "tissues": {"CSF": 0.05}},
        {"test": 9, "seed": 1, "tissues": {"WM": 0.0}},
    ]
