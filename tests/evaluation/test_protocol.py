"""The protocol: pairings, counts, determinism, and the ordering real > noise on tiny data."""

import math
from pathlib import Path

import numpy as np
import pytest

from ratgan.evaluation.pairs import draw_pairs, paired
from ratgan.evaluation.prepare import ScanSet, centre_crop, prepare_volume, rescale_unit
from ratgan.evaluation.protocol import EvaluationSettings, evaluate, histogram_w1
from ratgan.evaluation.report import (
    EXTRA_COLUMNS,
    PAPER_COLUMNS,
    beats,
    feature_section,
    row_metrics,
    value,
)

FAST = {
    "comparisons": 400,
    "msssim_comparisons": 40,
    "split_repeats": 3,
    "progress": False,
    "bootstrap": 30,
    "permutations": 200,
}


def _set(name, volumes):
    vols = np.stack([rescale_unit(v) for v in volumes])
    return ScanSet(
        name=name,
        volumes=vols,
        paths=[Path(f"{name}_{i}.nii.gz") for i in range(len(vols))],
        source=name,
    )


def test_draw_pairs_are_balanced_and_distinct():
    rng = np.random.default_rng(0)
    within = draw_pairs(10, None, 100, rng)
    assert within.shape == (100, 2)
    assert (within[:, 0] != within[:, 1]).all()
    assert (np.bincount(within[:, 0], minlength=10) == 10).all()
    cross = draw_pairs(10, 4, 40, rng)
    assert (np.bincount(cross[:, 0], minlength=10) == 4).all()
    assert (np.bincount(cross[:, 1], minlength=4) == 10).all()


def test_one_value_has_unknown_spread_and_an_empty_set_no_pairs():
    """A metric from one comparison has std and standard error NaN, not 0, and the report
    prints its mean alone; pairs with an empty set are refused in one sentence."""
    from ratgan.evaluation.pairs import stats
    from ratgan.evaluation.report import _fmt

    one = stats(np.array([0.83]))
    assert one["mean"] == 0.83 and math.isnan(one["std"]) and math.isnan(one["sem"])
    assert _fmt({"msssim": one}, "msssim", bold=False) == "0.8300"
    two = stats(np.array([0.8, 0.9]))
    assert two["std"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert _fmt({"msssim": two}, "msssim", bold=False) == "0.8500 ± 0.0707"
    rng = np.random.default_rng(0)
    for n_a, n_b in ((0, 4), (4, 0), (0, None)):
        with pytest.raises(ValueError, match="at least one scan in each set"):
            draw_pairs(n_a, n_b, 10, rng)


def test_paired_counts_every_draw(kit):
    a = kit.brains(5, 0)
    b = kit.brains(4, 1)
    out = paired(a, b, 333, np.random.default_rng(0), EvaluationSettings(progress=False), "t")
    assert out["ncc"]["comparisons"] == 333
    assert out["ncc"]["distinct_pairs"] <= 20
    inside = paired(a, None, 50, np.random.default_rng(0), EvaluationSettings(progress=False), "t")
    assert inside["mae"]["distinct_pairs"] <= 10  # unordered pairs of 5 scans


def test_pair_matrices_match_direct_pair_metrics(kit):
    import torch

    from ratgan.evaluation.metrics import pair_metrics
    from ratgan.evaluation.pairs import pair_matrices

    a = np.stack([rescale_unit(v) for v in kit.brains(5, 0)])
    b = np.concatenate([a[:1] + 1e-4, kit.noise(3, 1)])  # a near-copy stresses cancellation
    mats = pair_matrices(a, b, EvaluationSettings(progress=False), "t", block=2)
    i, j = np.meshgrid(range(5), range(4), indexing="ij")
    direct = pair_metrics(
        torch.from_numpy(a[i.ravel()]).double(), torch.from_numpy(b[j.ravel()]).double()
    )
    for key in ("ncc", "mae", "mmd", "psnr", "rmse"):
        np.testing.assert_allclose(
            mats[key].ravel(), direct[key].double().numpy(), rtol=1e-4, atol=1e-6, err_msg=key
        )


def test_preparation_crops_centred_and_rescales():
    vol = np.zeros((8, 8, 64), dtype=np.float32)
    vol[..., 12:52] = np.arange(40, dtype=np.float32) + 5
    out = prepare_volume(vol, (8, 8, 40))
    assert out.shape == (8, 8, 40)
    assert out.min() == 0 and out.max() == 1
    assert np.allclose(out[0, 0], np.arange(40) / 39)
    assert centre_crop(vol, (8, 8, 40)).shape == (8, 8, 40)
    with pytest.raises(ValueError):
        centre_crop(vol, (9, 8, 40))


def test_histogram_w1():
    p = np.zeros(10)
    q = np.zeros(10)
    p[0], q[5] = 1, 1
    assert histogram_w1(p, q) == pytest.approx(0.5)  # moved half the unit interval
    assert histogram_w1(p, p) == 0


def test_brightest_voxel_gap_known_answer():
    from ratgan.evaluation.protocol import tail_percentile, voxel_statistics

    # 1,000 voxels 0, 1, ..., 999; "squeezed": the same with the brightest voxel pulled in to
    # 998, so after min/max rescaling every other voxel comes out brighter by 999 / 998
    base = np.arange(1000.0).reshape(10, 10, 10)
    squeezed = base.copy()
    squeezed[-1, -1, -1] = 998.0
    real = _set("real", [base, base])
    fake = _set("fake", [squeezed, squeezed])
    expected = np.percentile(np.arange(1000.0), 99.9) / 999  # numpy's own percentile
    assert tail_percentile(real.volumes) == pytest.approx(expected)
    assert tail_percentile(fake.volumes) == pytest.approx(
        np.percentile(np.minimum(np.arange(1000.0), 998), 99.9) / 998
    )
    settings = EvaluationSettings(**FAST)
    voxel, rows = voxel_statistics(real, real, [fake], "real (held-out vs real)", settings)
    assert rows["reference"]["tail_gap"] == 0  # the same scans as held-out
    gap = tail_percentile(fake.volumes) - tail_percentile(real.volumes)
    assert gap > 0 and rows["fake"]["tail_gap"] == pytest.approx(gap)
    assert voxel.tails == pytest.approx(
        {"real": expected, "held-out real": expected, "fake": expected + gap}
    )


def test_real_beats_noise_on_every_metric(kit):
    real = _set("real", kit.brains(12, 1))
    held = _set("held-out", kit.brains(8, 2))
    noise = _set("noise", kit.noise(8, 3))
    settings = EvaluationSettings(**FAST)
    res = evaluate(real, [held, noise], settings, heldout=held)
    rows = {name: row_metrics(res, name) for name in res.rows}
    ref = rows[res.reference_row]
    target = value(ref, "msssim")
    keys = (*PAPER_COLUMNS, *EXTRA_COLUMNS)
    for better in (ref, rows["held-out"]):
        won = beats(better, rows["noise"], target, keys)
        assert set(won) == set(keys)
        assert all(won.values()), {k: v for k, v in won.items() if not v}
    # the held-out set scored as a synthetic set reproduces the reference row's numbers
    for key in ("ncc", "mae", "mmd", "psnr", "rmse"):
        assert value(rows["held-out"], key) == pytest.approx(value(ref, key), rel=0.05)
    assert res.memorisation.synthetic["noise"]["near_copies"] == 0
    # with held-out scans the distances carry a bootstrap spread (not "± 0.00") and a
    # permutation p-value: noise is as distinguishable as 200 permutations can say
    space = res.feature_spaces[0].rows
    assert space["noise"]["mmd_p"] == pytest.approx(1 / 201)
    assert space[res.reference_row]["fd"]["std"] > 0 and "ci" in space["noise"]["fd"]
    # the p column is never ranked: the held-out set's larger p is not bolded as "best"
    lines = [ln for ln in feature_section(res).splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    col = next(i for i, h in enumerate(header) if h.startswith("p vs held-out"))
    cells = [[c.strip() for c in ln.strip("|").split("|")][col] for ln in lines[2:]]
    assert cells and not any(c.startswith("**") for c in cells), cells
    # the threshold is fitted on the real scans' leave-one-out neighbours; the held-out
    # scans, not fitted on, give its realised false-positive rate (the same held-out scans
    # scored as a synthetic set are flagged alike)
    memo = res.memorisation.reference
    assert len(memo["nn_ncc"]) == 12 and len(memo["heldout"]["nn_ncc"]) == 8
    assert memo["heldout"]["fraction"] == res.memorisation.synthetic["held-out"]["fraction"]
    from ratgan.evaluation.report import markdown

    assert "realised false-positive rate" in markdown(res)
    assert res.settings["msssim"]["scales"] == 3  # 32x32x20 holds 3 scales of kernel 3


def test_same_seed_same_numbers(kit):
    real = _set("real", kit.brains(8, 1))
    syn = _set("syn", kit.brains(6, 4))
    a = evaluate(real, [syn], EvaluationSettings(**FAST))
    b = evaluate(real, [syn], EvaluationSettings(**FAST))
    c = evaluate(real, [syn], EvaluationSettings(**{**FAST, "seed": 1}))
    for key in ("msssim", "ncc", "fd", "rbf_mmd"):
        assert row_metrics(a, "syn")[key] == row_metrics(b, "syn")[key]
    assert row_metrics(a, "syn")["fd"] != row_metrics(c, "syn")["fd"]


def test_adding_a_set_keeps_the_other_sets_numbers(kit):
    """Each stage draws from a stream named after the stage and the set."""
    real = _set("real", kit.brains(8, 1))
    syn = _set("syn", kit.brains(6, 4))
    other = _set("other", kit.noise(6, 5))
    settings = EvaluationSettings(**FAST)
    alone = evaluate(real, [syn], settings)
    with_other = evaluate(real, [other, syn], settings)
    for key in ("msssim", "ncc", "mmd"):
        assert row_metrics(alone, "syn")[key] == row_metrics(with_other, "syn")[key]
    assert (
        alone.rows[alone.reference_row].metrics["msssim"]
        == with_other.rows[with_other.reference_row].metrics["msssim"]
    )


@pytest.mark.parametrize("with_heldout", [False, True])
def test_adding_a_set_keeps_the_other_sets_feature_distances(kit, with_heldout):
    """The feature-space distances too: each set's subsets, bootstrap and permutations come
    from its own stream (before, one stream was shared in order, so adding a set moved every
    later set's Fréchet distance, precision, recall and coverage, and the reference row's)."""
    real = _set("real", kit.brains(8, 1))
    held = _set("held", kit.brains(6, 7)) if with_heldout else None
    syn = _set("syn", kit.brains(6, 4))
    other = _set("other", kit.noise(6, 5))
    settings = EvaluationSettings(**FAST)
    alone = evaluate(real, [syn], settings, heldout=held)
    with_other = evaluate(real, [other, syn], settings, heldout=held)
    for a, b in zip(alone.feature_spaces, with_other.feature_spaces, strict=True):
        for row in ("syn", alone.reference_row):
            for key in ("fd", "rbf_mmd", "precision", "recall", "density", "coverage"):
                assert a.rows[row][key] == b.rows[row][key], (a.name, row, key)


def test_a_set_named_like_the_reference_row_is_refused(kit):
    real = _set("real", kit.brains(8, 1))
    with pytest.raises(ValueError, match="reference"):
        evaluate(real, [_set("reference", kit.brains(6, 4))], EvaluationSettings(**FAST))


def test_a_small_set_lowers_the_common_subset_size_and_says_so(kit, caplog):
    """All sets share one subset size, the smallest set's when it is below the reference
    pool's; the sets that lowered it are recorded, warned about and named in the report."""
    from ratgan.evaluation.report import feature_section

    real = _set("real", kit.brains(8, 1))  # without --heldout the pool is 4 of the 8
    syn = _set("syn", kit.brains(6, 4))
    settings = EvaluationSettings(**FAST)
    alone = evaluate(real, [syn], settings).feature_spaces[0].info
    assert alone["subset_size"] == 4 and alone["subset_limited_by"] == {}
    with caplog.at_level("WARNING"):
        res = evaluate(real, [syn, _set("small", kit.brains(3, 5))], settings)
    info = res.feature_spaces[0].info
    assert info["subset_size"] == 3 and info["reference_pool_size"] == 4
    assert info["subset_limited_by"] == {"small": 3}
    assert "'small' (3 scans)" in caplog.text
    assert "use subsets of 3 scans instead of 4" in caplog.text
    assert "lowered by the smaller synthetic set(s) *small* (3 scans)" in " ".join(
        feature_section(res).split()
    )


def test_larger_scans_are_cropped_with_a_warning(kit, tmp_path, caplog):
    from ratgan.evaluation.prepare import load_set

    padded = np.zeros((3, 32, 32, 26), dtype=np.float32)
    padded[..., 3:23] = kit.brains(3, 5)
    kit.write_set(tmp_path / "padded", padded)
    with caplog.at_level("WARNING"):
        s = load_set("padded", tmp_path / "padded", kit.shape, progress=False)
    assert s.shape == kit.shape and s.notes == ["3 scans centre-cropped to [32, 32, 20]"]
    assert "3 of 3 scans of set 'padded' (such as " in caplog.text
    assert "are larger than the real scans (32x32x20)" in caplog.text


def test_sem_is_the_standard_error_over_scans():
    """Pair values with a known standard error of their mean: value(i, j) = u_i + v_j + e_ij
    with u, v, e standard normal over 24 and 24 scans (inside one set: u_i + u_j + e_ij),
    whose mean over pairs varies by sqrt(1/24 + 1/24 + 1/576) (inside: sqrt(4/24 + 2/552))
    from one draw of the scans to another.  The sem of 21,000 draws, averaged over 30 draws
    of the scans, is within 20 % of it; std / sqrt(draws) was 25 (36) times too small."""
    from ratgan.evaluation.pairs import stats

    n, count = 24, 21_000
    want = {False: (2 / n + 1 / n**2) ** 0.5, True: (4 / n + 2 / (n * (n - 1))) ** 0.5}
    for within, se in want.items():
        sems, means = [], []
        for seed in range(30):
            rng = np.random.default_rng([seed, within])
            u, v, e = rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal((n, n))
            if within:
                v, e = u, (e + e.T) / 2**0.5
            pairs = draw_pairs(n, None if within else n, count, rng)
            values = u[pairs[:, 0]] + v[pairs[:, 1]] + e[pairs[:, 0], pairs[:, 1]]
            out = stats(values, pairs, within)
            sems.append(out["sem"])
            means.append(out["mean"])
        assert np.mean(sems) == pytest.approx(se, rel=0.2), (within, np.mean(sems), se)
        assert np.std(means, ddof=1) == pytest.approx(se, rel=0.35)  # the known answer holds


@pytest.mark.parametrize("boot, perms", [(0, 0), (1, 40), (30, 0), (30, 40)])
def test_heldout_note_names_only_the_uncertainty_computed(boot, perms):
    """With a held-out set, report.md's note on the feature distances says what their ± and p
    are.  ``bootstrap`` 0 or 1 draws none (the ± stays the std over repeats) and
    ``permutations`` 0 gives no p column; the note claimed "± = std over 0 bootstrap draws"
    and a permutation p-value all the same."""
    from ratgan.evaluation.protocol import set_level
    from ratgan.evaluation.report import _uncertainty_note
    from ratgan.evaluation.results import FeatureSpaceResult

    rng = np.random.default_rng(0)
    real, held = rng.standard_normal((12, 4)), rng.standard_normal((8, 4))
    settings = EvaluationSettings(
        progress=False, bootstrap=boot, permutations=perms, split_repeats=3
    )
    rows, info = set_level(real, held, {"s": rng.standard_normal((8, 4)) + 1}, settings, "t")
    note = _uncertainty_note(FeatureSpaceResult("t", {"dim": 4}, info, rows))
    for row in rows.values():
        assert ("ci" in row["fd"]) == (boot > 1)
        assert ("mmd_p" in row) == (perms > 0)
    assert ("bootstrap" in note) == (boot > 1), note
    assert ("permutation" in note) == (perms > 0), note
    assert ("p is small" in note) == (perms > 0), note


def test_voxel_std_maps_are_unbiased_so_sets_of_other_sizes_compare():
    # The std-map RMSE compares sets of different sizes (a held-out set is often smaller than
    # the real one); with the 1/n variance a set of n scans has its std shrunk by
    # sqrt((n - 1) / n), a bias that depends on n alone.  Known answer: for two volumes a and
    # b the unbiased per-voxel std is |a - b| / sqrt(2).
    from ratgan.evaluation.protocol import voxel_maps

    rng = np.random.default_rng(0)
    a, b = rng.random((2, 4, 5, 3))
    mean, std = voxel_maps(np.stack([a, b]))
    np.testing.assert_allclose(mean, (a + b) / 2, rtol=1e-6)
    np.testing.assert_allclose(std, np.abs(a - b) / np.sqrt(2), rtol=1e-5)
