"""Known answers for both feature spaces on a small phantom cohort.

Held-out phantom scans must score closer to the reference scans than strongly corrupted
copies of themselves.  The full table (64 subjects, three strengths, every corruption) is
``benchmarks/feature_space_validation.py``; docs/evaluation.md shows it.
"""

import numpy as np
import pytest

from ratgan.data.phantom import make_subject, subject_seed
from ratgan.evaluation import features as feat
from ratgan.evaluation.anatomy import AnatomySettings, fit_anatomy_features
from ratgan.evaluation.corruptions import CORRUPTIONS, corrupt, ranking, validation_rows
from ratgan.evaluation.prepare import rescale_unit

SMALL = AnatomySettings(widths=(4, 8, 16, 32), steps=40, batch_size=2)


def _cohort(seed: int, start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    subjects = [make_subject(subject_seed(seed, i)) for i in range(start, start + n)]
    return (
        np.stack([rescale_unit(img) for img, _, _ in subjects]),
        np.stack([lab for _, lab, _ in subjects]),
    )


@pytest.fixture(scope="module")
def table() -> list[dict]:
    real, labels = _cohort(0, 0, 12)
    held, _ = _cohort(0, 12, 10)
    space = fit_anatomy_features(real, labels, seed=0, settings=SMALL)
    rnd = feat.RandomConvFeatures(0)
    strongest = {
        k: (fn, (s[-1],), u)
        for k, (fn, s, u) in CORRUPTIONS.items()
        if k in ("blur", "noise", "shift")
    }
    return validation_rows(
        {"anatomy": space.features, "random": lambda v: feat.extract(v, rnd, 4, progress=False)},
        real,
        held,
        corruptions=strongest,
        standardised=("anatomy",),
    )


@pytest.mark.parametrize("space", ["anatomy", "random"])
def test_strong_corruptions_score_worse_than_heldout_real(table, space):
    held = table[0]
    assert held["set"] == "held-out real"
    for row in table[1:]:
        assert row[space]["fd"] > held[space]["fd"], (space, row["set"])
        assert row[space]["rbf_mmd2"] > held[space]["rbf_mmd2"], (space, row["set"])


def test_heldout_real_is_close_to_real(table):
    for space in ("anatomy", "random"):
        assert table[0][space]["recall"] >= 0.5 and table[0][space]["precision"] >= 0.5


def test_ranking_flags_non_monotonic_rows():
    rows = [{"set": "held-out real", "strength": None, "s": {"fd": 1.0}}]
    rows += [{"set": "a", "strength": k, "s": {"fd": v}} for k, v in enumerate((2, 3, 4))]
    rows += [{"set": "b", "strength": k, "s": {"fd": v}} for k, v in enumerate((2, 5, 4))]
    rows += [{"set": "c", "strength": k, "s": {"fd": v}} for k, v in enumerate((0.5, 3, 4))]
    got = ranking(rows, "s", "fd")
    assert got["a"] == {"worse_than_heldout": True, "monotonic": True}
    assert got["b"] == {"worse_than_heldout": True, "monotonic": False}
    assert got["c"] == {"worse_than_heldout": False, "monotonic": True}


def test_corruptions_do_what_they_say():
    rng = np.random.default_rng(0)
    v = rng.random((3, 8, 6, 4), dtype=np.float32)
    v[:, 0, 0, 0], v[:, 1, 0, 0] = 0.0, 1.0  # every volume already spans [0, 1]
    np.testing.assert_array_equal(corrupt(v, "lr-flip", 1.0), v[:, ::-1])
    assert (corrupt(v, "lr-flip", 1 / 3) != v).reshape(3, -1).any(1).sum() == 1
    swapped = corrupt(v, "hemisphere swap", 1.0)
    np.testing.assert_array_equal(swapped[:, :4], v[:, ::-1][:, :4])
    np.testing.assert_array_equal(swapped[:, 4:], v[:, 4:])
    shifted = corrupt(v, "shift", 2)
    kept = v[:, :-2, :-2]  # zero fill sets the minimum to 0; rescaling divides by the maximum
    np.testing.assert_allclose(
        shifted[:, 2:, 2:], kept / kept.max(axis=(1, 2, 3), keepdims=True), rtol=1e-6
    )
    assert (shifted[:, :2] == 0).all() and (shifted[:, :, :2] == 0).all()
    np.testing.assert_allclose(
        corrupt(v, "gamma", 0.5), np.stack([rescale_unit(np.sqrt(x)) for x in v]), rtol=1e-6
    )
    for name, (_, strengths, _) in CORRUPTIONS.items():
        out = corrupt(v, name, strengths[-1])
        assert out.shape == v.shape and out.min() >= 0 and out.max() <= 1, name
