"""Feature space and set distances against explicit computations."""

import numpy as np
import pytest
import scipy.linalg
import torch

from ratgan.evaluation import features as F


def test_frechet_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((60, 5))
    b = rng.standard_normal((50, 5)) @ rng.standard_normal((5, 5)) + 0.5
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real
    want = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean)
    assert F.frechet_distance(a, b) == pytest.approx(want, rel=1e-6)


def test_frechet_known_cases():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((40, 8))
    assert F.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    shift = np.arange(8) * 0.1
    assert F.frechet_distance(a, a + shift) == pytest.approx((shift**2).sum(), rel=1e-6)
    # rank-deficient covariances (fewer samples than dimensions) stay finite and >= 0
    small = rng.standard_normal((5, 20))
    assert 0 < F.frechet_distance(small, small + 1) < np.inf


def test_rbf_mmd_matches_explicit_loops():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((7, 3)), rng.standard_normal((6, 3)) + 0.3
    sigma = 1.3

    def k(u, v):
        return np.exp(-((u - v) ** 2).sum() / (2 * sigma**2))

    t_aa = sum(k(a[i], a[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    t_bb = sum(k(b[i], b[j]) for i in range(6) for j in range(6) if i != j) / (6 * 5)
    t_ab = sum(k(a[i], b[j]) for i in range(7) for j in range(6)) / (7 * 6)
    assert F.rbf_mmd2(a, b, sigma) == pytest.approx(t_aa + t_bb - 2 * t_ab, rel=1e-9)
    far = F.rbf_mmd2(a, b + 10, sigma)
    assert far > F.rbf_mmd2(a, b, sigma)


def test_median_bandwidth():
    pts = np.array([[0.0], [1.0], [3.0]])
    assert F.median_bandwidth(pts) == pytest.approx(2.0)  # distances 1, 2, 3


def test_precision_recall_matches_explicit_definition():
    rng = np.random.default_rng(3)
    real = rng.standard_normal((12, 2))
    fake = rng.standard_normal((10, 2)) * 1.5 + 0.5
    k = 3

    def radii(x):
        d = np.linalg.norm(x[:, None] - x[None], axis=2)
        return np.array([np.sort(np.delete(d[i], i))[k - 1] for i in range(len(x))])

    r_real, r_fake = radii(real), radii(fake)
    prec = np.mean([any(np.linalg.norm(f - real[j]) <= r_real[j] for j in range(12)) for f in fake])
    rec = np.mean([any(np.linalg.norm(r - fake[j]) <= r_fake[j] for j in range(10)) for r in real])
    assert F.precision_recall(real, fake, k) == pytest.approx((prec, rec))
    assert F.precision_recall(real, real.copy(), k) == (1.0, 1.0)
    assert F.precision_recall(real, fake + 100, k) == (0.0, 0.0)


def test_random_features_are_seeded_and_see_blur_and_noise():
    rng = np.random.default_rng(4)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in (32, 32, 20)], indexing="ij"))
    r = np.sqrt((grid**2).sum(0))
    sharp = ((r < 0.7) * 0.8 + (np.sin(8 * grid[0]) > 0) * 0.2 * (r < 0.7)).astype(np.float32)
    blurred = torch.nn.functional.avg_pool3d(torch.from_numpy(sharp)[None, None], 5, 1, 2)[0, 0]
    noisy = np.clip(sharp + 0.2 * rng.standard_normal(sharp.shape), 0, 1).astype(np.float32)
    vols = torch.from_numpy(np.stack([sharp, blurred.numpy(), noisy]))
    f1 = F.RandomConvFeatures(seed=7)(vols)
    f2 = F.RandomConvFeatures(seed=7)(vols)
    f3 = F.RandomConvFeatures(seed=8)(vols)
    assert f1.shape == (3, F.RandomConvFeatures().dim) == (3, 176)
    assert torch.equal(f1, f2)
    assert not torch.allclose(f1, f3)

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / a.norm())

    assert rel(f1[0], f1[1]) > 0.02 and rel(f1[0], f1[2]) > 0.02


def _tf32_settings() -> tuple:
    return (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)


def test_evaluate_computes_in_full_float32_and_restores_the_settings(monkeypatch):
    """PyTorch runs cuDNN float32 convolutions in TF32 by default; ``evaluate`` switches CUDA
    convolutions and matrix products to IEEE float32 for its stages and restores the user's
    settings afterwards, also when a stage fails."""
    from ratgan.evaluation import protocol
    from ratgan.evaluation.settings import EvaluationSettings, exact_float32

    before = _tf32_settings()
    assert before[0] == "tf32"  # the default this guards against
    with exact_float32():
        assert _tf32_settings() == ("ieee", "ieee")
    assert _tf32_settings() == before

    seen = []

    def stage(*args):
        seen.append(_tf32_settings())
        raise RuntimeError("stop here")

    monkeypatch.setattr(protocol, "paper_metrics", stage)
    real = protocol.ScanSet("real", np.zeros((2, 4, 4, 4), np.float32), [], "memory")
    with pytest.raises(RuntimeError, match="stop here"):
        protocol.evaluate(real, [], EvaluationSettings(progress=False, anatomy=False))
    assert seen == [("ieee", "ieee")]
    assert _tf32_settings() == before


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_random_features_on_a_gpu_match_the_cpu_inside_exact_float32():
    from ratgan.evaluation.settings import exact_float32

    vols = torch.from_numpy(np.random.default_rng(0).random((2, 32, 32, 24), np.float32))
    cpu = F.RandomConvFeatures(seed=0)(vols)
    with exact_float32():
        gpu = F.RandomConvFeatures(seed=0, device="cuda")(vols)
    torch.testing.assert_close(gpu, cpu, rtol=1e-5, atol=1e-6)
