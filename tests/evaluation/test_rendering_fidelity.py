"""benchmarks/rendering_fidelity.py: tissue contrasts and atlas-label Dice on known answers
(the Dice itself is the benchmark's, ``segmentation.metrics.dice_scores``)."""

import numpy as np
import pytest


def _subject(seed: int) -> tuple[np.ndarray, np.ndarray]:
    # a label map with the three tissues in slabs, and a scan with tissue means
    # GM 2, WM 1, CSF 4 plus small noise, background 0
    rng = np.random.default_rng(seed)
    lab = np.zeros((8, 8, 6), dtype=np.int16)
    lab[2:6, 2:6, 0:2], lab[2:6, 2:6, 2:4], lab[2:6, 2:6, 4:6] = 1, 2, 3
    means = np.array([0.0, 2.0, 1.0, 4.0])
    return (means[lab] + 0.01 * rng.standard_normal(lab.shape)).astype(np.float32), lab


def test_tissue_measures_are_scale_free_and_follow_the_contrast(load_benchmark):
    rf = load_benchmark("rendering_fidelity")
    img, lab = _subject(0)
    m = rf.tissue_measures(img, lab)
    brain_sd = img[lab > 0].std()
    assert m["CSF-GM"] == pytest.approx(2.0 / brain_sd, rel=0.02)
    assert m["GM-WM"] == pytest.approx(1.0 / brain_sd, rel=0.02)
    # brightness and offset do not enter
    m2 = rf.tissue_measures(3 * img.astype(np.float64) + 100, lab)
    assert all(m2[k] == pytest.approx(m[k], rel=1e-5) for k in m)
    # halving the CSF's distance to GM lowers CSF-GM below GM-WM's change
    soft = img.copy()
    soft[lab == 3] -= 1.0  # CSF mean 3: CSF - GM 1 instead of 2
    m3 = rf.tissue_measures(soft, lab)
    assert m3["CSF-GM"] / m3["GM-WM"] == pytest.approx(1.0, rel=0.05)
    with pytest.raises(ValueError, match="no CSF"):
        rf.tissue_measures(img, np.where(lab == 3, 1, lab))


def test_cli_reports_the_lost_contrast(load_benchmark, tmp_path, capsys):
    from ratgan.data.io import write_nifti

    rf = load_benchmark("rendering_fidelity")
    for sub in ("images", "labels", "rendered", "atlas_real", "atlas_rendered"):
        (tmp_path / sub).mkdir()
    for i in range(3):
        img, lab = _subject(i)
        soft = img.copy()
        soft[lab == 3] -= 1.0
        name = f"s{i}.nii.gz"
        write_nifti(tmp_path / "images" / name, img, np.eye(4))
        write_nifti(tmp_path / "labels" / name, lab, np.eye(4))
        write_nifti(tmp_path / "rendered" / name, soft, np.eye(4))
        write_nifti(tmp_path / "atlas_real" / name, lab, np.eye(4))
        wrong = lab.copy()
        wrong[lab == 2] = 1  # no WM at all in the renderings' labels
        write_nifti(tmp_path / "atlas_rendered" / name, wrong, np.eye(4))
    rf.main(
        [
            "--real", str(tmp_path), "--rendered", str(tmp_path / "rendered"),
            "--atlas-real", str(tmp_path / "atlas_real"),
            "--atlas-rendered", str(tmp_path / "atlas_rendered"),
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    csf = next(line for line in out.splitlines() if line.startswith("CSF-GM"))
    # equal tissue volumes: brain sd sqrt(42/27) with CSF 4, sqrt(2/3) with CSF 3, so the
    # contrast in brain-sd units goes from 2 / sqrt(42/27) to 1 / sqrt(2/3)
    expected = (1 / np.sqrt(2 / 3)) / (2 / np.sqrt(42 / 27))
    assert float(csf.split()[-1]) == pytest.approx(expected, abs=0.01)
    assert "real      1.000  1.000  1.000" in out
    assert "rendered  0.667  0.000  1.000" in out
    flat = np.full((8, 8, 6), 5.0, dtype=np.float32)
    write_nifti(tmp_path / "rendered" / "s1.nii.gz", flat, np.eye(4))
    with pytest.raises(SystemExit, match=r"rendered/s1.nii.gz with label map .*constant"):
        rf.main(["--real", str(tmp_path), "--rendered", str(tmp_path / "rendered")])
    with pytest.raises(SystemExit, match="pair one to one"):
        (tmp_path / "rendered" / "s0.nii.gz").unlink()
        rf.main(["--real", str(tmp_path), "--rendered", str(tmp_path / "rendered")])


def test_equivalent_blur_interpolates_the_table(load_benchmark):
    rf = load_benchmark("rendering_fidelity")
    sigmas, shares = [0.0, 0.5, 1.0], [1.0, 0.6, 0.2]
    assert rf.equivalent_blur(sigmas, shares, 0.6) == pytest.approx(0.5)
    assert rf.equivalent_blur(sigmas, shares, 0.4) == pytest.approx(0.75)
    assert rf.equivalent_blur(sigmas, shares, 1.1) == 0.0  # sharper than the real scans
    assert rf.equivalent_blur(sigmas, shares, 0.1) is None  # more lost than the largest blur


def test_blur_reference_recovers_a_known_blur(load_benchmark, tmp_path, capsys):
    # renderings that are the real scans blurred by sigma 0.7 read as a blur near 0.7
    from scipy.ndimage import gaussian_filter

    from ratgan.data.io import write_nifti

    rf = load_benchmark("rendering_fidelity")
    for sub in ("images", "labels", "rendered"):
        (tmp_path / sub).mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        lab = np.zeros((24, 24, 16), dtype=np.int16)
        lab[4:20, 4:20, 3:13] = 1
        lab[4:20, 10:13, 3:13] = 2  # a WM sheet three voxels thick
        lab[11:13, 4:20, 3:13] = 3  # a CSF fissure two voxels thick
        img = np.array([0.0, 2.0, 1.0, 4.0])[lab] + 0.05 * rng.standard_normal(lab.shape)
        write_nifti(tmp_path / "images" / f"s{i}.nii.gz", img.astype(np.float32), np.eye(4))
        write_nifti(tmp_path / "labels" / f"s{i}.nii.gz", lab, np.eye(4))
        soft = gaussian_filter(img, 0.7).astype(np.float32)
        write_nifti(tmp_path / "rendered" / f"s{i}.nii.gz", soft, np.eye(4))
    args = ["--real", str(tmp_path), "--rendered", str(tmp_path / "rendered")]
    rf.main([*args, "--blur", "0.5", "0.6", "0.8", "1.0", "--shifts"])
    out = capsys.readouterr().out.splitlines()
    # the brain fills no whole 8^3 block of these small volumes
    assert "local shifts: no 8^3 block lies inside the brain" in out
    start = next(i for i, line in enumerate(out) if line.startswith("real scans blurred"))
    for measure in ("CSF-GM", "GM-WM"):
        row = next(line for line in out[start:] if line.startswith(measure))
        assert float(row.split()[-1]) == pytest.approx(0.7, abs=0.04)
    with pytest.raises(SystemExit, match="positive sigmas"):
        rf.main([*args, "--blur", "0"])


def test_local_shifts_find_a_known_displacement(load_benchmark):
    # a textured volume; the rendering is the same volume moved by one voxel along y inside the
    # brain: every block matches best one voxel back; a noisy or blurred copy stays in place
    from scipy.ndimage import gaussian_filter

    rf = load_benchmark("rendering_fidelity")
    rng = np.random.default_rng(1)
    real = gaussian_filter(rng.standard_normal((32, 32, 24)), 1.0)
    labels = np.ones(real.shape, dtype=np.int16)
    moved = np.roll(real, 1, axis=1)
    assert set(rf.local_shifts(moved, real, labels)) == {(0, 1, 0)}
    noisy = real + 0.1 * real.std() * rng.standard_normal(real.shape)
    assert set(rf.local_shifts(noisy, real, labels)) == {(0, 0, 0)}
    assert set(rf.local_shifts(gaussian_filter(real, 0.7), real, labels)) == {(0, 0, 0)}
    assert len(rf.local_shifts(real, real, labels)) == 4 * 4 * 3
    labels[:16] = 0  # blocks outside the brain are skipped
    assert len(rf.local_shifts(real, real, labels)) == 2 * 4 * 3
