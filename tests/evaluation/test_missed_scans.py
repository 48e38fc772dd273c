"""Per-scan coverage, and benchmarks/missed_scans.py's parameters that separate the missed."""

import numpy as np


def test_per_scan_coverage_known_answer():
    from ratgan.evaluation.features import covered_real_points, density_coverage

    # pairs of real points 1 apart, pairs far from each other: every 1-NN radius is 1
    real = np.array([[0.0], [1.0], [10.0], [11.0], [100.0], [101.0]])
    fake = np.array([[0.5], [10.0]])
    covered = covered_real_points(real, fake, k=1)
    # 0.5 lies in the balls of 0 and 1; 10 in those of 10 and of 11 (on its edge: closed balls)
    assert covered.tolist() == [True, True, True, True, False, False]
    assert density_coverage(real, fake, k=1)[1] == covered.mean()


def test_parameter_shift_ranks_the_parameter_that_separates_missed_from_covered(load_benchmark):
    missed = load_benchmark("missed_scans")
    covered = np.array([True] * 6 + [False] * 4)
    params = [
        {"ventricle": 1.0 + (0.0 if c else 0.5), "noise": float(i % 2), "fixed": 2.0}
        for i, c in enumerate(covered)
    ]
    rows = missed.parameter_shift(params, covered)
    assert [r[0] for r in rows] == ["ventricle", "noise"]  # the constant one is left out
    name, a, b, z = rows[0]
    assert (a, b) == (1.0, 1.5)
    assert np.isclose(z, 0.5 / np.std([p["ventricle"] for p in params]))
    assert missed.parameter_shift(params, np.ones(10, bool)) == []


def test_scalar_parameters_of_a_phantom_subject(load_benchmark):
    from ratgan.data.phantom import sample_params

    missed = load_benchmark("missed_scans")
    p = missed.scalar_parameters(sample_params(np.random.default_rng(0)))
    assert "field_seed" not in p
    assert {"rotation_deg[0]", "rotation_deg[2]", "ventricle_scale"} <= set(p)
    assert all(isinstance(v, float) for v in p.values())


def test_spread_on_principal_axes_known_answer(load_benchmark):
    missed = load_benchmark("missed_scans")
    rng = np.random.default_rng(0)
    # real points: sd 3 along x, 1 along y
    real = rng.standard_normal((400, 2)) * [3.0, 1.0]
    mean, axes, sd = missed.principal_axes(real, 2)
    assert np.allclose(np.abs(axes), np.eye(2), atol=0.05) and np.allclose(sd, [3, 1], rtol=0.1)
    # a set half as wide along x and shifted by one real sd along it
    fake = real * [0.5, 1.0] + [3.0, 0.0]
    ratio, shift = missed.spread_on_axes(fake, mean, axes, sd)
    assert np.allclose(ratio, [0.5, 1.0], atol=1e-6)
    assert abs(abs(shift[0]) - 1.0) < 0.05 and abs(shift[1]) < 0.05


def test_axis_parameters_ranks_by_correlation(load_benchmark):
    missed = load_benchmark("missed_scans")
    scores = np.arange(10.0)
    params = [{"a": float(i), "b": float(-(i % 2)), "c": 1.0} for i in range(10)]
    rows = missed.axis_parameters(params, scores, top=2)
    assert rows[0][0] == "a" and np.isclose(rows[0][1], 1.0)
    assert [r[0] for r in rows] == ["a", "b"]  # the constant one is left out
