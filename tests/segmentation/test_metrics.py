import numpy as np
import pytest
import torch

from ratgan.segmentation.metrics import dice_scores, make_loss


def test_dice_on_known_overlaps():
    target = np.zeros((10, 10, 10), np.int64)
    pred = np.zeros_like(target)
    target[0:4, 0:5] = 1  # GM: 200 voxels
    pred[0:2, 0:5] = 1  # 100 voxels, all inside the target's GM
    pred[8:10, 0:5] = 1  # 100 more, outside
    target[5:7, 0:5] = 2  # WM: 100 voxels
    pred[5:7, 0:5] = 2  # exact
    target[9, 9, 9] = 3  # CSF: 1 voxel, missed entirely
    s = dice_scores(pred, target)
    gm = 2 * 100 / (200 + 200)
    assert s["GM"][0] == pytest.approx(gm)
    assert s["WM"][0] == pytest.approx(1.0)
    assert s["CSF"][0] == pytest.approx(0.0)
    # micro-averaged over the three tissues: 2 * (100 + 100 + 0) / ((200 + 200) + (100 + 100) + 1)
    assert s["global"][0] == pytest.approx(2 * 200 / 601)
    assert s["mean"][0] == pytest.approx((gm + 1 + 0) / 3)
    # whole brain: pred brain 300 voxels, target brain 301, overlap 200
    assert s["brain"][0] == pytest.approx(2 * 200 / 601)


def test_dice_perfect_and_absent_class_is_nan():
    t = torch.zeros(2, 1, 6, 6, 6, dtype=torch.long)
    t[:, :, :3] = 1
    t[:, :, 3:5] = 2
    s = dice_scores(t, t.clone())
    assert np.allclose(s["GM"], 1) and np.allclose(s["WM"], 1) and np.allclose(s["global"], 1)
    assert np.isnan(s["CSF"]).all()
    assert np.allclose(s["mean"], 1)


def test_dice_matches_hand_computation_on_random_maps():
    rng = np.random.default_rng(3)
    p = rng.integers(0, 4, (3, 8, 8, 8))
    t = rng.integers(0, 4, (3, 8, 8, 8))
    s = dice_scores(p, t)
    for c, name in enumerate(("GM", "WM", "CSF"), start=1):
        for i in range(3):
            inter = ((p[i] == c) & (t[i] == c)).sum()
            want = 2 * inter / ((p[i] == c).sum() + (t[i] == c).sum())
            assert s[name][i] == pytest.approx(want)


def test_dice_loss_is_low_for_a_confident_right_answer():
    y = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    y[..., :2] = 1
    y[..., 2, :] = 3
    good = torch.nn.functional.one_hot(y[:, 0], 4).movedim(-1, 1).float() * 20
    for kind in ("dice", "dice_ce"):
        loss = make_loss(kind)
        assert float(loss(good, y)) < 0.05
        assert float(loss(-good, y)) > 0.5
