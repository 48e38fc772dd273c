"""Paired statistics against hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scipy import stats as sps

from ratgan.segmentation.coverage import DESIGNS, coverage
from ratgan.segmentation.stats import (
    bootstrap_ci,
    collapses,
    compare,
    complete_table,
    detectable,
    fit_crossed,
    paired_delta_matrix,
    paired_deltas,
    seeds_to_halve,
    sign_flip_p,
    verdict,
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


def test_sign_flip_p_is_the_exact_share_of_sign_patterns():
    # five positive seed means: only all-plus and all-minus are as extreme, 2 of 32
    assert sign_flip_p(np.array([0.1, 0.2, 0.3, 0.4, 0.5])) == pytest.approx(2 / 32)
    # - + + + + with 0.1 flipped: |mean| >= 1.3/5 for the patterns flipping nothing or
    # only 0.1, and their mirror images: 4 of 32
    assert sign_flip_p(np.array([-0.1, 0.2, 0.3, 0.4, 0.5])) == pytest.approx(4 / 32)
    assert sign_flip_p(np.zeros(4)) == 1.0


def test_additive_table_gives_the_anova_answer():
    # no residual: MS_seed = T var(a), MS_scan = S var(b), MS_resid = 0, so
    # Var(mean) = var(a) / S + var(b) / T with Satterthwaite df from the two mean squares
    a = np.array([0.01, -0.02, 0.005, 0.0])
    b = np.array([0.03, -0.01, 0.0, 0.02, -0.04, 0.01])
    d = -0.01 + a[:, None] + b[None, :]
    fit = fit_crossed(d)
    s, t = d.shape
    ms_a, ms_b = t * a.var(ddof=1), s * b.var(ddof=1)
    assert fit.mean == pytest.approx(d.mean())
    assert fit.var_resid == pytest.approx(0, abs=1e-15)
    assert fit.var_seed == pytest.approx(a.var(ddof=1))
    assert fit.var_scan == pytest.approx(b.var(ddof=1))
    assert fit.se**2 == pytest.approx(a.var(ddof=1) / s + b.var(ddof=1) / t)
    df = (ms_a + ms_b) ** 2 / (ms_a**2 / (s - 1) + ms_b**2 / (t - 1))
    assert fit.df == pytest.approx(df)
    half = sps.t.ppf(0.975, df) * fit.se
    assert fit.interval() == (pytest.approx(d.mean() - half), pytest.approx(d.mean() + half))


def test_pure_seed_effect_gives_the_t_interval_of_the_seed_means():
    # 5 seeds x 40 scans, one good seed (the phantom's bad test-1 network): the interval is
    # the one-sample t interval of the 5 seed means and holds 0; the pairs do not
    offsets = np.array([-0.01, -0.01, -0.01, -0.01, 0.08])
    d = np.repeat(offsets[:, None], 40, axis=1)
    lo, hi = fit_crossed(d).interval()
    half = sps.t.ppf(0.975, 4) * offsets.std(ddof=1) / math.sqrt(5)
    assert lo == pytest.approx(offsets.mean() - half) and hi == pytest.approx(offsets.mean() + half)
    assert lo < 0 < hi
    assert bootstrap_ci(d.ravel(), seed=2)[0] > 0  # the pairs as if independent: a "gain"
    assert fit_crossed(d).p_value() == pytest.approx(sps.ttest_1samp(offsets, 0.0).pvalue, rel=1e-9)


def test_one_seed_is_a_t_interval_over_the_scans():
    g = np.array([0.01, 0.03, -0.02, 0.04, 0.0])
    fit = fit_crossed(g[None, :])
    res = sps.ttest_1samp(g, 0.0)
    ci = res.confidence_interval(0.95)
    assert fit.interval() == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert math.isnan(fit.var_seed) and seeds_to_halve(fit) is None


def test_detectable_delta_has_the_stated_power():
    rng = np.random.default_rng(7)
    d = -0.01 + 0.02 * rng.standard_normal((5, 1)) + 0.01 * rng.standard_normal((5, 13))
    fit = fit_crossed(d)
    mde = detectable(fit)
    # power of the two-sided t test at that true difference, from the noncentral t
    crit = sps.t.ppf(0.975, fit.df)
    power = sps.nct.sf(crit, fit.df, mde / fit.se) + sps.nct.cdf(-crit, fit.df, mde / fit.se)
    assert power == pytest.approx(0.8, abs=0.02)
    more = seeds_to_halve(fit)
    assert more is not None and 5 < more <= 20  # seeds dominate: about 4x, fewer with df


def test_seeds_cannot_halve_what_the_scans_dominate():
    rng = np.random.default_rng(8)
    d = 0.05 * rng.standard_normal((1, 13)) + 0.001 * rng.standard_normal((5, 13))
    assert seeds_to_halve(fit_crossed(d)) is None


def test_interval_covers_the_true_delta_at_5_seeds_by_13_scans():
    """The Gaussian designs of docs/segmentation.md, 4,000 simulated benchmarks each
    (Monte-Carlo standard error 0.35 %): at least 93 %; the pairs taken as independent fall
    far short; a bad network in one of five seeds defeats any interval."""
    for design in DESIGNS:
        got = coverage(design, 4000, seed=1)
        if design.bad_network_shift:
            assert got["crossed"]["coverage"] < 0.85
        else:
            assert 0.93 <= got["crossed"]["coverage"] <= 0.975, design.name
            assert got["pairs"]["coverage"] < 0.9
    seeds = coverage(DESIGNS[0], 300, seed=1, bootstrap_reps=300, n_boot=1000)
    assert seeds["bootstrap"]["coverage"] < 0.9 < seeds["crossed"]["coverage"]


def test_bootstrap_interval_matches_the_normal_approximation():
    rng = np.random.default_rng(3)
    x = rng.normal(0.02, 0.05, 400)
    lo, hi = bootstrap_ci(x, n_boot=4000, seed=1)
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert lo == pytest.approx(x.mean() - half, abs=0.0015)
    assert hi == pytest.approx(x.mean() + half, abs=0.0015)
    assert bootstrap_ci(np.full(7, 0.25)) == (pytest.approx(0.25), pytest.approx(0.25))
    assert bootstrap_ci(x, seed=5) == bootstrap_ci(x, seed=5)


def test_two_way_interval_with_a_pure_scan_effect_is_the_scan_bootstrap():
    rng = np.random.default_rng(4)
    g = rng.normal(0.02, 0.05, 400)
    d = np.tile(g, (3, 1))  # three seeds that agree exactly
    lo, hi = bootstrap_ci(d, n_boot=4000, seed=1)
    half = 1.96 * g.std(ddof=1) / math.sqrt(g.size)
    assert lo == pytest.approx(g.mean() - half, abs=0.0015)
    assert hi == pytest.approx(g.mean() + half, abs=0.0015)


def test_delta_matrix_keeps_missing_pairs_as_nan_and_the_statistics_skip_them():
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
    assert complete_table(m).shape == (2, 2)  # the scan missing for one seed is left out
    c = compare(runs, 3, "global")
    assert (c.n_pairs, c.n_seeds, c.n_scans) == (4, 2, 2)
    assert (c.ci_low, c.ci_high) == (pytest.approx(0.05), pytest.approx(0.05))


def test_verdict_comes_from_the_interval():
    assert verdict(0.001, 0.02) == "helped"
    assert verdict(-0.03, -0.002) == "hurt"
    assert verdict(-0.01, 0.02) == "no detectable difference"
    runs = [run(1, s, {"GM": list(0.8 + 0.01 * np.arange(5))}) for s in range(3)]
    runs += [run(2, s, {"GM": list(0.85 + 0.01 * np.arange(5))}) for s in range(3)]
    c = compare(runs, 2, "GM")
    assert c.n_pairs == 15 and c.mean_delta == pytest.approx(0.05)
    assert c.verdict == "helped" and c.p_value == 0.0  # every difference exactly 0.05
    assert (c.n_seeds, c.seeds_better) == (3, 3) and c.p_seed_signs == pytest.approx(2 / 8)


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


def test_report_states_the_detectable_difference_and_pools_no_pairs():
    from ratgan.segmentation.report import comparisons, conclusion, stats_markdown

    rng = np.random.default_rng(0)
    runs = []
    for seed in range(5):
        base = 0.95 + 0.02 * rng.standard_normal() + 0.01 * rng.standard_normal(13)
        for test, delta in ((1, 0.0), (3, -0.03)):
            v = base + delta + 0.01 * rng.standard_normal() + 0.005 * rng.standard_normal(13)
            per_scan = {k: [float(x) for x in v] for k in ("global", "GM", "WM", "CSF")}
            runs.append(run(test, seed, per_scan))
    comps = comparisons(runs)
    glob = next(c for c in comps if c["score"] == "global")
    text = conclusion(comps, [])
    assert (
        f"test 3 {glob['detectable']:.4f} ({glob['seeds_to_halve']} seeds would halve it)" in text
    )
    assert "Wilcoxon" not in text and "pairs)" not in text
    table = stats_markdown(comps, [{"test": 3, "name": "r43+s43"}])
    assert "| 5 x 13 |" in table and f"({glob['seeds_to_halve']} seeds)" in table


def _aggregated_run(test, seed, global_dice):
    scores = {"global": global_dice, "GM": global_dice, "WM": global_dice, "CSF": global_dice}
    scores["mean"] = global_dice
    return {
        "test": test,
        "seed": seed,
        "name": f"t{test}",
        "paper": "",
        "n_real": 1,
        "n_synthetic": 0,
        "augment": False,
        "epochs": 1,
        "seconds": 1.0,
        "scores": {**{k: global_dice for k in ("background",)}, **scores},
    }


def test_table_compares_tests_run_with_other_seeds_seed_by_seed():
    from ratgan.segmentation.metrics import SCORES
    from ratgan.segmentation.report import aggregate, table_markdown

    # Test 1 ran seeds 0-4 (a strong seed 4 among them), test 3 only seeds 0-1, where it is
    # 0.001 below test 1. The means over different seeds would say +0.0015.
    test1 = [0.950, 0.951, 0.949, 0.950, 0.940]
    runs = [_aggregated_run(1, s, v) for s, v in enumerate(test1)]
    runs += [_aggregated_run(3, s, test1[s] - 0.001) for s in range(2)]
    runs += [_aggregated_run(4, 0, 0.95)]
    for r in runs:
        r["scores"] = {k: r["scores"].get(k, r["scores"]["global"]) for k in SCORES}
    table = table_markdown(aggregate(runs))
    assert "| Seeds | 5 | 2 | 1 |" in table
    assert "| Δ global vs Test1, seeds in both | +0.0000 | -0.0010 | +0.0000 |" in table
    assert "0.9500 ± n/a" in table  # one seed: no spread, not ± 0


def test_one_seed_does_not_claim_that_the_scans_variance_dominates():
    """With one seed the seeds' variance is not estimated (var_seed NaN), so nothing says
    whether more seeds would halve the detectable ΔDice; the report must not claim that the
    test scans' variance dominates (on the phantom the seeds' variance dominated)."""
    from ratgan.segmentation.report import comparisons, conclusion, stats_markdown

    rng = np.random.default_rng(0)
    runs = []
    for test, delta in ((1, 0.0), (3, -0.02)):
        v = 0.9 + delta + 0.01 * rng.standard_normal(13)
        runs.append(run(test, 0, {k: [float(x) for x in v] for k in ("global", "GM", "WM", "CSF")}))
    comps = comparisons(runs)
    glob = next(c for c in comps if c["score"] == "global")
    assert glob["n_seeds"] == 1 and math.isnan(glob["var_seed"])
    text = conclusion(comps, [])
    table = stats_markdown(comps, [{"test": 3, "name": "r43+s43"}])
    assert "dominates" not in text and "not by seeds alone" not in table
    assert "one seed" in text and "one seed" in table


def test_a_test_without_a_seed_in_common_with_test_1_is_not_compared():
    """Test 3 ran seed 2 only, test 1 seeds 0 and 1 (a later ``--tests 3 --seeds 2``): no
    (seed, scan) pair exists, so the comparison has no numbers and says so; it used to crash
    the report (reshaping an empty table)."""
    from ratgan.segmentation.report import comparisons, conclusion, stats_markdown

    scans = {k: [0.8, 0.9] for k in ("global", "GM", "WM", "CSF")}
    runs = [run(1, 0, scans), run(1, 1, scans), run(3, 2, scans)]
    assert paired_delta_matrix(runs, 3, "global").size == 0
    assert complete_table(np.zeros((0, 0))).size == 0
    c = compare(runs, 3, "global")
    assert (c.n_pairs, c.n_seeds, c.n_scans, c.seeds_better) == (0, 0, 0, 0)
    assert math.isnan(c.mean_delta) and math.isnan(c.ci_low) and math.isnan(c.p_value)
    assert c.verdict == "not compared" and math.isnan(c.p_seed_signs)
    comps = comparisons(runs)
    table = stats_markdown(comps, [{"test": 3, "name": "r43+s43"}])
    text = conclusion(comps, [])
    assert "not compared" in text and "one seed" not in text and "one seed" not in table


def test_sign_flip_p_beyond_16_seeds_is_never_zero():
    """Above 16 seeds the p-value is estimated from random sign patterns; the observed pattern
    (and its mirror image) is always as extreme, so the exact p is at least 2 / 2^S and an
    estimate of 0 is impossible. 25 seeds all above 0: exact p = 2 / 2^25."""
    p = sign_flip_p(np.linspace(0.01, 0.02, 25))
    assert 0 < p < 1e-4
    # and it estimates the exact share: 18 seeds, all 2^18 patterns enumerated here
    m = np.random.default_rng(3).normal(0.004, 0.01, 18)
    signs = np.array(np.meshgrid(*[[1.0, -1.0]] * 18)).reshape(18, -1).T
    exact = np.mean(np.abs((signs * m).mean(axis=1)) >= abs(m.mean()) - 1e-12)
    assert sign_flip_p(m) == pytest.approx(exact, abs=4 * math.sqrt(exact / 100_000) + 1e-5)
