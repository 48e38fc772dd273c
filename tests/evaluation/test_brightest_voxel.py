"""benchmarks/brightest_voxel.py: the tail ratio and the one-voxel edit, on known answers."""

import numpy as np
import pytest


def _volume() -> np.ndarray:
    # 1,000 voxels: 0, 1, ..., 999 (float), shuffled into 10 x 10 x 10
    rng = np.random.default_rng(0)
    return rng.permutation(np.arange(1000.0)).reshape(10, 10, 10).astype(np.float32)


def test_tail_ratio_known_answer(load_benchmark):
    bv = load_benchmark("brightest_voxel")
    v = _volume()
    # numpy's linear percentile of 0..999 at q is q / 100 * 999; min 0, max 999
    assert bv.tail_ratio(v, 99.0) == pytest.approx(0.99)
    v2 = v.copy()
    v2[v2 == 999] = 1998  # the brightest voxel twice as far out: the ratio follows it
    assert bv.tail_ratio(v2, 99.0) == pytest.approx(989.01 / 1998)
    assert bv.tail_ratio(np.full((2, 2, 2), 3.0)) == 1.0


def test_raise_brightest_hits_the_target_and_changes_one_voxel(load_benchmark):
    bv = load_benchmark("brightest_voxel")
    v = _volume() + 100  # offset: the ratio is measured from the minimum
    edited = bv.raise_brightest(v, 0.5, q=99.0)
    assert bv.tail_ratio(edited, 99.0) == pytest.approx(0.5)
    changed = edited != v
    assert changed.sum() == 1 and v[changed][0] == v.max()
    # the new maximum is min + (p99 - min) / 0.5 = 100 + 2 * 989.01, so after the evaluation's
    # min/max rescaling every other voxel is darker by the factor 999 / 1978.02
    rescale = lambda x: (x - x.min()) / (x.max() - x.min())  # noqa: E731
    keep = ~changed
    assert np.allclose(rescale(edited)[keep], rescale(v)[keep] * (999 / 1978.02), atol=1e-6)


def test_raise_brightest_never_lowers(load_benchmark):
    bv = load_benchmark("brightest_voxel")
    v = _volume()
    v[v == 999] = 5000  # already far out: ratio below the target
    assert np.array_equal(bv.raise_brightest(v, 0.9, q=99.0), v)
    with pytest.raises(ValueError, match="target tail ratio"):
        bv.raise_brightest(v, 1.5)


def test_cli_writes_edited_copies_in_the_scans_space(load_benchmark, tmp_path, capsys):
    from ratgan.data.io import read_scan, write_nifti

    bv = load_benchmark("brightest_voxel")
    affine = np.diag([0.3, 0.3, 0.5, 1.0])
    for i in range(2):
        v = _volume()
        v[v == 999] = 1998 + i  # real-like: the brightest voxel far out
        write_nifti(tmp_path / "train" / f"t{i}.nii.gz", v, affine)
    write_nifti(tmp_path / "fake" / "f0.nii.gz", _volume(), affine)  # squeezed tail
    bv.main(
        [
            f"g={tmp_path / 'fake'}",
            "--train",
            str(tmp_path / "train"),
            "--q",
            "99",
            "--edit",
            str(tmp_path / "out"),
        ]
    )
    out = capsys.readouterr().out
    assert "training scans (2)" in out and "g (1): 0.990" in out
    edited = read_scan(tmp_path / "out" / "g" / "f0.nii.gz")
    assert np.allclose(edited.affine, affine)
    train_mean = np.mean([989.01 / 1998, 989.01 / 1999])
    assert bv.tail_ratio(edited.data, 99.0) == pytest.approx(train_mean, rel=1e-5)


def test_map_to_histogram_takes_the_reference_values_and_keeps_ranks(load_benchmark):
    bv = load_benchmark("brightest_voxel")
    v = _volume()  # 0..999 shuffled
    ref = np.random.default_rng(1).gamma(2.0, 3.0, size=(10, 10, 10)).astype(np.float32)
    mapped = bv.map_to_histogram(v, ref)
    # equal sizes: exactly the reference's values, the i-th smallest where v had its i-th
    assert np.array_equal(np.sort(mapped, axis=None), np.sort(ref, axis=None))
    assert np.array_equal(mapped, np.sort(ref, axis=None)[v.astype(int)])
    # a smaller reference: its min and max land on the volume's min and max voxels and the
    # order of the voxels never reverses
    small = np.arange(11.0, dtype=np.float32) * 10  # 0, 10, ..., 100
    m2 = bv.map_to_histogram(v, small)
    assert m2[v == 0][0] == 0 and m2[v == 999][0] == 100
    flat_v, flat_m = v.ravel(), m2.ravel()
    order = np.argsort(flat_v)
    assert np.all(np.diff(flat_m[order]) >= 0)
    # the median voxel (rank 499 or 500 of 0..999) takes the reference's median, 50
    assert m2[v == 500][0] == 50


def test_cli_writes_mapped_copies(load_benchmark, tmp_path, capsys):
    from ratgan.data.io import read_scan, write_nifti

    bv = load_benchmark("brightest_voxel")
    affine = np.diag([0.3, 0.3, 0.5, 1.0])
    donor = _volume() * 2 + 7
    write_nifti(tmp_path / "train" / "t0.nii.gz", donor, affine)
    write_nifti(tmp_path / "fake" / "f0.nii.gz", _volume(), affine)
    bv.main(
        [f"g={tmp_path / 'fake'}", "--train", str(tmp_path / "train"), "--map", str(tmp_path / "m")]
    )
    assert "mapped copies" in capsys.readouterr().out
    mapped = read_scan(tmp_path / "m" / "g" / "f0.nii.gz")
    assert np.allclose(mapped.affine, affine)
    assert np.allclose(mapped.data, _volume() * 2 + 7)  # a monotone map of 0..999 onto the donor
