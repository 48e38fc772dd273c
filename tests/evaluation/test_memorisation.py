"""Memorisation: shift-tolerant nearest-training-scan similarity and a calibrated near-copy
threshold, measured on the built-in phantom cohort."""

import numpy as np
from scipy import ndimage
import pytest

from ratgan.evaluation import memorisation as mem
from ratgan.evaluation.prepare import rescale_unit


def test_ncc_matrix_matches_corrcoef():
    rng = np.random.default_rng(0)
    a = rng.random((4, 6, 5, 3), dtype=np.float32)
    b = rng.random((3, 6, 5, 3), dtype=np.float32)
    got = mem.ncc_matrix(a, b)
    for i in range(4):
        for j in range(3):
            want = np.corrcoef(a[i].ravel().astype(np.float64), b[j].ravel())[0, 1]
            assert got[i, j] == pytest.approx(want, abs=1e-5)


def test_shift_tolerant_similarity_is_the_best_ncc_over_shifts():
    rng = np.random.default_rng(0)
    a = rng.random((3, 9, 8, 7), dtype=np.float32)
    b = rng.random((2, 9, 8, 7), dtype=np.float32)
    r = 1
    got = mem.similarity_matrix(a, b, max_shift=r, mirror=False)
    for i in range(3):
        for j in range(2):
            centre = b[j, r:-r, r:-r, r:-r].ravel().astype(np.float64)
            best = max(
                np.corrcoef(
                    a[i, r + dx : 9 - r + dx, r + dy : 8 - r + dy, r + dz : 7 - r + dz].ravel(),
                    centre,
                )[0, 1]
                for dx in (-1, 0, 1)
                for dy in (-1, 0, 1)
                for dz in (-1, 0, 1)
            )
            assert got[i, j] == pytest.approx(best, abs=1e-5)
    plain = mem.similarity_matrix(a, b, max_shift=0, mirror=False)
    np.testing.assert_allclose(plain, mem.ncc_matrix(a, b))
    # with the mirror: the higher of that and the same for the reversed first axis
    flipped = mem.similarity_matrix(a, np.ascontiguousarray(b[:, ::-1]), r, mirror=False)
    np.testing.assert_allclose(mem.similarity_matrix(a, b, r), np.maximum(got, flipped))


def test_tolerance_factor_matches_published_tables():
    # one-sided normal tolerance factors, 95 % confidence, 99 % coverage (e.g. NIST/SEMATECH
    # e-Handbook 7.2.6.3, Natrella 1963): n = 10: 3.981, n = 20: 3.295, n = 50: 2.863
    for n, k in ((10, 3.981), (20, 3.295), (50, 2.863)):
        assert mem.tolerance_factor(n, 0.01, 0.95) == pytest.approx(k, abs=2e-3)
    # and it tends to the plug-in quantile z = 2.326 as n grows
    assert mem.tolerance_factor(100_000, 0.01, 0.95) == pytest.approx(2.326, abs=0.02)


def test_tolerance_bound_holds_its_rate_with_its_confidence():
    """24 reference values from a known normal (on the -log(1 - s) scale), 4,000 times: the
    bound's true exceedance probability is at most 1 % in about 95 % of the draws; the
    plug-in 99 % quantile manages about half."""
    from statistics import NormalDist

    rng = np.random.default_rng(3)
    mu, sd, n = 3.0, 0.2, 24
    ok_bound, ok_plugin = [], []
    for _ in range(4000):
        ref = 1 - np.exp(-rng.normal(mu, sd, n))
        thr = mem.calibrate(ref)
        true_rate = 1 - NormalDist(mu, sd).cdf(-np.log(1 - thr.value))
        ok_bound.append(true_rate <= 0.01)
        t = -np.log(1 - ref)
        plugin = t.mean() + NormalDist().inv_cdf(0.99) * t.std(ddof=1)
        ok_plugin.append(1 - NormalDist(mu, sd).cdf(plugin) <= 0.01)
    assert np.mean(ok_bound) == pytest.approx(0.95, abs=0.012)
    assert np.mean(ok_plugin) < 0.6
    assert (thr.false_positive_rate, thr.confidence) == (0.01, 0.95)
    with pytest.raises(ValueError):
        mem.calibrate(ref, 0.0)
    with pytest.raises(ValueError):
        mem.calibrate(ref, 0.01, 1.0)


def _shifted_copy(volume: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``volume`` moved by 1-2 voxels on random axes (zero-filled), intensity scaled and
    offset, then prepared like every evaluated scan."""
    while True:
        shift = rng.integers(-2, 3, 3)
        if np.abs(shift).max() >= 1:
            break
    out = ndimage.shift(volume, shift, order=0, cval=0.0)  # integer shift, zero-filled
    return rescale_unit(out * rng.uniform(0.6, 1.4) + rng.uniform(0.0, 0.1))


@pytest.fixture(scope="module")
def phantom_scans() -> np.ndarray:
    """48 subjects of the built-in phantom cohort, prepared for evaluation."""
    from ratgan.data.phantom import make_subject, subject_seed

    return np.stack([rescale_unit(make_subject(subject_seed(0, i))[0]) for i in range(48)])


def test_near_copy_threshold_on_the_phantom_cohort(phantom_scans):
    """24 training scans; the threshold is calibrated on their leave-one-out neighbours.
    Targets: at most 10 % of 24 never-seen real scans flagged, at least 95 % of copies."""
    train, never_seen = phantom_scans[:24], phantom_scans[24:]
    rng = np.random.default_rng(0)
    copies = np.stack([_shifted_copy(v, rng) for v in train])
    ref_nn, _ = mem.nearest(train, train, exclude_self=True)
    thr = mem.calibrate(ref_nn)  # at most 1 % false positives with 95 % confidence
    new_nn, _ = mem.nearest(never_seen, train)
    copy_nn, copy_idx = mem.nearest(copies, train)
    exact_nn, _ = mem.nearest(train[:6] * 0.5, train)
    assert np.mean(new_nn > thr.value) <= 0.10
    assert np.mean(copy_nn > thr.value) >= 0.95
    assert (copy_idx == np.arange(24)).mean() >= 0.95  # and each points at its original
    assert (exact_nn > thr.value).all()
    # the plain global NCC cannot do this: shifted copies fall below real neighbours
    plain_new, _ = mem.nearest(never_seen, train, max_shift=0, mirror=False)
    plain_copy, _ = mem.nearest(copies, train, max_shift=0, mirror=False)
    assert np.median(plain_copy) < np.median(plain_new)


def test_a_left_right_mirrored_copy_is_flagged(phantom_scans):
    """Training flips scans left-right (augment.flip_prob along axis 0, RAS left-right for
    these scans), so a generator can reproduce a training subject mirrored.  Such copies,
    moved by 1-2 voxels and rescaled, must be flagged and point at their original, while
    never-seen subjects stay below the threshold; only 4 of 24 were flagged before."""
    from ratgan.evaluation.protocol import EvaluationSettings, memorisation_check

    train, never_seen = phantom_scans[:24], phantom_scans[24:]
    rng = np.random.default_rng(4)
    mirrored = np.stack([_shifted_copy(v[::-1], rng) for v in train])
    memo = memorisation_check(
        _scan_set("real", train),
        None,
        [_scan_set("mirrored", mirrored), _scan_set("new", never_seen)],
        EvaluationSettings(),
    )
    got = memo.synthetic["mirrored"]
    assert got["near_copies"] == 24
    assert got["nearest"] == [f"real_{i}.nii.gz" for i in range(24)]
    assert memo.synthetic["new"]["fraction"] <= 0.10
    # known answer: an exact mirror image is its original, similarity 1
    nn, idx = mem.nearest(np.ascontiguousarray(train[:3, ::-1]), train)
    assert list(idx) == [0, 1, 2] and (nn > 0.9999).all()


def test_resampled_splits_keep_realised_false_positives_low(load_benchmark):
    """An 80-subject phantom pool, 300 random splits into 24 training scans and 56 never
    seen: the threshold fitted on the 24 flags at most 2 % of the 56 in at least 90 % of
    the splits, and shifted, rescaled copies of training scans are all caught (the
    similarity of each copy to its original is a lower bound of its nearest training one);
    with 2 % noise on top, at most one of the 24 in a split escapes.
    benchmarks/memorisation_phantom.py runs the same on 200 subjects and 1,000 splits."""
    from ratgan.data.phantom import make_subject, subject_seed

    bench = load_benchmark("memorisation_phantom")
    vols = np.stack([rescale_unit(make_subject(subject_seed(5, i))[0]) for i in range(80)])
    sims = bench.pool_similarities(vols, seed=1)
    rates = bench.split_rates(sims, 24, 300, 1, lambda nn: mem.calibrate(nn).value)
    assert np.mean(rates[:, 0] <= 0.02) >= 0.90
    assert rates[:, 1].min() == 1.0  # every shifted, rescaled copy, in every split
    # with 2 % noise added the margin is smaller: at most one copy missed in a split
    assert rates[:, 2].min() >= 23 / 24 and rates[:, 2].mean() >= 0.995


def test_summary_reports_the_real_baseline(kit):
    train = kit.brains(8, 11)
    rng = np.random.default_rng(1)
    copies = train[:3] + 0.002 * rng.standard_normal(train[:3].shape).astype(np.float32)
    new = kit.brains(5, 12)
    ref_nn, _ = mem.nearest(train, train, exclude_self=True)
    assert (ref_nn < 0.999).all()  # exclude_self: nobody is its own neighbour
    nn, idx = mem.nearest(np.concatenate([copies, new]), train)
    assert list(idx[:3]) == [0, 1, 2] and (nn[:3] > 0.999).all()
    thr = mem.calibrate(ref_nn)
    s = mem.summary(nn, ref_nn, thr)
    flagged = nn > thr.value
    assert flagged[:3].all()
    assert s["near_copies"] == flagged.sum() and s["fraction"] == pytest.approx(flagged.mean())
    assert s["reference_fraction"] == pytest.approx(np.mean(ref_nn > thr.value))
    assert mem.summary(nn, ref_nn, mem.Threshold(1.0, "given", None))["near_copies"] == 0


def _scan_set(name: str, volumes: np.ndarray):
    from pathlib import Path

    from ratgan.evaluation.prepare import ScanSet

    vols = np.stack([rescale_unit(v) for v in volumes])
    return ScanSet(name, vols, [Path(f"{name}_{i}.nii.gz") for i in range(len(vols))], name)


def test_a_duplicated_real_scan_does_not_switch_the_check_off(kit, caplog):
    """A real scan present twice (a copied file) was its own copy's nearest neighbour: the
    leave-one-out values reached 1 and so did the threshold, and no near-copy was flagged.
    Now the duplicate is left out of the calibration, with a warning naming both files."""
    from ratgan.evaluation.protocol import EvaluationSettings, memorisation_check

    train = kit.brains(8, 11)
    real = _scan_set("real", np.concatenate([train, train[:1]]))  # real_8 is real_0 again
    rng = np.random.default_rng(1)
    near = train[2:5] + 0.002 * rng.standard_normal(train[2:5].shape).astype(np.float32)
    with caplog.at_level("WARNING"):
        memo = memorisation_check(real, None, [_scan_set("near", near)], EvaluationSettings())
    ref = memo.reference
    assert ref["threshold"] < 0.9999
    assert memo.synthetic["near"]["near_copies"] == 3
    (dup,) = ref["duplicates"]
    assert dup["kept"] == "real_0.nii.gz" and dup["left_out"] == ["real_8.nii.gz"]
    assert dup["similarity"] == pytest.approx(1.0)
    assert len(ref["nn_ncc"]) == 8 and "real_8.nii.gz" not in ref["scans"]
    assert "real_8.nii.gz (= real_0.nii.gz)" in caplog.text


def test_a_threshold_not_below_one_is_refused(kit, monkeypatch):
    from ratgan.errors import RatganError
    from ratgan.evaluation.protocol import EvaluationSettings, memorisation_check

    real = _scan_set("real", kit.brains(6, 11))
    syn = _scan_set("syn", kit.brains(3, 12))
    with pytest.raises(RatganError, match="threshold given is 1.000000, not below 1"):
        memorisation_check(real, None, [syn], EvaluationSettings(copy_threshold=1.0))
    monkeypatch.setattr(mem, "calibrate", lambda *a: mem.Threshold(1.0, "fitted", 0.01, 0.95))
    with pytest.raises(RatganError, match="calibrated on the real scans is 1.000000"):
        memorisation_check(real, None, [syn], EvaluationSettings())


def test_similarities_of_exact_copies_are_reported_within_one(kit):
    """float32 rounding put exact copies at 1.000007; reported values are clipped to
    [-1, 1] and the copies are still flagged."""
    from ratgan.evaluation.protocol import EvaluationSettings, memorisation_check

    train = kit.brains(8, 13)
    nn, idx = mem.nearest(train[:4].copy(), train)
    assert list(idx) == [0, 1, 2, 3] and (nn <= 1.0).all() and (nn > 0.9999).all()
    memo = memorisation_check(
        _scan_set("real", train), None, [_scan_set("copies", train[:4])], EvaluationSettings()
    )
    summ = memo.synthetic["copies"]
    assert summ["near_copies"] == 4 and summ["nn_ncc_max"] <= 1.0
    assert all(-1.0 <= v <= 1.0 for v in summ["nn_ncc"] + memo.reference["nn_ncc"])
    assert all(f["ncc"] <= 1.0 for f in summ["flagged"])


def test_one_real_scan_unlike_the_others_does_not_lift_the_threshold():
    # Known answer: the fit on the values without the outlier. One very noisy real scan among
    # 8 had lifted the threshold from 0.958 to 0.995, above every copy of a training scan.
    rng = np.random.default_rng(0)
    bulk = 1.0 - np.exp(-rng.normal(3.0, 0.2, 12))
    with_outlier = np.append(bulk, 0.30)
    fitted = mem.calibrate(with_outlier)
    assert fitted.value == pytest.approx(mem.calibrate(bulk).value)
    assert fitted.left_out == (12,) and "1 real scans far less similar" in fitted.rule
    assert mem.calibrate(with_outlier).value < 1.0 - np.exp(-(3.0 + 3.0 * 0.2))
    assert mem.calibrate(bulk).left_out == ()  # no outlier, nothing left out


def test_a_noisy_real_scan_is_named_and_copies_are_still_flagged(kit, caplog):
    from ratgan.evaluation.protocol import EvaluationSettings, memorisation_check

    train = kit.brains(8, 11)
    noisy = np.random.default_rng(2).random((1, *train.shape[1:]), dtype=np.float32)
    real = _scan_set("real", np.concatenate([train, noisy]))
    rng = np.random.default_rng(1)
    near = train[2:6] + 0.01 * rng.standard_normal(train[2:6].shape).astype(np.float32)
    with caplog.at_level("WARNING"):
        memo = memorisation_check(real, None, [_scan_set("near", near)], EvaluationSettings())
    assert memo.reference["left_out_of_fit"] == ["real_8.nii.gz"]
    assert "left out of the near-copy threshold's fit" in caplog.text
    assert memo.synthetic["near"]["near_copies"] == 4
