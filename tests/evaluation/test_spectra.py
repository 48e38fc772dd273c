"""The directional spectral measure: known answers for stripes, and real vs held-out real."""

import numpy as np
import pytest

from ratgan.evaluation.spectra import spectral_summary


@pytest.fixture(scope="module")
def phantom_volumes(tmp_path_factory):
    """16 phantom scans (64x64x40), prepared as the evaluation prepares them; 8 + 8 split."""
    from ratgan.data.io import read_scan
    from ratgan.data.phantom import write_cohort
    from ratgan.evaluation.prepare import prepare_volume

    out = tmp_path_factory.mktemp("spectra")
    write_cohort(out, subjects=16, seed=5, progress=False)
    vols = []
    for path in sorted((out / "images").glob("*.nii.gz")):
        data = read_scan(path).data
        vols.append(prepare_volume(data, tuple(data.shape[:3])))
    return np.stack(vols)


def test_a_pure_wave_puts_its_power_on_its_axis():
    """A wave along y at 0.4 cycles/voxel (plus weak white noise, which is isotropic) gives a
    huge y ratio; x and z see only the noise (ratio about 1)."""
    rng = np.random.default_rng(0)
    y = np.arange(32)
    vols = 0.01 * rng.standard_normal((4, 32, 32, 32))
    vols += np.sin(2 * np.pi * 0.4 * y)[None, None, :, None]
    r = spectral_summary(vols).ratios
    assert r["y"] > 100
    assert r["x"] == pytest.approx(1.0, abs=0.3) and r["z"] == pytest.approx(1.0, abs=0.3)


def test_stripes_raise_their_axis_only(phantom_volumes):
    real = spectral_summary(phantom_volumes[:8]).ratios
    striped = phantom_volumes[:8].copy()
    striped[:, :, 1::2, :] += 0.03  # a one-voxel alternation along y: columns in an axial view
    r = spectral_summary(striped).ratios
    assert r["y"] > 5 * real["y"]
    for axis in ("x", "z"):
        assert r[axis] == pytest.approx(real[axis], rel=0.05)


def test_held_out_real_scans_stay_at_the_real_level(phantom_volumes):
    a = spectral_summary(phantom_volumes[:8]).ratios
    b = spectral_summary(phantom_volumes[8:]).ratios
    for axis in ("x", "y", "z"):
        assert b[axis] == pytest.approx(a[axis], rel=0.25)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="N, X, Y, Z"):
        spectral_summary(np.zeros((8, 8, 8)))
