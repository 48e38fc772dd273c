"""Paired statistics against hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ratgan.segmentation.stats import (
    bootstrap_ci,
    collapses,
    compare,
    paired_delta_matrix,
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


def test_two_way_interval_with_a_pure_seed_effect_is_the_binomial_answer():
    # 5 seeds x 40 scans; every scan of four seeds is 0.01 worse, every scan of one seed
    # 0.08 better.  A draw's mean is -0.01 + 0.09 k / 5 with k ~ Binomial(5, 1/5) draws of
    # the good seed: P(k = 0) = 0.328 > 2.5 %, P(k <= 2) = 0.942 < 97.5 % <= P(k <= 3) = 0.993.
    offsets = np.array([-0.01, -0.01, -0.01, -0.01, 0.08])
    d = np.repeat(offsets[:, None], 40, axis=1)
    lo, hi = bootstrap_ci(d, n_boot=20000, seed=2)
    assert lo == pytest.approx(-0.01) and hi == pytest.approx(-0.01 + 0.09 * 3 / 5)
    # resampling the 200 pairs as if independent claims a gain
    assert bootstrap_ci(d.ravel(), seed=2)[0] > 0


def test_two_way_interval_with_a_pure_scan_effect_is_the_scan_bootstrap():
    rng = np.random.default_rng(4)
    g = rng.normal(0.02, 0.05, 400)
    d = np.tile(g, (3, 1))  # three seeds that agree exactly
    lo, hi = bootstrap_ci(d, n_boot=4000, seed=1)
    half = 1.96 * g.std(ddof=1) / math.sqrt(g.size)
    assert lo == pytest.approx(g.mean() - half, abs=0.0015)
    assert hi == pytest.approx(g.mean() + half, abs=0.0015)


def test_delta_matrix_keeps_missing_pairs_as_nan_and_the_interval_skips_them():
    runs = [
        run(1, 0, {"global": [0.80, 0.70, None]}),
        run(1, 1, {"global": [0.60, 0.50, 0.9]}),
        run(3, 0, {"global": [0.85, 0.75, 0.70]}),
        run(3, 1, {"global": [0.65, 0.55, 0.95]}),
    ]
    m = paired_delta_matrix(runs, 3, "global")
    assert m.shape == (2, 3) and np.isnan(m[0, 2])
    assert np.allclose(m[~np.isnan(m)], 0.05)
    assert bootstrap_ci(m) == (pytest.approx(0.05), pytest.approx(0.05))


def test_verdict_comes_from_the_interval():
    assert verdict(0.001, 0.02) == "helped"
    assert verdict(-0.03, -0.002) == "hurt"
    assert verdict(-0.01, 0.02) == "no detectable difference"
    runs = [run(1, s, {"GM": list(0.8 + 0.01 * np.arange(5))}) for s in range(3)]
    runs += [run(2, s, {"GM": list(0.85 + 0.01 * np.arange(5))}) for s in range(3)]
    c = compare(runs, 2, "GM")
    assert c.n_pairs == 15 and c.mean_delta == pytest.approx(0.05)
    assert c.verdict == "helped" and c.p_wilcoxon < 0.001
    assert (c.n_seeds, c.seeds_better) == (3, 3)


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
