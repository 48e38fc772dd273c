"""Every bad input gives a one-sentence RatganError naming the file; no library traceback."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from ratgan.config import DataConfig
from ratgan.data import io
from ratgan.data.dataset import load_cohort
from ratgan.data.io import list_scans, read_label, read_scan, write_nifti
from ratgan.errors import RatganError


def _one_sentence(exc: pytest.ExceptionInfo, name: str) -> None:
    msg = str(exc.value)
    assert name in msg
    assert "\n" not in msg and msg.endswith(".")


def test_text_file_named_nii_gz(tmp_path):
    bad = tmp_path / "x.nii.gz"
    bad.write_text("this is not an image\n")
    with pytest.raises(RatganError) as exc:
        read_scan(bad)
    _one_sentence(exc, "x.nii.gz")


def test_text_file_named_nii(tmp_path):
    bad = tmp_path / "x.nii"
    bad.write_text("this is not an image either\n")
    with pytest.raises(RatganError) as exc:
        read_scan(bad)
    _one_sentence(exc, "x.nii")


def test_truncated_nii_gz(tmp_path, rng, h):
    good = h.save(tmp_path / "good.nii.gz", h.random_scan(rng, (20, 20, 20)))
    blob = good.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(RatganError) as exc:
        read_scan(cut)
    _one_sentence(exc, "cut.nii.gz")


def test_truncated_uncompressed_nii(tmp_path, rng, h):
    good = h.save(tmp_path / "good.nii", h.random_scan(rng, (20, 20, 20)))
    cut = tmp_path / "cut.nii"
    cut.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(RatganError) as exc:
        read_scan(cut)
    _one_sentence(exc, "cut.nii")


def test_gzip_of_garbage(tmp_path):
    bad = tmp_path / "g.nii.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write(b"\x00" * 100)
    with pytest.raises(RatganError) as exc:
        read_scan(bad)
    _one_sentence(exc, "g.nii.gz")


@pytest.mark.parametrize("value, word", [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "Inf")])
def test_non_finite_voxel(tmp_path, rng, h, value, word):
    data = h.random_scan(rng, (6, 6, 6))
    data[2, 3, 4] = value
    path = h.save(tmp_path / "nonfinite.nii.gz", data)
    with pytest.raises(RatganError, match=word) as exc:
        read_scan(path)
    _one_sentence(exc, "nonfinite.nii.gz")


def test_a_voxel_beyond_float32_range_is_refused_not_made_inf(tmp_path, rng, h):
    data = h.random_scan(rng, (6, 6, 6)).astype(np.float64)
    data[1, 2, 3] = 1e39  # finite as stored (float64), Inf once cast to float32
    path = h.save(tmp_path / "huge.nii.gz", data, dtype=np.float64)
    with pytest.raises(RatganError, match="float32") as exc:
        read_scan(path)
    _one_sentence(exc, "huge.nii.gz")


@pytest.mark.parametrize("shape", [(8, 9), (4, 5, 6, 2, 3)])
def test_wrong_dimensionality(tmp_path, rng, h, shape):
    path = h.save(tmp_path / "dims.nii.gz", rng.normal(size=shape))
    with pytest.raises(RatganError, match=f"{len(shape)}-D") as exc:
        read_scan(path)
    _one_sentence(exc, "dims.nii.gz")


def test_volume_index_out_of_range(tmp_path, rng, h):
    path = h.save(tmp_path / "bold.nii.gz", rng.normal(size=(4, 4, 4, 3)))
    with pytest.raises(RatganError, match="volume_index 3") as exc:
        read_scan(path, volume_index=3)
    _one_sentence(exc, "bold.nii.gz")


def test_missing_file(tmp_path):
    with pytest.raises(RatganError) as exc:
        read_scan(tmp_path / "nope.nii.gz")
    _one_sentence(exc, "nope.nii.gz")


def test_label_with_different_shape(tmp_path, rng, h):
    scan = read_scan(h.save(tmp_path / "s.nii.gz", h.random_scan(rng, (8, 8, 6))))
    lab = h.save(tmp_path / "lab.nii.gz", np.zeros((8, 8, 5)), dtype=np.uint8)
    with pytest.raises(RatganError, match="shape") as exc:
        read_label(lab, scan)
    _one_sentence(exc, "lab.nii.gz")


def test_label_with_different_affine(tmp_path, rng, h):
    scan = read_scan(h.save(tmp_path / "s.nii.gz", h.random_scan(rng, (8, 8, 6))))
    moved = h.AFFINE.copy()
    moved[0, 3] += 0.01
    lab = h.save(tmp_path / "lab.nii.gz", np.zeros((8, 8, 6)), affine=moved, dtype=np.uint8)
    with pytest.raises(RatganError, match="affine") as exc:
        read_label(lab, scan)
    _one_sentence(exc, "lab.nii.gz")


def test_label_with_non_integer_values(tmp_path, rng, h):
    scan = read_scan(h.save(tmp_path / "s.nii.gz", h.random_scan(rng, (8, 8, 6))))
    lab = h.save(tmp_path / "lab.nii.gz", np.full((8, 8, 6), 1.5))
    with pytest.raises(RatganError, match="non-integer") as exc:
        read_label(lab, scan)
    _one_sentence(exc, "lab.nii.gz")


def test_label_with_values_outside_0_to_3(tmp_path, rng, h):
    """One sentence naming the file and exactly the offending values, from read_label and
    from loading a cohort for label-channel training."""
    scan_path = h.save(tmp_path / "images" / "s.nii.gz", h.random_scan(rng, (8, 8, 6)))
    data = np.zeros((8, 8, 6))
    data[0, 0, :3] = [1, 2, 3]
    data[1, 1, 0], data[2, 2, 0] = 5, 255
    lab = h.save(tmp_path / "labels" / "s.nii.gz", data, dtype=np.uint8)
    with pytest.raises(RatganError, match=r"values \[5, 255\]") as exc:
        read_label(lab, read_scan(scan_path))
    _one_sentence(exc, "s.nii.gz")
    with pytest.raises(RatganError, match=r"labels/s.nii.gz holds values \[5, 255\]"):
        load_cohort(
            tmp_path,
            DataConfig(target_shape=(8, 8, 6), downsample=1),
            require_labels=True,
            progress=False,
        )


def test_empty_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no scans here")
    with pytest.raises(RatganError, match="holds no .nii or .nii.gz files") as exc:
        list_scans(empty)
    _one_sentence(exc, "empty")
    with pytest.raises(RatganError, match="holds no"):
        load_cohort(empty, DataConfig(), progress=False)


def test_missing_source_and_glob_without_matches(tmp_path):
    with pytest.raises(RatganError, match="does not exist"):
        list_scans(tmp_path / "absent")
    with pytest.raises(RatganError, match="matches no"):
        list_scans(str(tmp_path / "*.nii.gz"))


def test_csv_naming_missing_files(tmp_path, rng, h):
    h.save(tmp_path / "a.nii.gz", h.random_scan(rng, (4, 4, 4)))
    table = tmp_path / "list.csv"
    table.write_text("image,label\na.nii.gz,\nmissing.nii.gz,\n")
    with pytest.raises(RatganError, match="missing.nii.gz") as exc:
        list_scans(table)
    _one_sentence(exc, "list.csv")
    table.write_text("image,label\na.nii.gz,gone.nii.gz\n")
    with pytest.raises(RatganError, match="gone.nii.gz"):
        list_scans(table)
    table.write_text("scan\na.nii.gz\n")
    with pytest.raises(RatganError, match="column named image"):
        list_scans(table)


def test_mixed_shapes_in_cohort(tmp_path, rng, h):
    h.save(tmp_path / "a.nii.gz", h.random_scan(rng, (8, 8, 6)))
    h.save(tmp_path / "b.nii.gz", h.random_scan(rng, (8, 8, 6)))
    h.save(tmp_path / "c.nii.gz", h.random_scan(rng, (8, 8, 7)))
    with pytest.raises(RatganError) as exc:
        load_cohort(tmp_path, DataConfig(target_shape=(8, 8, 8)), progress=False)
    msg = str(exc.value)
    assert "c.nii.gz" in msg and "[8, 8, 7]" in msg and "[8, 8, 6]" in msg


def _affine(zooms=(1.0, 1.0, 1.0), flip=1.0):
    return np.diag([flip * zooms[0], zooms[1], zooms[2], 1.0])


@pytest.mark.parametrize(
    ("odd", "words"),
    [
        (_affine(flip=-1.0), ["orientation LAS", "3 of 4", "RAS"]),
        (_affine((3.0, 3.0, 3.0)), ["voxel size 3 x 3 x 3", "3 of 4", "1 x 1 x 1"]),
        (_affine((1.0, 1.0, 1.06)), ["voxel size 1 x 1 x 1.06", "1 x 1 x 1"]),
    ],
)
def test_a_cohort_mixing_orientations_or_voxel_sizes_is_refused(tmp_path, rng, h, odd, words):
    data = h.random_scan(rng, (8, 8, 6))
    for name in ("a.nii.gz", "b.nii.gz", "d.nii.gz"):
        h.save(tmp_path / name, data, _affine())
    h.save(tmp_path / "c.nii.gz", data, odd)  # the odd one out, not first in the listing
    with pytest.raises(RatganError) as exc:
        load_cohort(tmp_path, DataConfig(target_shape=(8, 8, 8)), progress=False)
    _one_sentence(exc, "c.nii.gz")
    for word in words:
        assert word in str(exc.value)


def test_voxel_sizes_within_five_percent_are_one_cohort(tmp_path, rng, h):
    h.save(tmp_path / "a.nii.gz", h.random_scan(rng, (8, 8, 6)), _affine())
    h.save(tmp_path / "b.nii.gz", h.random_scan(rng, (8, 8, 6)), _affine((1.0, 1.04, 0.96)))
    cohort = load_cohort(tmp_path, DataConfig(target_shape=(8, 8, 8)), progress=False)
    assert cohort.orientations == ["RAS", "RAS"]


def test_bad_file_inside_cohort_is_named(tmp_path, rng, h):
    h.save(tmp_path / "a.nii.gz", h.random_scan(rng, (8, 8, 6)))
    (tmp_path / "b.nii.gz").write_text("oops")
    with pytest.raises(RatganError, match="b.nii.gz"):
        load_cohort(tmp_path, DataConfig(target_shape=(8, 8, 8)), progress=False)


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    target = out / "x.nii.gz"
    target.write_bytes(b"previous content")

    def broken_save(img, filename):
        with open(filename, "wb") as fh:
            fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(io.nib, "save", broken_save)
    with pytest.raises(RatganError, match="disk full") as exc:
        write_nifti(target, np.zeros((4, 4, 4), np.float32), np.eye(4))
    _one_sentence(exc, "x.nii.gz")
    assert os.listdir(out) == ["x.nii.gz"]
    assert target.read_bytes() == b"previous content"  # the old file is untouched
    with pytest.raises(RatganError):
        write_nifti(out / "new.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4))
    assert os.listdir(out) == ["x.nii.gz"]


def test_write_rejects_bad_arguments(tmp_path):
    with pytest.raises(RatganError, match="must end in .nii"):
        write_nifti(tmp_path / "x.png", np.zeros((2, 2, 2)), np.eye(4))
    with pytest.raises(RatganError, match="4x4"):
        write_nifti(tmp_path / "x.nii", np.zeros((2, 2, 2)), np.eye(3))
    with pytest.raises(RatganError, match="3-D"):
        write_nifti(tmp_path / "x.nii", np.zeros((2, 2)), np.eye(4))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_valued_scan_or_label_is_refused_not_cast(tmp_path, rng, h, dtype):
    # Casting to float would keep the real part only (numpy warns and goes on); the user must
    # choose what real image the complex one stands for.
    data = h.random_scan(rng, (8, 8, 4)) * (1 + 1j)
    path = h.save(tmp_path / "c.nii.gz", data, dtype=dtype)
    with pytest.raises(RatganError) as exc:
        read_scan(path)
    _one_sentence(exc, "c.nii.gz")
    assert "complex" in str(exc.value) and "magnitude" in str(exc.value)
    scan = read_scan(h.save(tmp_path / "s.nii.gz", h.random_scan(rng, (8, 8, 4))))
    label = h.save(tmp_path / "l.nii.gz", np.ones((8, 8, 4)) * (1 + 0j), dtype=dtype)
    with pytest.raises(RatganError, match="l.nii.gz stores complex values"):
        read_label(label, scan)


def test_an_rgb_scan_is_refused_as_colour_not_called_corrupt(tmp_path):
    """An RGB file (NIfTI datatype 128, e.g. a colour FA map) was reported "truncated or
    corrupt", sending the user to re-copy a file that is intact."""
    rgb = np.zeros((4, 4, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    path = tmp_path / "fa_rgb.nii.gz"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(path))
    assert nib.load(str(path)).header["datatype"] == 128  # NIfTI's DT_RGB24
    with pytest.raises(RatganError, match="RGB") as exc:
        read_scan(path)
    _one_sentence(exc, "fa_rgb.nii.gz")
    assert "corrupt" not in str(exc.value)


def test_a_scan_listed_twice_is_refused_not_counted_twice(tmp_path, rng, h):
    """The same file under two names (a symlink) or on two CSV rows would weigh twice in a
    cohort (and could sit on both sides of a train/test split): refused, naming both."""
    folder = tmp_path / "scans"
    h.save(folder / "a.nii.gz", h.random_scan(rng, (4, 4, 4)))
    h.save(folder / "b.nii.gz", h.random_scan(rng, (4, 4, 4)))
    (folder / "c.nii.gz").symlink_to(folder / "a.nii.gz")
    with pytest.raises(RatganError, match="same file") as exc:
        list_scans(folder)
    _one_sentence(exc, "c.nii.gz")
    assert "a.nii.gz" in str(exc.value)
    table = tmp_path / "list.csv"
    table.write_text("image\nscans/b.nii.gz\nscans/a.nii.gz\nscans/b.nii.gz\n")
    with pytest.raises(RatganError, match="same file") as exc:
        list_scans(table)
    _one_sentence(exc, "b.nii.gz")


def test_csv_saved_with_a_byte_order_mark_is_read(tmp_path, rng, h):
    """Spreadsheets save "CSV UTF-8" with a byte order mark before the first column's name;
    it is not part of the name (the image column was reported missing while listed)."""
    h.save(tmp_path / "images" / "a.nii.gz", h.random_scan(rng, (4, 4, 4)))
    h.save(tmp_path / "labels" / "a.nii.gz", h.blob_labels(rng, (4, 4, 4)))
    table = tmp_path / "list.csv"
    table.write_bytes(b"\xef\xbb\xbfimage,label\r\nimages/a.nii.gz,labels/a.nii.gz\r\n")
    entries = list_scans(table)
    assert [(e.image, e.label) for e in entries] == [
        (tmp_path / "images" / "a.nii.gz", tmp_path / "labels" / "a.nii.gz")
    ]


def test_csv_columns_that_are_not_read_are_named_and_a_label_without_scan_refused(
    tmp_path, rng, h, caplog
):
    """A column misspelt "labels" was ignored without a word (the scans had no labels), and a
    row with a label map but an empty image cell was dropped as if blank."""
    h.save(tmp_path / "images" / "a.nii.gz", h.random_scan(rng, (4, 4, 4)))
    h.save(tmp_path / "labels" / "a.nii.gz", h.blob_labels(rng, (4, 4, 4)))
    table = tmp_path / "list.csv"
    table.write_text("image,labels,age\nimages/a.nii.gz,labels/a.nii.gz,12\n")
    with caplog.at_level("WARNING", logger="ratgan.data.io"):
        entries = list_scans(table)
    assert [e.label for e in entries] == [None]
    assert "labels, age are not read" in caplog.text and "list.csv" in caplog.text
    table.write_text("image,label\nimages/a.nii.gz,labels/a.nii.gz\n,labels/a.nii.gz\n\n")
    with pytest.raises(RatganError, match="line 3 names label map") as exc:
        list_scans(table)
    _one_sentence(exc, "list.csv")


def test_a_blank_scan_in_a_cohort_is_refused_not_trained_on(tmp_path, rng, h):
    """A scan holding one value everywhere (a failed export) preprocessed to an all -1 volume
    and was trained on as a subject without a word."""
    h.save(tmp_path / "a.nii.gz", h.random_scan(rng, (8, 8, 6)))
    h.save(tmp_path / "b.nii.gz", np.zeros((8, 8, 6), np.float32))
    with pytest.raises(RatganError, match="every voxel") as exc:
        load_cohort(tmp_path, DataConfig(target_shape=(8, 8, 8)), progress=False)
    _one_sentence(exc, "b.nii.gz")


def test_an_empty_label_map_in_a_cohort_is_refused_not_trained_on(tmp_path, rng, h):
    """A label map of background only (a failed segmentation export) was loaded without a
    word: a joint model learned that brain as a subject without GM, WM or CSF."""
    for name in ("a.nii.gz", "b.nii.gz"):
        h.save(tmp_path / "images" / name, h.random_scan(rng, (8, 8, 6)))
    h.save(tmp_path / "labels" / "a.nii.gz", h.blob_labels(rng, (8, 8, 6)))
    h.save(tmp_path / "labels" / "b.nii.gz", np.zeros((8, 8, 6), np.int16))
    with pytest.raises(RatganError, match="background .* in every voxel") as exc:
        load_cohort(tmp_path, DataConfig(target_shape=(8, 8, 8)), progress=False)
    _one_sentence(exc, "labels/b.nii.gz")


@pytest.mark.parametrize("scans", ["images", "."])
def test_a_glob_matching_label_maps_is_refused_not_read_as_scans(tmp_path, rng, h, scans):
    """``root/**/*.nii.gz`` over an images/ + labels/ folder (or a generated folder with its
    labels/ inside) matched the label maps too, and they were read as scans."""
    for name in ("a.nii.gz", "b.nii.gz"):
        h.save(tmp_path / scans / name, h.random_scan(rng, (4, 4, 4)))
        # labels/ beside images/, or inside the folder of the scans
        h.save(tmp_path / "labels" / name, h.blob_labels(rng, (4, 4, 4)))
    with pytest.raises(RatganError, match="label map") as exc:
        list_scans(str(tmp_path / "**" / "*.nii.gz"))
    _one_sentence(exc, "labels/a.nii.gz")
    # a pattern that names the scans only is fine
    pattern = tmp_path / scans / "*.nii.gz"
    assert [e.image.name for e in list_scans(str(pattern))] == ["a.nii.gz", "b.nii.gz"]


@pytest.mark.parametrize("source", ["folder", "csv", "file"])
def test_label_maps_given_as_scans_are_refused_not_trained_on(tmp_path, rng, h, source):
    """``--data cohort/labels`` (the labels/ folder beside images/, or a CSV or file naming
    it) was read as a cohort of scans: the label maps (0-3) were trained on as images."""
    for name in ("a.nii.gz", "b.nii.gz"):
        h.save(tmp_path / "images" / name, h.random_scan(rng, (4, 4, 4)))
        h.save(tmp_path / "labels" / name, h.blob_labels(rng, (4, 4, 4)))
    given = {
        "folder": tmp_path / "labels",
        "csv": tmp_path / "list.csv",
        "file": tmp_path / "labels" / "a.nii.gz",
    }[source]
    (tmp_path / "list.csv").write_text("image\nlabels/a.nii.gz\nlabels/b.nii.gz\n")
    with pytest.raises(RatganError, match=r"labels/a.nii.gz, the label map of scan") as exc:
        list_scans(given)
    _one_sentence(exc, "images/a.nii.gz")
    assert len(list_scans(tmp_path)) == 2  # the cohort's folder reads scans and labels


def test_one_image_twice_in_a_cohort_is_refused(tmp_path, rng, h):
    """A copy under another name (or x.nii beside x.nii.gz) was trained on twice."""
    scan = h.random_scan(rng, (8, 8, 6))
    h.save(tmp_path / "a.nii.gz", scan)
    h.save(tmp_path / "b.nii.gz", h.random_scan(rng, (8, 8, 6)))
    h.save(tmp_path / "c.nii", scan)
    with pytest.raises(RatganError, match="is the same image as") as exc:
        load_cohort(tmp_path, DataConfig(target_shape=(8, 8, 8)), progress=False)
    _one_sentence(exc, "c.nii")


@pytest.mark.parametrize("sign", [1, -1])
def test_a_scan_squeezed_by_one_far_voxel_is_named(sign, tmp_path, rng, h, caplog):
    """One voxel at 1000x the scan's maximum (or far below its minimum: a corrupted voxel,
    -32768 as a missing-value mark) set its min/max scaling: the anatomy went to -1 (or +1,
    background included) and the scan was trained on as a blank (white) subject without a
    word."""
    spiked = h.random_scan(rng, (16, 16, 8))
    spiked[3, 4, 5] = sign * 1000 * spiked.max()
    # by hand: every other voxel lies within 0.1 % of the range's bottom (top), beyond -+0.99
    others = np.delete(spiked.ravel(), np.ravel_multi_index((3, 4, 5), spiked.shape))
    scaled = (others - spiked.min()) / np.ptp(spiked) * 2 - 1
    assert (scaled.max() < -0.99) if sign > 0 else (scaled.min() > 0.99)
    h.save(tmp_path / "a.nii.gz", h.random_scan(rng, (16, 16, 8)))
    h.save(tmp_path / "spiked.nii.gz", spiked)
    with caplog.at_level("WARNING", logger="ratgan.data.dataset"):
        load_cohort(tmp_path, DataConfig(target_shape=(16, 16, 8)), progress=False)
    assert "1 scans (such as" in caplog.text and "spiked.nii.gz" in caplog.text
    assert "a.nii.gz" not in caplog.text.replace("spiked.nii.gz", "")


def _tissue_map(gm_label: int, wm_label: int, csf_label: int) -> np.ndarray:
    """An 8x8x6 brain: 40 GM voxels around 12 WM voxels and 8 CSF voxels, labelled as given."""
    lab = np.zeros((8, 8, 6), np.int16)
    lab[1:7, 1:6, 1:3] = gm_label  # 60, of which 20 are then WM or CSF
    lab[2:5, 2:4, 1:3] = wm_label  # 12
    lab[5:7, 2:4, 1:3] = csf_label  # 8
    return lab


def test_label_maps_numbered_as_fsl_fast_are_warned_about(tmp_path, rng, h, caplog):
    """FSL FAST numbers 1 = CSF, 2 = GM, 3 = WM: such maps passed every check and were trained
    on (and scored) with the classes swapped.  GM is the largest tissue of a brain, so maps
    whose class 1 is not the largest are warned about; ratgan's own numbering is not."""
    for name in ("a.nii.gz", "b.nii.gz"):
        h.save(tmp_path / "images" / name, h.random_scan(rng, (8, 8, 6)))
        h.save(tmp_path / "labels" / name, _tissue_map(gm_label=2, wm_label=3, csf_label=1))
    cfg = DataConfig(target_shape=(8, 8, 8))
    with caplog.at_level("WARNING"):
        load_cohort(tmp_path, cfg, progress=False)
    assert "in 2 of 2 label maps" in caplog.text and "FSL FAST" in caplog.text
    assert "GM 8, WM 40, CSF 12" in caplog.text  # the counts as read, class by class
    caplog.clear()
    for name in ("a.nii.gz", "b.nii.gz"):
        h.save(tmp_path / "labels" / name, _tissue_map(gm_label=1, wm_label=2, csf_label=3))
    with caplog.at_level("WARNING"):
        load_cohort(tmp_path, cfg, progress=False)
    assert "FSL FAST" not in caplog.text


@pytest.mark.parametrize("layout", ["folder", "images", "glob", "label"])
def test_a_dangling_symlink_is_refused_not_left_out(tmp_path, rng, h, layout):
    """A scan that is a symbolic link to a missing file (a DataLad / git-annex dataset whose
    content was not fetched, a moved drive) was left out of the folder's or pattern's scans
    without a word: the cohort held 2 scans of the 3 the user gave.  Likewise its label map."""
    scans = tmp_path / ("images" if layout in ("images", "label") else ".")
    for name in ("a.nii.gz", "b.nii.gz"):
        h.save(scans / name, h.random_scan(rng, (4, 4, 4)))
        h.save(tmp_path / "labels" / name, h.blob_labels(rng, (4, 4, 4)))
    missing = tmp_path / "annex" / "c-content"
    if layout == "label":
        h.save(scans / "c.nii.gz", h.random_scan(rng, (4, 4, 4)))
        dangling = tmp_path / "labels" / "c.nii.gz"
    else:
        dangling = scans / "c.nii.gz"
        h.save(tmp_path / "labels" / "c.nii.gz", h.blob_labels(rng, (4, 4, 4)))
    dangling.symlink_to(missing)
    # a hidden dangling link (an editor's or macOS's leftover) is still not a scan
    (scans / "._a.nii.gz").symlink_to(tmp_path / "gone")
    if layout == "images":  # nor is one beside images/, whose scans are not read
        (tmp_path / "old.nii.gz").symlink_to(tmp_path / "gone")
    source = str(scans / "*.nii.gz") if layout == "glob" else tmp_path
    with pytest.raises(RatganError, match="symbolic link") as exc:
        list_scans(source)
    _one_sentence(exc, "c.nii.gz")
    assert str(missing) in str(exc.value)
