"""benchmarks/degraded_pool.py: blurred and warped copies of a pool against known answers (the
displacement read back by rendering_fidelity's block matching, an independent measure)."""

import nibabel as nib
import numpy as np
import pytest


def test_warp_moves_a_volume_by_a_known_field(load_benchmark):
    dp = load_benchmark("degraded_pool")
    rng = np.random.default_rng(0)
    volume = rng.standard_normal((12, 10, 8))
    field = np.zeros((3, *volume.shape))
    field[1] = 1.0  # sample one voxel further along y
    moved = dp.warp(volume, field)
    assert np.allclose(moved[:, :-1], volume[:, 1:])
    half = dp.warp(volume, 0.5 * field)  # linear interpolation half-way
    assert np.allclose(half[:, :-1], 0.5 * (volume[:, :-1] + volume[:, 1:]))
    f = dp.displacement((20, 20, 16), 1.3, 3.0, np.random.default_rng(1))
    assert f.shape == (3, 20, 20, 16)
    assert np.linalg.norm(f, axis=0).mean() == pytest.approx(1.3)


def test_pool_moves_anatomy_off_its_labels_and_blur_keeps_it(load_benchmark, tmp_path):
    from scipy.ndimage import gaussian_filter

    from ratgan.data.io import write_nifti

    dp = load_benchmark("degraded_pool")
    rf = load_benchmark("rendering_fidelity")
    rng = np.random.default_rng(2)
    (tmp_path / "img").mkdir()
    lab = np.ones((32, 32, 24), dtype=np.int16)
    for i in range(2):
        vol = gaussian_filter(rng.standard_normal(lab.shape), 1.0).astype(np.float32)
        write_nifti(tmp_path / "img" / f"s{i}.nii.gz", vol, np.eye(4))
        write_nifti(tmp_path / "lab" / f"s{i}.nii.gz", lab, np.eye(4))
    common = ["--images", str(tmp_path / "img"), "--labels", str(tmp_path / "lab")]
    dp.main([*common, "--out", str(tmp_path / "warp"), "--warp", "1.5"])
    dp.main([*common, "--out", str(tmp_path / "blur"), "--blur", "0.7"])
    real = np.asarray(nib.load(tmp_path / "img" / "s0.nii.gz").dataobj)
    for name, moved in (("warp", True), ("blur", False)):
        out = np.asarray(nib.load(tmp_path / name / "s0.nii.gz").dataobj)
        assert out.dtype == np.float32 and out.shape == real.shape
        offsets = np.array(rf.local_shifts(out, real, lab))
        share = np.any(offsets != 0, axis=1).mean()
        assert share > 0.5 if moved else share == 0, name
        labels = np.asarray(nib.load(tmp_path / name / "labels" / "s0.nii.gz").dataobj)
        assert np.array_equal(labels, lab)
    blurred = np.asarray(nib.load(tmp_path / "blur" / "s1.nii.gz").dataobj)
    source = np.asarray(nib.load(tmp_path / "img" / "s1.nii.gz").dataobj)
    assert np.allclose(blurred, gaussian_filter(source, 0.7), atol=1e-6)
    (tmp_path / "lab" / "s1.nii.gz").unlink()
    with pytest.raises(SystemExit, match="no label map for s1.nii.gz"):
        dp.main([*common, "--out", str(tmp_path / "x"), "--blur", "1"])
    with pytest.raises(SystemExit, match="positive"):
        dp.main([*common, "--out", str(tmp_path / "x"), "--warp", "0"])


def test_contrast_pool_gives_real_scans_a_known_tissue_contrast(load_benchmark, tmp_path):
    from ratgan.data.io import write_nifti

    dp = load_benchmark("degraded_pool")
    rng = np.random.default_rng(3)
    lab = rng.integers(0, 4, (16, 14, 12)).astype(np.int16)
    level = np.array([0.0, 1.0, 0.4, 2.5])  # background, GM, WM, CSF
    vol = (level[lab] + 0.1 * rng.standard_normal(lab.shape)).astype(np.float32)
    write_nifti(tmp_path / "img" / "s0.nii.gz", vol, np.eye(4))
    write_nifti(tmp_path / "lab" / "s0.nii.gz", lab, np.eye(4))
    common = ["--images", str(tmp_path / "img"), "--labels", str(tmp_path / "lab")]
    dp.main([*common, "--out", str(tmp_path / "c"), "--contrast", "CSF=0.4", "WM=0.75"])
    out = np.asarray(nib.load(tmp_path / "c" / "s0.nii.gz").dataobj, dtype=np.float64)
    v = vol.astype(np.float64)

    def mean(x, k):
        return x[lab == k].mean()

    assert mean(out, 3) - mean(out, 1) == pytest.approx(0.4 * (mean(v, 3) - mean(v, 1)))
    assert mean(out, 1) - mean(out, 2) == pytest.approx(0.75 * (mean(v, 1) - mean(v, 2)))
    for k in (0, 1):  # background and grey matter untouched
        assert np.allclose(out[lab == k], v[lab == k], atol=1e-6)
    for k in (2, 3):  # a constant shift: the texture inside the tissue is kept
        assert out[lab == k].std() == pytest.approx(v[lab == k].std(), rel=1e-5)
    dp.main([*common, "--out", str(tmp_path / "w"), "--contrast", "WM=1"])
    same = np.asarray(nib.load(tmp_path / "w" / "s0.nii.gz").dataobj)
    assert np.array_equal(same, vol)
    for bad, why in (("GM=0.5", "WM or CSF"), ("CSF=1.5", r"\[0, 1\]"), ("CSF=x", r"\[0, 1\]")):
        with pytest.raises(SystemExit, match=why):
            dp.main([*common, "--out", str(tmp_path / "x"), "--contrast", bad])
    write_nifti(tmp_path / "lab" / "s0.nii.gz", lab[:-1], np.eye(4))
    with pytest.raises(SystemExit, match=r"s0.nii.gz has shape \(15, 14, 12\), its scan \(16"):
        dp.main([*common, "--out", str(tmp_path / "y"), "--contrast", "CSF=0.5"])
    assert not (tmp_path / "y").exists()
