"""Memorisation: nearest-training-scan NCC and near-copy flags."""

import numpy as np
import pytest

from ratgan.evaluation import memorisation as mem


def test_ncc_matrix_matches_corrcoef():
    rng = np.random.default_rng(0)
    a = rng.random((4, 6, 5, 3), dtype=np.float32)
    b = rng.random((3, 6, 5, 3), dtype=np.float32)
    got = mem.ncc_matrix(a, b)
    for i in range(4):
        for j in range(3):
            want = np.corrcoef(a[i].ravel().astype(np.float64), b[j].ravel())[0, 1]
            assert got[i, j] == pytest.approx(want, abs=1e-5)


def test_near_copies_are_flagged_and_new_subjects_are_not(kit):
    train = kit.brains(8, 11)
    rng = np.random.default_rng(1)
    copies = train[:3] + 0.002 * rng.standard_normal(train[:3].shape).astype(np.float32)
    new = kit.brains(5, 12)
    ref_nn, _ = mem.nearest(train, train, exclude_self=True)
    assert (ref_nn < 0.999).all()  # exclude_self: nobody is its own neighbour
    syn = np.concatenate([copies, new])
    nn, idx = mem.nearest(syn, train)
    assert list(idx[:3]) == [0, 1, 2]
    s = mem.summary(nn, ref_nn)
    flagged = nn > s["threshold"]
    assert flagged[:3].all() and (nn[:3] > 0.999).all()
    # a new subject passes the max-of-real threshold with chance ~1/(n_train + 1) each
    assert flagged[3:].sum() <= 1
    assert s["near_copies"] == flagged.sum()
    assert s["fraction"] == pytest.approx(flagged.mean())
    assert s["threshold"] == pytest.approx(ref_nn.max())
    assert mem.summary(nn, ref_nn, threshold=1.0)["near_copies"] == 0
