import numpy as np
import pytest
import torch

from ratgan.errors import RatganError
from ratgan.segmentation.data import (
    downsample_labels,
    find_entries,
    load_set,
)


def test_reads_a_generated_folder_with_labels_subfolder(tiny_synthetic):
    """`ratgan generate` of a joint model: scans in the folder, label maps in labels/."""
    from ratgan.data.io import read_label, read_scan

    entries = find_entries(tiny_synthetic, require_labels=True)
    assert len(entries) == 12
    assert all(e.label == tiny_synthetic / "labels" / e.image.name for e in entries)
    s = load_set(entries, (16, 16, 8))
    assert s.images.shape == (12, 1, 16, 16, 8) and s.labels.shape == (12, 1, 16, 16, 8)
    assert s.images.min() >= -1 and s.images.max() <= 1
    # each label map stays aligned with its own scan
    for i in (0, 7):
        scan = read_scan(entries[i].image)
        lab = read_label(entries[i].label, scan)
        assert torch.equal(s.labels[i, 0], torch.from_numpy(lab))
        bright = scan.data > 0.9 * 100 * 0.95  # CSF is the brightest tissue
        assert (lab[bright] == 3).mean() > 0.9


def test_missing_labels_and_bad_values_are_user_errors(tmp_path, cohort_writer):
    folder = cohort_writer(tmp_path / "nolab", 3, seed=0, layout="flat", with_labels=False)
    with pytest.raises(RatganError, match="no label map"):
        find_entries(folder, require_labels=True)
    from ratgan.data.io import write_nifti

    bad = cohort_writer(tmp_path / "bad", 2, seed=0)
    write_nifti(
        bad / "labels" / "sub-000.nii.gz",
        np.full((16, 16, 8), 7, np.uint8),
        np.diag([0.375, 0.375, 0.5, 1.0]),
        dtype=np.uint8,
    )
    with pytest.raises(RatganError, match="values"):
        load_set(find_entries(bad), (16, 16, 8))


def test_majority_pooling_of_labels():
    y = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    y[0, 0, :2, :2, :2] = 3
    y[0, 0, 0, 0, 0] = 1
    out = downsample_labels(y, 2)
    assert out.shape == (1, 1, 2, 2, 2)
    assert out[0, 0, 0, 0, 0] == 3 and out[0, 0, 1, 1, 1] == 0


def test_brain_box_covers_every_brain_and_paste_inverts_crop():
    from ratgan.segmentation.data import brain_box, crop, paste

    y = torch.zeros(2, 1, 20, 16, 8, dtype=torch.long)
    y[0, 0, 5:9, 4:7, 2:5] = 1
    y[1, 0, 7:12, 3:6, 1:3] = 3
    box = brain_box(y, margin=1, multiple=4)
    assert box == ((2, 14), (1, 9), (0, 8))
    assert all((b - a) % 4 == 0 for a, b in box)
    c = crop(y, box)
    assert c.shape == (2, 1, 12, 8, 8) and int((c > 0).sum()) == int((y > 0).sum())
    assert torch.equal(paste(c, box, (20, 16, 8)), y)


def test_a_shape_that_cuts_labelled_voxels_is_named_in_a_warning(tmp_path, cohort_writer, caplog):
    """16 slices of which the brain spans about 12, cut to 8: labelled voxels are lost; 12
    slices cut to 10 lose background only and say nothing."""
    big = cohort_writer(tmp_path / "big", 2, seed=1, shape=(16, 16, 16), prefix="big")
    with caplog.at_level("WARNING"):
        s = load_set(find_entries(big), (16, 16, 8), desc="real scans")
    assert s.images.shape == (2, 1, 16, 16, 8)
    assert "--shape 16x16x8 cuts labelled voxels off 2 real scans" in caplog.text
    assert "big-000.nii.gz (" in caplog.text and "big-001.nii.gz (" in caplog.text
    assert "8 slices off axis 2" in caplog.text
    caplog.clear()
    small = cohort_writer(tmp_path / "small", 2, seed=1, shape=(16, 16, 12))
    with caplog.at_level("WARNING"):
        load_set(find_entries(small), (16, 16, 10))
    assert caplog.text == ""


def test_real_label_maps_numbered_as_fsl_fast_are_warned_about(tmp_path, cohort_writer, caplog):
    """The same cohort's maps renumbered as FSL FAST numbers them (1 = CSF, 2 = GM, 3 = WM)
    are warned about when segbench reads them; as written (ratgan's numbering) they are not
    (the test above: no warning at all)."""
    import nibabel as nib

    root = cohort_writer(tmp_path / "fast", 2, seed=1, shape=(16, 16, 12))
    fast = np.array([0, 2, 3, 1])  # ratgan's class -> FAST's number
    for e in find_entries(root, require_labels=True):
        img = nib.load(e.label)
        data = np.asarray(img.dataobj).astype(np.int64)
        nib.save(nib.Nifti1Image(fast[data].astype(np.int16), img.affine), e.label)
    with caplog.at_level("WARNING"):
        load_set(find_entries(root), (16, 16, 12), desc="real scans")
    assert "in 2 of 2 label maps of real scans GM (class 1) is not the most frequent" in caplog.text


def test_brain_masks_given_as_label_maps_are_warned_about(tmp_path, cohort_writer, caplog):
    """Label maps turned into 0/1 brain masks (every tissue voxel 1) would be read as all GM;
    the reader warns, naming one, and does not also call them FAST-numbered."""
    import nibabel as nib

    root = cohort_writer(tmp_path / "mask", 2, seed=1, shape=(16, 16, 12))
    for e in find_entries(root, require_labels=True):
        img = nib.load(e.label)
        mask = (np.asarray(img.dataobj) > 0).astype(np.int16)
        nib.save(nib.Nifti1Image(mask, img.affine), e.label)
    with caplog.at_level("WARNING"):
        load_set(find_entries(root), (16, 16, 12), desc="real scans")
    assert "2 of 2 label maps of real scans mark a single tissue class" in caplog.text
    assert "class 1 in every labelled voxel" in caplog.text and "read as all GM" in caplog.text
    assert "not the most frequent" not in caplog.text
