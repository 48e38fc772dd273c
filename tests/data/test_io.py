"""NIfTI reading, writing and listing: round trips keep every piece of metadata."""

from __future__ import annotations

import csv
import logging

import nibabel as nib
import numpy as np
import pytest

from ratgan.data.io import list_scans, read_label, read_scan, write_nifti
from ratgan.data.transforms import inverse_preprocess, preprocess
from ratgan.errors import RatganError


def _assert_same_metadata(a: nib.Nifti1Image, b: nib.Nifti1Image) -> None:
    assert a.shape == b.shape
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-6)
    for key in (
        "qform_code",
        "sform_code",
        "datatype",
        "bitpix",
        "pixdim",
        "quatern_b",
        "quatern_c",
        "quatern_d",
        "qoffset_x",
        "qoffset_y",
        "qoffset_z",
        "srow_x",
        "srow_y",
        "srow_z",
        "xyzt_units",
        "dim",
    ):
        np.testing.assert_array_equal(a.header[key], b.header[key], err_msg=key)


@pytest.mark.parametrize("codes", [(1, 2), (2, 1), (1, 0)])
def test_round_trip_int16_with_scaling(tmp_path, rng, codes, h):
    raw = rng.integers(0, 4000, size=(20, 24, 12)).astype(np.int16)
    src = h.save(
        tmp_path / "a.nii.gz",
        raw,
        dtype=np.int16,
        slope=0.25,
        inter=10.0,
        qcode=codes[0],
        scode=codes[1],
    )
    scan = read_scan(src)
    assert scan.data.dtype == np.float32 and scan.data.shape == (20, 24, 12)
    np.testing.assert_allclose(scan.data, raw * 0.25 + 10.0, rtol=1e-6)

    vol, info = preprocess(scan.data, (32, 32, 32))
    back = inverse_preprocess(vol, info)
    out = write_nifti(tmp_path / "out" / "b.nii.gz", back, scan.affine, scan.header)

    a, b = nib.load(src), nib.load(out)
    _assert_same_metadata(a, b)
    assert b.get_data_dtype() == np.int16
    assert (b.dataobj.slope, b.dataobj.inter) == (0.25, 10.0)
    # the stored integers come back exactly: the round trip error is far below one step
    np.testing.assert_array_equal(np.asanyarray(b.dataobj), np.asanyarray(a.dataobj))
    stored = a.get_fdata()
    np.testing.assert_allclose(b.get_fdata(), stored, rtol=1e-4, atol=1e-4 * np.abs(stored).max())


def test_round_trip_float32(tmp_path, rng, h):
    data = h.random_scan(rng)
    src = h.save(tmp_path / "a.nii", data, dtype=np.float32, qcode=2, scode=1)
    scan = read_scan(src)
    vol, info = preprocess(scan.data, (24, 24, 24))
    back = inverse_preprocess(vol, info)
    out = write_nifti(tmp_path / "b.nii", back, scan.affine, scan.header)
    a, b = nib.load(src), nib.load(out)
    _assert_same_metadata(a, b)
    assert b.get_data_dtype() == np.float32
    np.testing.assert_allclose(b.get_fdata(), data, rtol=1e-4, atol=1e-4 * data.max())


def test_write_without_header_uses_zooms_and_scanner_codes(tmp_path, h):
    data = np.arange(4 * 5 * 6, dtype=np.float64).reshape(4, 5, 6)
    affine = np.diag([0.375, 0.375, 0.5, 1.0])
    out = write_nifti(tmp_path / "deep" / "x.nii.gz", data, affine, zooms=(0.375, 0.375, 0.5))
    img = nib.load(out)
    assert img.header["qform_code"] == 1 and img.header["sform_code"] == 1
    assert img.header.get_zooms() == pytest.approx((0.375, 0.375, 0.5))
    assert img.get_data_dtype() == np.float32
    np.testing.assert_allclose(img.affine, affine)
    np.testing.assert_allclose(img.get_fdata(), data)


def test_write_float_to_integer_rounds_and_clips(tmp_path, h):
    data = np.array([-5.0, 1.4, 1.6, 300.0]).reshape(1, 1, 4)
    out = write_nifti(tmp_path / "x.nii", data, np.eye(4), dtype=np.uint8)
    img = nib.load(out)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj).ravel(), [0, 1, 2, 255])


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_write_refuses_nan_and_infinite_values(tmp_path, dtype):
    # stored as int16, NaN became 0 without a word
    data = np.ones((4, 4, 4))
    data[1, 2, 3], data[0, 0, 0] = np.nan, np.inf
    with pytest.raises(RatganError, match=r"x.nii holds 2 NaN or infinite values of 64"):
        write_nifti(tmp_path / "x.nii", data, np.eye(4), dtype=dtype)
    assert not list(tmp_path.iterdir())


def test_write_does_not_pass_on_the_references_intent(tmp_path, rng):
    img = nib.Nifti1Image(rng.normal(size=(4, 4, 3)).astype(np.float32), np.eye(4))
    img.header.set_intent("t test", (12.0,))
    nib.save(img, tmp_path / "tmap.nii")
    scan = read_scan(tmp_path / "tmap.nii")
    out = nib.load(write_nifti(tmp_path / "syn.nii", scan.data, scan.affine, scan.header))
    assert out.header.get_intent()[0] == "none" and out.header["intent_p1"] == 0


def test_write_labels_with_scaled_scan_header(tmp_path, rng, h):
    """Integer label maps written with a scaled int16 scan's header keep their values."""
    raw = rng.integers(0, 4000, size=(8, 8, 8)).astype(np.int16)
    scan = read_scan(h.save(tmp_path / "a.nii.gz", raw, dtype=np.int16, slope=0.25, inter=10.0))
    labels = h.blob_labels(rng, (8, 8, 8)).astype(np.uint8)
    out = write_nifti(tmp_path / "lab.nii.gz", labels, scan.affine, scan.header, dtype=np.uint8)
    np.testing.assert_array_equal(read_label(out, scan), labels)
    out = write_nifti(tmp_path / "lab16.nii.gz", labels.astype(np.int64), scan.affine, scan.header)
    np.testing.assert_array_equal(read_label(out, scan), labels)


def test_written_header_drops_the_references_identifying_fields(tmp_path, rng, h):
    raw = rng.integers(0, 4000, size=(8, 8, 6)).astype(np.int16)
    img = nib.Nifti1Image(raw, h.AFFINE)
    img.set_qform(h.AFFINE, code=1)
    img.set_sform(h.AFFINE, code=2)
    hdr = img.header
    hdr.set_slope_inter(0.25, 10.0)
    hdr["descrip"] = b"rat R17 2021-03-02"
    hdr["aux_file"] = b"R17.lut"
    hdr["db_name"] = b"lab-db"
    hdr["cal_min"], hdr["cal_max"] = 10.0, 1010.0
    hdr.extensions.append(nib.nifti1.Nifti1Extension(6, b"PatientName=R17"))
    src = tmp_path / "rat.nii.gz"
    nib.save(img, src)
    scan = read_scan(src)
    out = write_nifti(tmp_path / "syn.nii.gz", scan.data, scan.affine, scan.header)
    a, b = nib.load(src), nib.load(out)
    assert a.header["descrip"].item() == b"rat R17 2021-03-02"  # the reference carries them
    for key in ("descrip", "aux_file", "db_name"):
        assert b.header[key].item() == b"", key
    assert b.header["cal_min"] == 0 and b.header["cal_max"] == 0
    assert len(b.header.extensions) == 0
    _assert_same_metadata(a, b)
    assert b.header.get_zooms() == a.header.get_zooms()
    assert b.get_data_dtype() == np.int16 and (b.dataobj.slope, b.dataobj.inter) == (0.25, 10.0)
    np.testing.assert_array_equal(b.dataobj.get_unscaled(), raw)
    described = write_nifti(
        tmp_path / "d.nii", scan.data, scan.affine, scan.header, description="ratgan x"
    )
    assert nib.load(described).header["descrip"].item() == b"ratgan x"


def test_4d_mean_and_index(tmp_path, rng, h):
    data = rng.normal(100, 10, size=(6, 7, 8, 5)).astype(np.float32)
    src = h.save(tmp_path / "bold.nii.gz", data)
    mean = read_scan(src)
    assert mean.data.shape == (6, 7, 8)
    np.testing.assert_allclose(mean.data, data.mean(axis=3), rtol=1e-5)
    third = read_scan(src, volume_index=2)
    np.testing.assert_array_equal(third.data, data[..., 2])
    np.testing.assert_array_equal(read_scan(src, volume_index=-1).data, data[..., 4])
    assert third.header.get_data_shape() == (6, 7, 8)
    assert third.zooms == pytest.approx(mean.zooms)


def test_averaging_a_4d_file_is_logged(tmp_path, rng, h, caplog):
    src = h.save(tmp_path / "bold.nii.gz", rng.normal(100, 10, size=(6, 7, 8, 5)))
    with caplog.at_level(logging.INFO, logger="ratgan.data.io"):
        read_scan(src)
    (record,) = [r for r in caplog.records if "bold.nii.gz" in r.getMessage()]
    assert "5 volumes" in record.getMessage() and record.levelno >= logging.INFO
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ratgan.data.io"):
        read_scan(src, volume_index=1)  # one volume picked: nothing averaged, nothing said
    assert not caplog.records


def test_trailing_singleton_axis_is_3d(tmp_path, rng, h):
    data = rng.normal(size=(4, 5, 6, 1)).astype(np.float32)
    scan = read_scan(h.save(tmp_path / "s.nii", data))
    assert scan.data.shape == (4, 5, 6)


def test_read_label(tmp_path, rng, h):
    scan = read_scan(h.save(tmp_path / "s.nii.gz", h.random_scan(rng)))
    labels = h.blob_labels(rng)
    lab = read_label(h.save(tmp_path / "l.nii.gz", labels, dtype=np.uint8), scan)
    assert lab.dtype == np.int64
    np.testing.assert_array_equal(lab, labels)


def test_list_scans_layouts(tmp_path, rng, h):
    data = h.random_scan(rng, (4, 4, 4))
    # flat folder, both suffixes, sorted, hidden temporary files ignored
    flat = tmp_path / "flat"
    for name in ("b.nii.gz", "a.nii", ".b.nii.gz.tmp123.nii.gz"):
        h.save(flat / name, data)
    (flat / "notes.txt").write_text("x")
    assert [e.image.name for e in list_scans(flat)] == ["a.nii", "b.nii.gz"]
    assert all(e.label is None for e in list_scans(flat))

    # images/ + labels/
    root = tmp_path / "ds"
    for name in ("s1.nii.gz", "s2.nii.gz"):
        h.save(root / "images" / name, data)
    h.save(root / "labels" / "s1.nii.gz", data.astype(np.uint8) * 0)
    entries = list_scans(root)
    assert entries[0].label == root / "labels" / "s1.nii.gz" and entries[1].label is None
    with pytest.raises(RatganError, match="s2.nii.gz"):
        list_scans(root, require_labels=True)

    # glob
    assert [e.image.name for e in list_scans(str(flat / "*.nii*"))] == ["a.nii", "b.nii.gz"]

    # CSV with relative paths
    table = root / "list.csv"
    with table.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "label"])
        w.writerow(["images/s2.nii.gz", ""])
        w.writerow(["images/s1.nii.gz", "labels/s1.nii.gz"])
    entries = list_scans(table)
    assert [e.image for e in entries] == [root / "images/s2.nii.gz", root / "images/s1.nii.gz"]
    assert entries[0].label is None and entries[1].label == root / "labels/s1.nii.gz"

    # a single file
    assert [e.image for e in list_scans(flat / "a.nii")] == [flat / "a.nii"]


def test_folders_and_files_named_with_brackets_are_listed(tmp_path, rng, h):
    """glob read the brackets of an existing folder such as scans[2024]/ in a pattern as a
    character class: the pattern matched the scans of scans2/ instead, or nothing."""
    data = h.random_scan(rng, (4, 4, 4))
    dated = tmp_path / "scans[2024]"
    for name in ("a.nii.gz", "b[1].nii.gz"):
        h.save(dated / name, data)
    h.save(tmp_path / "scans2" / "decoy.nii.gz", data)  # what the character class matches
    h.save(dated / "sub" / "c.nii.gz", data)
    named = [e.image.name for e in list_scans(str(dated / "*.nii.gz"))]
    assert named == ["a.nii.gz", "b[1].nii.gz"]
    deep = [e.image.relative_to(dated) for e in list_scans(str(dated / "**" / "*.nii.gz"))]
    assert [str(p) for p in deep] == ["a.nii.gz", "b[1].nii.gz", "sub/c.nii.gz"]
    # the folder itself, and one file, were never patterns
    assert [e.image.name for e in list_scans(dated)] == ["a.nii.gz", "b[1].nii.gz"]
    assert list_scans(dated / "b[1].nii.gz")[0].image == dated / "b[1].nii.gz"
    # a pattern whose bracketed folder does not exist is still a pattern
    assert [e.image.name for e in list_scans(str(tmp_path / "scans[12]" / "*.nii.gz"))] == [
        "decoy.nii.gz"
    ]
    with pytest.raises(RatganError, match=r"write \[\[\] and \[\]\] for a bracket"):
        list_scans(str(dated / "b[1]*.nii.gz"))  # [1] matches "1", not "[1]"


def test_scans_beside_an_images_folder_are_named_as_ignored(tmp_path, rng, h, caplog):
    data = h.random_scan(rng, (4, 4, 4))
    root = tmp_path / "ds"
    for name in ("images/s1.nii.gz", "a.nii.gz", "b.nii", "labels/s1.nii.gz"):
        h.save(root / name, data)
    with caplog.at_level(logging.WARNING, logger="ratgan.data.io"):
        entries = list_scans(root)
    assert [e.image.name for e in entries] == ["s1.nii.gz"]
    (record,) = caplog.records
    assert "2 scans" in record.getMessage() and str(root) in record.getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ratgan.data.io"):
        list_scans(root / "images")  # a folder without images/: nothing ignored
    assert not caplog.records


@pytest.mark.parametrize(
    "matrix",
    [
        np.diag([0.3, 0.4, 0.5]),  # RAS
        np.diag([-0.3, 0.4, 0.5]),  # LAS
        np.array([[0, 0, 0.5], [-0.3, 0, 0], [0, 0.4, 0]]),  # axes permuted and flipped
        np.array([[0.29, 0.03, 0], [0.02, 0, -0.5], [0, 0.4, 0.01]]),  # oblique
    ],
)
def test_scan_ras_voxel_size_follows_as_closest_canonical(tmp_path, matrix):
    from ratgan.data.io import scan_ras_voxel_size, voxel_size

    affine = np.eye(4)
    affine[:3, :3] = matrix
    img = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), affine)
    path = tmp_path / "s.nii.gz"
    nib.save(img, path)
    # independent reference: nibabel's own reorientation of the image
    canonical = nib.as_closest_canonical(nib.load(path))
    expected = voxel_size(canonical.affine)
    assert scan_ras_voxel_size(path) == pytest.approx(expected, rel=1e-6)
