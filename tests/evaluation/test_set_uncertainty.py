"""Uncertainty of the feature-space distances against held-out scans: the bootstrap ± and
the permutation p-value of RBF-MMD², on feature sets whose distribution is known."""

import numpy as np
import pytest
from scipy import stats

from ratgan.evaluation import features as feat
from ratgan.evaluation import set_uncertainty as unc


def test_permutation_statistic_is_the_unbiased_mmd():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(9, 4)), rng.normal(0.3, 1.0, size=(7, 4))
    sigma = feat.median_bandwidth(x)
    pooled = np.concatenate([x, y])
    kernel = np.exp(-feat.sq_dists(pooled, pooled) / (2 * sigma**2))
    np.fill_diagonal(kernel, 0.0)
    first = np.zeros((1, 16), dtype=bool)
    first[0, :9] = True
    got = unc._mmd2_from_kernel(kernel, first)[0]
    assert got == pytest.approx(feat.rbf_mmd2(x, y, sigma), rel=1e-10)


def test_p_is_uniform_for_sets_of_one_distribution():
    """Held-out against real, the known answer: 60 seeds of two 20-scan samples of one
    Gaussian; the p-values are uniform (Kolmogorov-Smirnov) and about 5 % fall below 0.05."""
    ps = []
    for seed in range(60):
        rng = np.random.default_rng([seed, 1])
        x, y = rng.normal(size=(20, 10)), rng.normal(size=(20, 10))
        ps.append(unc.mmd_permutation_p(y, x, feat.median_bandwidth(x), 300, rng))
    ps = np.asarray(ps)
    assert stats.kstest(ps, "uniform").pvalue > 0.01
    assert np.mean(ps < 0.05) <= 0.15
    assert 0.35 < ps.mean() < 0.65


def test_p_is_small_for_a_corrupted_set():
    for seed in range(5):
        rng = np.random.default_rng([seed, 2])
        x = rng.normal(size=(20, 10))
        y = rng.normal(0.8, 1.0, size=(20, 10))  # every feature moved by 0.8 sd
        assert unc.mmd_permutation_p(y, x, feat.median_bandwidth(x), 300, rng) <= 0.01


def test_bootstrap_spread_matches_the_spread_over_fresh_samples():
    """The bootstrap std of one sample against the std over 300 independent samples of the
    same two distributions (the known answer), for the Fréchet distance and RBF-MMD²."""
    d, n = 4, 30
    mean_b = np.full(d, 0.5)

    def fresh(rng):
        return rng.normal(size=(n, d)), rng.normal(mean_b, 1.0, size=(n, d))

    rng = np.random.default_rng(3)
    sigma = 2.5  # fixed kernel, as in the evaluation (the whole reference's bandwidth)
    truth = {"fd": [], "rbf_mmd": []}
    for _ in range(300):
        a, s = fresh(rng)
        truth["fd"].append(feat.frechet_distance(a, s))
        truth["rbf_mmd"].append(feat.rbf_mmd2(a, s, sigma))
    boot = {"fd": [], "rbf_mmd": []}
    for _ in range(8):
        a, s = fresh(rng)
        b = unc.bootstrap(a, s, n, sigma, 3, 200, rng, unc._distances(a, s, sigma, 3))
        for m in boot:
            boot[m].append(b[m]["std"])
    for m in boot:
        ratio = np.mean(boot[m]) / np.std(truth[m], ddof=1)
        assert 0.7 < ratio < 1.5, (m, ratio)


def test_bootstrap_intervals_cover_the_expected_distance():
    """The 95 % interval of each distance, from 30-scan samples of two Gaussians 0.3 sd apart,
    holds the distance's expected value (the mean over 400 fresh samples, the known answer)
    in at least 85 % of 40 samples.  Bootstrap draws repeat scans, which lifts the Fréchet
    distance and RBF-MMD² and shrinks the k-NN balls, so the draws' 2.5-97.5 % percentiles
    held it in only 8 % (Fréchet), 70 % (RBF-MMD²) and 35 % (coverage) of the samples."""
    d, n = 10, 30
    rng = np.random.default_rng(7)

    def sample():
        return rng.normal(size=(n, d)), rng.normal(0.3, 1.0, size=(n, d))

    sigma = feat.median_bandwidth(sample()[0])
    fresh = [unc._distances(*sample(), sigma, 3) for _ in range(400)]
    expected = {m: np.mean([f[m] for f in fresh]) for m in unc.METRICS}
    held = dict.fromkeys(unc.METRICS, 0)
    trials = 40
    for _ in range(trials):
        a, s = sample()
        boot = unc.bootstrap(a, s, n, sigma, 3, 100, rng, unc._distances(a, s, sigma, 3))
        for m in unc.METRICS:
            lo, hi = boot[m]["ci"]
            held[m] += lo <= expected[m] <= hi
    assert all(held[m] / trials >= 0.85 for m in unc.METRICS), held
