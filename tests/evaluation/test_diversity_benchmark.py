"""benchmarks/diversity.py on volumes whose diversity is known by construction."""

import numpy as np
from scipy.ndimage import gaussian_filter


def _anatomy(rng: np.random.Generator, n: int, vary: float) -> np.ndarray:
    """n smooth 'heads': one shared blob pattern plus ``vary`` times a subject's own."""
    shared = gaussian_filter(rng.random((32, 32, 24)), 3)
    out = []
    for _ in range(n):
        own = gaussian_filter(rng.random((32, 32, 24)), 3)
        out.append(shared + vary * own)
    v = np.stack(out)
    v = (v - v.min()) / (v.max() - v.min())
    return ((0.2 + 0.6 * v) * HEAD).astype(np.float32)  # background 0 outside the head


_x, _y, _z = np.meshgrid(*(np.linspace(-1, 1, n) for n in (32, 32, 24)), indexing="ij")
HEAD = _x**2 + _y**2 + _z**2 < 0.8


def test_smoothing_separates_noise_from_anatomy(load_benchmark):
    bench = load_benchmark("diversity")
    rng = np.random.default_rng(0)
    head = HEAD

    same = np.repeat(_anatomy(rng, 1, 0.0), 6, axis=0)
    d = bench.diversity(same, head, [1.0], pairs=30)
    assert d.msssim[0.0] > 0.999 and d.msssim[1.0] > 0.999 and d.xstd < 1e-6

    # One anatomy set, scanned with little and with much independent noise.
    anat = _anatomy(rng, 6, 0.5)
    quiet = anat + rng.normal(0, 0.005, anat.shape).astype(np.float32)
    noisy = anat + rng.normal(0, 0.05, anat.shape).astype(np.float32)
    dq = bench.diversity(quiet, head, [1.5], pairs=30)
    dn = bench.diversity(noisy, head, [1.5], pairs=30)
    raw_gap = dq.msssim[0.0] - dn.msssim[0.0]
    smooth_gap = dq.msssim[1.5] - dn.msssim[1.5]
    assert raw_gap > 0.05  # the quiet set looks "too alike" raw ...
    assert smooth_gap < raw_gap / 2  # ... most of that is noise, gone after smoothing
    assert abs(dq.xstd - dn.xstd) < 0.2 * dq.xstd  # the anatomy varies alike in both
    assert dn.bg_std > 5 * dq.bg_std

    # More varied anatomy: more cross-subject std and a lower smoothed MS-SSIM.
    varied = _anatomy(rng, 6, 3.0) + rng.normal(0, 0.005, anat.shape).astype(np.float32)
    dv = bench.diversity(varied, head, [1.5], pairs=30)
    assert dv.xstd > 1.5 * dq.xstd and dv.msssim[1.5] < dq.msssim[1.5]
