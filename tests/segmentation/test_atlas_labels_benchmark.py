"""benchmarks/atlas_labels.py --warp: warped scans and their warped true labels stay in
register (the image's intensity classes follow the moved labels, not the original ones)."""

import numpy as np

from ratgan.data.io import read_label, read_scan

from .conftest import write_cohort


def test_warped_truth_moves_with_the_warped_scan(load_benchmark, tmp_path):
    bench = load_benchmark("atlas_labels")
    cohort = write_cohort(tmp_path / "c", 2, seed=3, shape=(24, 24, 16))
    images = sorted((cohort / "images").glob("*.nii.gz"))
    truths = [cohort / "labels" / p.name for p in images]
    warped, moved = bench.write_warped(images, truths, 1.5, tmp_path / "w")
    means = np.array([5.0, 60.0, 40.0, 95.0])  # the tiny cohort's class intensities (x 100)
    for image, truth, w, m in zip(images, truths, warped, moved, strict=True):
        scan = read_scan(w)
        nearest_class = np.abs(scan.data[..., None] - means).argmin(-1)
        new, old = read_label(m, scan), read_label(truth, read_scan(image))
        assert (new != old).mean() > 0.02  # the field moved the anatomy
        # where the image moved, its classes follow the moved labels (interpolated boundary
        # voxels aside), and not the labels it came from
        agree_new = (nearest_class == new).mean()
        assert agree_new > 0.9 and agree_new > (nearest_class == old).mean() + 0.02
    # the summary reads a perfect labelling as Dice 1
    summary = bench.summarise(moved, warped, moved)
    assert summary["global"]["mean"] == 1.0 and summary["WM"]["min"] == 1.0
