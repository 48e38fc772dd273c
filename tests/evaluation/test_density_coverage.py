"""k-NN density and coverage (Naeem et al. 2020) against known answers: hand-counted point
sets, their expectations for sets of one distribution, and the failure of recall that
coverage is there to avoid (outlying generated points)."""

import numpy as np
import pytest

from ratgan.evaluation import features as F
from ratgan.evaluation.protocol import EvaluationSettings, set_level

# 1-D reals 0, 1, 3, 6 with k = 1: nearest-neighbour radii 1, 1, 2, 3, so the closed balls
# are [-1, 1], [0, 2], [1, 5] and [3, 9].
REAL_1D = np.array([[0.0], [1.0], [3.0], [6.0]])


def test_hand_counted_1d():
    # 0.5 lies in the balls of 0 and 1, 2.5 only in that of 3, 10 in none:
    # density = (2 + 1 + 0) / (1 * 3), coverage = 3 of 4 balls (6's is empty)
    fake = np.array([[0.5], [2.5], [10.0]])
    assert F.density_coverage(REAL_1D, fake, k=1) == pytest.approx((1.0, 0.75))
    # 4 lies in the balls of 3 and 6: with 0.5 every ball holds a fake point
    fake = np.array([[0.5], [4.0]])
    assert F.density_coverage(REAL_1D, fake, k=1) == pytest.approx((4 / 2, 1.0))


def test_the_balls_are_closed():
    # 9 is exactly on the boundary of 6's ball [3, 9]: it counts
    assert F.density_coverage(REAL_1D, np.array([[9.0]]), k=1) == (1.0, 0.25)
    assert F.density_coverage(REAL_1D, np.array([[9.5]]), k=1) == (0.0, 0.0)


def test_hand_counted_2d_square():
    # corners of the unit square, k = 2: each corner's 2nd nearest other corner is at 1
    real = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # the centre (0.71 from every corner) lies in all 4 balls, (2, 2) in none
    centre_far = np.array([[0.5, 0.5], [2.0, 2.0]])
    assert F.density_coverage(real, centre_far, k=2) == pytest.approx((4 / (2 * 2), 1.0))
    # (-0.5, 0) is 0.5 from (0, 0) and more than 1 from the other corners
    assert F.density_coverage(real, np.array([[-0.5, 0.0]]), k=2) == pytest.approx(
        (1 / (2 * 1), 0.25)
    )


def test_a_copy_of_the_real_set_is_fully_covered():
    """Fake = real: every ball holds its own centre, so coverage is 1; each ball also holds
    the centre's k nearest neighbours, so density is (N + N k) / (k N) = 1 + 1/k."""
    rng = np.random.default_rng(0)
    real = rng.standard_normal((200, 10))
    for k in (1, 3, 5):
        density, coverage = F.density_coverage(real, real.copy(), k)
        assert coverage == 1.0
        assert density == pytest.approx(1 + 1 / k, abs=2 / (k * 200))


def test_expectations_for_sets_of_one_distribution():
    """Fake and real drawn from one distribution: E[density] = 1 exactly, and a real point
    is uncovered when its k nearest of the N - 1 other real and M fake points are all real,
    so E[coverage] = 1 - prod_{i<k} (N - 1 - i) / (N - 1 + M - i) = 0.877 for N = M = 200,
    k = 3 (Naeem et al. 2020)."""
    n, k = 200, 3
    expected_coverage = 1 - np.prod([(n - 1 - i) / (2 * n - 1 - i) for i in range(k)])
    densities, coverages = [], []
    for seed in range(20):
        rng = np.random.default_rng([seed, 7])
        d, c = F.density_coverage(rng.standard_normal((n, 10)), rng.standard_normal((n, 10)), k)
        densities.append(d)
        coverages.append(c)
    assert np.mean(densities) == pytest.approx(1.0, abs=0.04)
    assert np.mean(coverages) == pytest.approx(expected_coverage, abs=0.02)


def test_outliers_fool_recall_but_not_coverage():
    """The failure that coverage avoids: a generated set with 10x the spread of the real one
    has huge k-NN balls of its own, so recall is 1 though no generated point is realistic;
    coverage and density use only the real balls and are 0."""
    rng = np.random.default_rng(1)
    real = rng.standard_normal((200, 10))
    wide = 10 * rng.standard_normal((200, 10))
    precision, recall = F.precision_recall(real, wide)
    density, coverage = F.density_coverage(real, wide)
    assert precision == 0.0 and recall == 1.0
    assert density == 0.0 and coverage == 0.0

    # a mode-collapsed set (190 points around one real point) covers almost nothing, and
    # adding 10 far outliers lifts its recall to about 1 while coverage stays where it was
    collapsed = real[0] + 0.01 * rng.standard_normal((190, 10))
    directions = rng.standard_normal((10, 10))
    outliers = 30 * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    with_outliers = np.concatenate([collapsed, outliers])
    _, recall_collapsed = F.precision_recall(real, collapsed)
    _, recall_outliers = F.precision_recall(real, with_outliers)
    _, coverage_collapsed = F.density_coverage(real, collapsed)
    _, coverage_outliers = F.density_coverage(real, with_outliers)
    assert recall_collapsed < 0.05 and recall_outliers > 0.95
    assert coverage_outliers == coverage_collapsed < 0.1


def test_a_dropped_mode_halves_coverage():
    """Real: two well-separated clusters of 100; fake: 200 points of the first cluster only.
    The second cluster's balls stay empty, the first's are nearly all hit (expected share
    1 - (99 * 98 * 97) / (299 * 298 * 297) = 0.96), so coverage is just under 0.5; both
    clusters sampled give the expectation for one distribution (0.88)."""
    shift = np.zeros(10)
    shift[0] = 10.0
    coverages, full = [], []
    for seed in range(5):
        rng = np.random.default_rng([seed, 11])
        real = np.concatenate(
            [rng.standard_normal((100, 10)) + shift, rng.standard_normal((100, 10)) - shift]
        )
        one_mode = rng.standard_normal((200, 10)) + shift
        both = np.concatenate(
            [rng.standard_normal((100, 10)) + shift, rng.standard_normal((100, 10)) - shift]
        )
        coverages.append(F.density_coverage(real, one_mode)[1])
        full.append(F.density_coverage(real, both)[1])
    assert all(0.43 <= c <= 0.5 for c in coverages)
    assert np.mean(full) == pytest.approx(0.877, abs=0.04)


def test_too_few_points_are_refused():
    with pytest.raises(ValueError):
        F.density_coverage(np.zeros((1, 3)), np.zeros((4, 3)))


def test_set_level_reports_density_and_coverage_like_the_other_distances():
    """metrics.json rows: density and coverage in the {mean, std, values} form, with the
    bootstrap interval when there is a held-out set; a copy of the held-out set scores as
    the reference row, an outlying set has coverage 0."""
    rng = np.random.default_rng(3)
    real, held = rng.standard_normal((30, 5)), rng.standard_normal((20, 5))
    settings = EvaluationSettings(split_repeats=2, bootstrap=20, permutations=0, progress=False)
    sets = {"copy": held.copy(), "wide": 10 * rng.standard_normal((20, 5))}
    halves, info = set_level(real, None, sets, settings, "test")
    for row in halves.values():
        for key in ("density", "coverage"):
            assert set(row[key]) == {"mean", "std", "values"} and len(row[key]["values"]) == 2
    assert halves["wide"]["coverage"]["mean"] == 0.0 and halves["wide"]["recall"]["mean"] > 0.9
    out, _ = set_level(real, held, sets, settings, "test")
    assert out["copy"]["coverage"]["mean"] == out["reference"]["coverage"]["mean"]
    assert out["copy"]["density"]["mean"] == out["reference"]["density"]["mean"]
    assert len(out["copy"]["coverage"]["ci"]) == 2 and out["copy"]["coverage"]["std"] > 0


def test_copies_of_real_points_count_the_tied_ball_boundaries():
    """A fake set of copies of some real points (a memorising generator, subsampled): the copy
    of real point p lies exactly on the boundary of every real ball whose k-th neighbour is p,
    and closed balls must count it.  Expected counts by index, from explicit pairwise
    distances (n, d as the evaluation's features: standardised, up to 199 dimensions)."""
    k = 3
    for seed in (18, 29, 125, 215):
        rng = np.random.default_rng(seed)
        d = [6, 50, 176, 199][seed % 4]
        raw = rng.standard_normal((int(rng.integers(8, 40)), d))
        raw = raw * np.exp(rng.standard_normal(d)) + 5 * rng.standard_normal(d)
        real = (raw - raw.mean(0)) / raw.std(0, ddof=1)
        copied = rng.permutation(len(real))[: int(rng.integers(3, len(real)))]
        dist = np.linalg.norm(real[:, None] - real[None], axis=2)
        np.fill_diagonal(dist, np.inf)
        radius = np.sort(dist, axis=1)[:, k - 1]
        # ball i holds the copy of p iff p is i itself or d(i, p) <= r_i
        inside = np.array(
            [[p == i or dist[i, p] <= radius[i] for i in range(len(real))] for p in copied]
        )
        want = (inside.sum() / (k * len(copied)), inside.any(axis=0).mean())
        assert F.density_coverage(real, real[copied], k) == pytest.approx(want), seed
        # recall: real point q lies in the ball of the copy of p when d(q, p) is at most the
        # distance from p to its k-th nearest other copy
        sub = dist[np.ix_(copied, copied)]
        r_fake = np.sort(sub, axis=1)[:, min(k, len(copied) - 1) - 1]
        d_fake_real = dist[copied].copy()
        d_fake_real[np.arange(len(copied)), copied] = 0.0
        recall = (d_fake_real <= r_fake[:, None]).any(axis=0).mean()
        assert F.precision_recall(real, real[copied], k) == pytest.approx((1.0, recall)), seed
