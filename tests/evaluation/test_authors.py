"""The authors' protocol: Kwon's MS-SSIM and the batch-of-2 metrics, each checked against a
literal computation written the way the published code does it."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from ratgan.evaluation import authors


def _kwon_reference(img1: torch.Tensor, img2: torch.Tensor) -> float:
    """Kwon et al.'s ``msssim_3d`` transcribed: ``ssim_exact`` on the (1, X, Y, Z) arrays,
    ``avg_pool3d`` between scales, ``prod(mcs[:-1] ** w[:-1] * mssim[-1] ** w[-1])``."""
    weights = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
    mssim, mcs = [], []
    for _ in range(5):
        a, b = img1.numpy(), img2.numpy()
        mu1, mu2 = ndimage.gaussian_filter(a, 1.5), ndimage.gaussian_filter(b, 1.5)
        s1 = ndimage.gaussian_filter(a * a, 1.5) - mu1 * mu1
        s2 = ndimage.gaussian_filter(b * b, 1.5) - mu2 * mu2
        s12 = ndimage.gaussian_filter(a * b, 1.5) - mu1 * mu2
        c1, c2 = 0.01**2, 0.03**2
        ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / (
            (mu1**2 + mu2**2 + c1) * (s1 + s2 + c2)
        )
        mssim.append(np.mean(ssim_map))
        mcs.append(np.mean((2.0 * s12 + c2) / (s1 + s2 + c2)))
        img1, img2 = F.avg_pool3d(img1, (2, 2, 2)), F.avg_pool3d(img2, (2, 2, 2))
    pow1, pow2 = np.asarray(mcs) ** weights, np.asarray(mssim) ** weights
    return float(np.prod(pow1[:-1] * pow2[-1]))


def test_kwon_msssim_matches_the_published_formulation(kit):
    vols = kit.brains(3, 7, shape=(64, 64, 40))  # the published code needs 5 poolings
    for i, j in ((0, 1), (1, 2)):
        want = _kwon_reference(torch.from_numpy(vols[i])[None], torch.from_numpy(vols[j])[None])
        assert authors.kwon_msssim(vols[i], vols[j]) == pytest.approx(want, rel=1e-5)
    assert authors.kwon_msssim(vols[0], vols[0]) == pytest.approx(1.0, abs=1e-6)


def test_batch_metrics_match_a_literal_batch_loop(kit):
    """Each batch computed as the notebook does: 2 real scans, 2 synthetic scans."""
    real, syn = kit.brains(6, 1), kit.brains(5, 2)
    epochs = 4
    got = authors.pair_metrics_by_epoch(real, syn, epochs, np.random.default_rng(3))
    idx = authors._batches(6, 5, epochs, np.random.default_rng(3))
    side = max(real.shape[1:])
    pad = [(0, 0)] + [((side - s) // 2, side - s - (side - s) // 2) for s in real.shape[1:]]
    per: dict[str, list] = {k: [] for k in ("ncc", "mae", "mmd", "psnr", "rmse")}
    for r0, r1, s0, s1 in idx.reshape(-1, 4):
        y = real[[r0, r1]].astype(np.float64)  # the real batch
        x = syn[[s0, s1]].astype(np.float64)  # two generated scans
        yp, xp = np.pad(y, pad), np.pad(x, pad)
        per["ncc"].append(
            np.mean([np.corrcoef(xp[k].ravel(), yp[k].ravel())[0, 1] for k in range(2)])
        )
        per["mae"].append(np.abs(xp[:1] - yp).mean())  # one scan broadcast against the batch
        per["rmse"].append(np.sqrt(((x[:1] - y) ** 2).mean()))
        per["psnr"].append(-10 * np.log10(((x - y) ** 2).mean()))
        per["mmd"].append(((x.mean(0) - y.mean(0)) ** 2).sum())
    for key, values in per.items():
        epoch_means = np.asarray(values).reshape(epochs, -1).mean(1)
        assert got[key]["mean"] == pytest.approx(epoch_means.mean(), rel=1e-6), key
        assert got[key]["std"] == pytest.approx(epoch_means.std(ddof=1), rel=1e-5), key
        assert got[key]["epochs"] == epochs and got[key]["comparisons"] == epochs * 3


def test_reference_batches_never_compare_a_scan_with_itself():
    idx = authors._batches(7, None, 20, np.random.default_rng(0))
    assert idx.shape == (20, 3, 4)
    flat = idx.reshape(-1, 4)
    assert all(len(set(row)) == 4 for row in flat.tolist())


def test_authors_mmd_is_smaller_than_the_per_pair_mmd(kit):
    """Averaging 2 scans before the squared distance removes part of the difference."""
    from ratgan.evaluation.pairs import pair_matrices
    from ratgan.evaluation.settings import EvaluationSettings

    real, syn = kit.brains(8, 1), kit.brains(8, 2)
    batch = authors.pair_metrics_by_epoch(real, syn, 10, np.random.default_rng(0))["mmd"]
    per_pair = pair_matrices(real, syn, EvaluationSettings(progress=False), "t")["mmd"]
    assert batch["mean"] < 0.8 * per_pair.mean()


def test_synthetic_msssim_is_the_notebooks_mean_of_running_means(kit, monkeypatch):
    """``ms_ssim_generated``: after each pair the running mean of all pairs so far is
    appended, and the mean and std of that list are reported (a literal loop here)."""
    vols = kit.brains(5, 3)
    table = {(i, j): 0.5 + 0.07 * i - 0.05 * j + 0.01 * i * j for i in range(5) for j in range(5)}
    monkeypatch.setattr(
        authors, "kwon_msssim", lambda a, b: table[(int(a[0, 0, 0]), int(b[0, 0, 0]))]
    )
    tagged = vols.copy()
    tagged[:, 0, 0, 0] = np.arange(5)  # each scan carries its index, to look the value up
    got = authors.msssim_running(tagged, 40, np.random.default_rng(4))
    rng = np.random.default_rng(4)
    meanarr, sum_ssim = [], 0.0
    values = []
    for i in range(40):
        a, b = sorted(rng.choice(5, 2, replace=False))
        msssim = table[(a, b)]
        values.append(msssim)
        sum_ssim = sum_ssim + msssim
        meanarr.append(sum_ssim / (i + 1))
    assert got["mean"] == pytest.approx(np.mean(meanarr))
    assert got["std"] == pytest.approx(np.std(meanarr, ddof=1))  # torch.std: n - 1
    assert got["per_pair_std"] == pytest.approx(np.std(values, ddof=1))
    assert got["std"] < 0.5 * got["per_pair_std"]  # it hides the spread of the pairs
    assert got["comparisons"] == 40
