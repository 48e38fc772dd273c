"""Pairwise metrics: known cases and agreement with independent NumPy computations."""

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from ratgan.evaluation import metrics as M
from ratgan.evaluation.metrics import MSSSIMSettings

SHAPE = (64, 64, 40)


def _pair(seed=0, shape=SHAPE, sigma=0.1):
    """A smooth structured volume in [0, 1] and a noisy copy of it (not clipped)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    r = np.sqrt((grid**2).sum(0))
    x = (np.clip(1 - r, 0, 1) + 0.2 * np.sin(6 * grid[0]) * (r < 1)).astype(np.float32)
    x = (x - x.min()) / (x.max() - x.min())
    y = (x + sigma * rng.standard_normal(shape)).astype(np.float32)
    return x, y


def _t(*arrays):
    return [torch.from_numpy(np.ascontiguousarray(a))[None] for a in arrays]


# --------------------------------------------------------------------------- NumPy references


def np_ncc(x, y):
    return float(np.corrcoef(x.ravel().astype(np.float64), y.ravel().astype(np.float64))[0, 1])


def np_gauss(size, sigma):
    c = np.arange(size) - (size - 1) / 2
    g = np.exp(-(c**2) / (2 * sigma**2))
    return g / g.sum()


def np_filter(v, size, sigma):
    """'valid' 3-D Gaussian filtering by explicit windowed sums (no convolution library)."""
    g = np_gauss(size, sigma)
    k = g[:, None, None] * g[None, :, None] * g[None, None, :]
    win = sliding_window_view(v, (size, size, size))
    return np.einsum("abcijk,ijk->abc", win, k)


def np_ms_ssim(x, y, scales, size=3, sigma=1.5, data_range=1.0, k1=0.01, k2=0.03):
    """Wang et al.'s MS-SSIM written out: contrast-structure at every scale but the last,
    full SSIM at the last, combined as a weighted geometric mean (weights renormalised)."""
    w = np.array(M.WANG_WEIGHTS[:scales])
    w = w / w.sum()
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    x, y = x.astype(np.float64), y.astype(np.float64)
    parts = []
    for s in range(scales):
        mx, my = np_filter(x, size, sigma), np_filter(y, size, sigma)
        vx = np_filter(x * x, size, sigma) - mx**2
        vy = np_filter(y * y, size, sigma) - my**2
        cxy = np_filter(x * y, size, sigma) - mx * my
        cs = (2 * cxy + c2) / (vx + vy + c2)
        if s < scales - 1:
            parts.append(max(cs.mean(), 0))
            x = x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2, x.shape[2] // 2, 2).mean(
                (1, 3, 5)
            )
            y = y.reshape(y.shape[0] // 2, 2, y.shape[1] // 2, 2, y.shape[2] // 2, 2).mean(
                (1, 3, 5)
            )
        else:
            lum = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
            parts.append(max((lum * cs).mean(), 0))
    return float(np.prod(np.array(parts) ** w))


# --------------------------------------------------------------------------- known cases


def test_identical_volumes():
    x, _ = _pair()
    a, b = _t(x, x.copy())
    out = M.pair_metrics(a, b)
    assert out["ncc"].item() == pytest.approx(1.0, abs=1e-6)
    assert out["mae"].item() == 0
    assert out["mmd"].item() == 0
    assert out["rmse"].item() == 0
    assert out["psnr"].item() == pytest.approx(100.0)
    assert M.ms_ssim(a, b).item() == pytest.approx(1.0, abs=1e-5)


def test_independent_noise():
    rng = np.random.default_rng(1)
    x, y = rng.random(SHAPE, dtype=np.float32), rng.random(SHAPE, dtype=np.float32)
    a, b = _t(x, y)
    out = M.pair_metrics(a, b)
    assert abs(out["ncc"].item()) < 0.01
    assert out["mae"].item() == pytest.approx(1 / 3, abs=0.003)  # E|U - V| = 1/3
    assert out["rmse"].item() == pytest.approx(6**-0.5, abs=0.003)  # E(U - V)^2 = 1/6
    # no shared structure: only the stabilising constant C2 at the flat coarse scales,
    # where averaging has removed most of the noise variance, keeps the value above 0
    assert M.ms_ssim(a, b).item() < 0.25


def test_noisy_copy_matches_theory_and_orders():
    x, y = _pair(sigma=0.1)
    a, b = _t(x, y)
    out = M.pair_metrics(a, b)
    var = x.var()
    assert out["ncc"].item() == pytest.approx((var / (var + 0.01)) ** 0.5, abs=0.005)
    assert out["mae"].item() == pytest.approx(0.1 * (2 / np.pi) ** 0.5, abs=0.002)
    assert out["psnr"].item() == pytest.approx(20.0, abs=0.1)  # MSE = 0.01
    _, y2 = _pair(sigma=0.3)
    s1 = M.ms_ssim(a, b).item()
    s2 = M.ms_ssim(*_t(x, y2)).item()
    assert 1.0 > s1 > s2 > 0.0


# ----------------------------------------------------------------- independent computations


def test_pair_metrics_match_numpy():
    rng = np.random.default_rng(3)
    x = rng.random((3, 16, 12, 10), dtype=np.float32)
    y = (0.5 * x + 0.5 * rng.random((3, 16, 12, 10), dtype=np.float32)).astype(np.float32)
    out = M.pair_metrics(torch.from_numpy(x), torch.from_numpy(y))
    for i in range(3):
        d = x[i].astype(np.float64) - y[i]
        assert out["ncc"][i].item() == pytest.approx(np_ncc(x[i], y[i]), abs=1e-6)
        assert out["mae"][i].item() == pytest.approx(np.abs(d).mean(), rel=1e-5)
        assert out["mmd"][i].item() == pytest.approx((d**2).sum(), rel=1e-5)
        assert out["rmse"][i].item() == pytest.approx(np.sqrt((d**2).mean()), rel=1e-5)
        assert out["psnr"][i].item() == pytest.approx(10 * np.log10(1 / (d**2).mean()), rel=1e-5)
    # the stand-alone functions agree with the shared computation
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    assert torch.allclose(M.ncc(tx, ty), out["ncc"])
    assert torch.allclose(M.mae(tx, ty), out["mae"])
    assert torch.allclose(M.rmse(tx, ty), out["rmse"])
    assert torch.allclose(M.psnr(tx, ty), out["psnr"])
    assert torch.allclose(M.mmd_linear_pairs(tx, ty), out["mmd"])


def test_kwon_linear_mmd_is_mean_image_distance():
    rng = np.random.default_rng(4)
    x = rng.random((4, 8, 8, 6), dtype=np.float32)
    y = rng.random((4, 8, 8, 6), dtype=np.float32)
    want = ((x.astype(np.float64).mean(0) - y.mean(0)) ** 2).sum()
    # explicit linear-kernel MMD^2: mean k(x,x') + mean k(y,y') - 2 mean k(x,y), k = dot
    fx, fy = x.reshape(4, -1).astype(np.float64), y.reshape(4, -1).astype(np.float64)
    explicit = (fx @ fx.T).mean() + (fy @ fy.T).mean() - 2 * (fx @ fy.T).mean()
    got = M.mmd_linear(torch.from_numpy(x), torch.from_numpy(y)).item()
    assert got == pytest.approx(want, rel=1e-5)
    assert got == pytest.approx(explicit, rel=1e-4)


def test_ms_ssim_matches_numpy_and_pytorch_msssim():
    x, y = _pair(seed=5, sigma=0.15)
    settings = MSSSIMSettings()
    assert settings.scales_for(SHAPE) == 4
    got = M.ms_ssim(*_t(x, y), settings).item()
    assert got == pytest.approx(np_ms_ssim(x, y, 4), abs=2e-5)

    import pytorch_msssim
    from pytorch_msssim.ssim import _fspecial_gauss_1d

    win = _fspecial_gauss_1d(3, 1.5).reshape(1, 1, 1, 1, 3)
    lib = pytorch_msssim.ms_ssim(
        *[t[:, None] for t in _t(x, y)],
        data_range=1.0,
        win=win,
        weights=list(settings.weights_for(SHAPE)),
        size_average=False,
    ).item()
    assert got == pytest.approx(lib, abs=1e-5)
    # the trap the issue names: pytorch-msssim's default data range of 255 scores ~1
    default = pytorch_msssim.ms_ssim(
        *[t[:, None] for t in _t(x, y)],
        win=win,
        weights=list(settings.weights_for(SHAPE)),
        size_average=False,
    ).item()
    assert default > 0.99 > got


def test_ms_ssim_settings_for_64x64x40():
    s = MSSSIMSettings()
    d = s.describe(SHAPE)
    assert d["scales"] == 4 and d["coarsest_scale_shape"] == [8, 8, 5]
    assert sum(d["weights"]) == pytest.approx(1.0)
    assert d["weights"][0] == pytest.approx(0.0448 / sum(M.WANG_WEIGHTS[:4]))
    assert s.scales_for((32, 32, 20)) == 3
    with pytest.raises(ValueError):
        MSSSIMSettings(scales=5).scales_for(SHAPE)  # 40 slices cannot hold 5 scales
    with pytest.raises(ValueError):
        MSSSIMSettings(kernel_size=11, scales=4).scales_for(SHAPE)  # nor an 11-voxel window


def test_ms_ssim_is_symmetric_and_batched():
    rng = np.random.default_rng(6)
    x = torch.from_numpy(rng.random((3, 32, 32, 20), dtype=np.float32))
    y = torch.from_numpy(rng.random((3, 32, 32, 20), dtype=np.float32))
    xy = M.ms_ssim(x, y)
    assert xy.shape == (3,)
    assert torch.allclose(xy, M.ms_ssim(y, x), atol=1e-6)
    single = torch.stack([M.ms_ssim(x[i : i + 1], y[i : i + 1])[0] for i in range(3)])
    assert torch.allclose(xy, single, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16])
def test_pair_metrics_of_integer_masks_known_answer(dtype):
    """Binary masks (values 0 and 1, in [0, 1]) stored as integers: 32 of 256 voxels differ,
    so MAE = MSE = 1/8, the linear MMD is 32 and PSNR 10 log10(8) (64 voxels: twice that).
    uint8 wrapped 0 - 1 to 255 (MSE 8,128) and MAE refused integer tensors."""
    x = torch.zeros((1, 8, 8, 4), dtype=dtype)
    y = torch.zeros_like(x)
    y[0, :4, :4, :2] = 1  # 32 voxels of 256
    z = torch.zeros_like(x)
    z[0, 4:, :4, :2] = 1  # 32 other voxels: y and z differ on 64
    for a, b, n_diff in ((x, y, 32), (y, x, 32), (y, z, 64)):
        out = M.pair_metrics(a, b)
        want = n_diff / 256
        assert out["mae"].item() == pytest.approx(want)
        assert out["mse"].item() == pytest.approx(want)
        assert out["mmd"].item() == pytest.approx(n_diff)
        assert out["psnr"].item() == pytest.approx(10 * np.log10(1 / want), rel=1e-6)
        assert M.mae(a, b).item() == pytest.approx(want)
        assert M.mse(a, b).item() == pytest.approx(want)
        assert M.psnr(a, b).item() == pytest.approx(10 * np.log10(1 / want), rel=1e-6)
        assert M.mmd_linear_pairs(a, b).item() == pytest.approx(n_diff)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_pair_metrics_of_half_precision_volumes_match_float64(dtype):
    """Half-precision volumes give the metrics of their values, computed in float64 by NumPy:
    MAE was accumulated and returned in the input's precision (bfloat16 keeps 3 digits, off
    by 2e-3 of the value at 64x64x40), and differences were rounded before squaring."""
    x, y = _pair(seed=7, sigma=0.1)
    tx, ty = (torch.from_numpy(v)[None].to(dtype) for v in (x, y))
    a, b = tx.double().numpy()[0], ty.double().numpy()[0]  # the values the tensors hold
    d = a - b
    out = M.pair_metrics(tx, ty)
    assert out["mae"].item() == pytest.approx(np.abs(d).mean(), rel=1e-6)
    assert out["mse"].item() == pytest.approx((d**2).mean(), rel=1e-6)
    assert out["mmd"].item() == pytest.approx((d**2).sum(), rel=1e-6)
    assert out["ncc"].item() == pytest.approx(np_ncc(a, b), abs=1e-6)
    assert M.mae(tx, ty).item() == pytest.approx(np.abs(d).mean(), rel=1e-6)
    assert M.mse(tx, ty).item() == pytest.approx((d**2).mean(), rel=1e-6)
    assert M.mmd_linear_pairs(tx, ty).item() == pytest.approx((d**2).sum(), rel=1e-6)
