"""Ways a test scan reached training, or a scan was read in the wrong space, each refused
before anything is trained (every case passed silently before)."""

import json
import shutil

import nibabel as nib
import numpy as np

from ratgan.cli import main
from ratgan.digests import file_sha256
from ratgan.segmentation.labels import gan_overlap

FAST = ["--shape", "16", "16", "8", "--channels", "4,8", "--max-epochs", "1", "--no-progress"]


def _bench(real, synthetic, out, *extra):
    return main(
        ["segbench", "--real", str(real), "--synthetic", str(synthetic), "--out", str(out)]
        + ["--tests", "2", "--seeds", "1", "--labels", "joint", *FAST, *extra]
    )


def _fake_run(folder, scans, record_digests=True):
    """A run folder whose data.json names ``scans`` (as training would record them)."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text("name: fake\n")
    entries = [
        {"image": str(p), **({"sha256": file_sha256(p)} if record_digests else {})} for p in scans
    ]
    (folder / "data.json").write_text(json.dumps({"source": "x", "entries": entries}))
    return folder


def test_a_gans_training_scans_moved_or_resaved_still_count(tiny_real, tmp_path, cohort_writer):
    scans = sorted((tiny_real / "images").glob("*.nii.gz"))
    held = scans[:3]
    # trained on copies that were moved away after training: the recorded digests remain
    copies = tmp_path / "copies"
    copies.mkdir()
    for p in scans:
        shutil.copy(p, copies / p.name)
    run = _fake_run(tmp_path / "run", sorted(copies.iterdir()))
    shutil.rmtree(copies)
    overlap = gan_overlap(run, held)
    assert overlap["files"] == [str(p) for p in held] and overlap["unverified"] == 0
    # trained on the same images stored as .nii: other bytes, the same image
    plain = tmp_path / "plain"
    plain.mkdir()
    for p in scans:
        nib.save(nib.load(p), plain / p.name.replace(".nii.gz", ".nii"))
    run2 = _fake_run(tmp_path / "run2", sorted(plain.iterdir()), record_digests=False)
    assert gan_overlap(run2, held)["files"] == [str(p) for p in held]
    # scans of other subjects are none of them
    others = sorted(cohort_writer(tmp_path / "others", 3, seed=9).glob("images/*.nii.gz"))
    assert gan_overlap(run, others)["files"] == gan_overlap(run2, others)["files"] == []


def test_real_test_scans_in_a_synthetic_folder_are_refused(
    tiny_real, tiny_synthetic, tmp_path, capsys
):
    for p in sorted((tiny_real / "images").glob("*.nii.gz")):  # every real scan, labels too
        shutil.copy(p, tiny_synthetic / f"real-{p.name}")
        shutil.copy(tiny_real / "labels" / p.name, tiny_synthetic / "labels" / f"real-{p.name}")
    assert _bench(tiny_real, tiny_synthetic, tmp_path / "b") == 2
    err = capsys.readouterr().err
    assert "the synthetic folder" in err and "real test and validation scans" in err
    assert not (tmp_path / "b").exists()


def test_one_image_twice_in_the_real_set_is_refused(tiny_real, tiny_synthetic, tmp_path, capsys):
    src = tiny_real / "images" / "sub-004.nii.gz"
    nib.save(nib.load(src), tiny_real / "images" / "sub-004b.nii")
    nib.save(
        nib.load(tiny_real / "labels" / "sub-004.nii.gz"), tiny_real / "labels" / "sub-004b.nii"
    )
    assert _bench(tiny_real, tiny_synthetic, tmp_path / "b") == 2
    err = capsys.readouterr().err
    assert "sub-004b.nii is the same image as" in err and "sub-004.nii.gz" in err


def test_a_scan_stored_in_another_orientation_is_refused(
    tiny_real, tiny_synthetic, tmp_path, capsys
):
    # the U-Net reads stored voxels: an LAS scan among RAS ones was trained on mirrored
    for folder in (tiny_real / "images", tiny_real / "labels"):
        img = nib.load(folder / "sub-005.nii.gz")
        flipped = img.affine @ np.diag([-1.0, 1, 1, 1])
        flipped[0, 3] = img.affine[0, 0] * (img.shape[0] - 1)
        nib.save(
            nib.Nifti1Image(np.asanyarray(img.dataobj)[::-1], flipped), folder / "sub-005.nii.gz"
        )
    assert _bench(tiny_real, tiny_synthetic, tmp_path / "b") == 2
    assert "sub-005.nii.gz is stored in orientation LAS" in capsys.readouterr().err


def test_a_synthetic_scan_at_another_voxel_size_is_refused(
    tiny_real, tiny_synthetic, tmp_path, capsys
):
    for folder in (tiny_synthetic, tiny_synthetic / "labels"):
        path = folder / "synthetic-000.nii.gz"
        img = nib.load(path)
        nib.save(
            nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine @ np.diag([2.0, 2, 2, 1])), path
        )
    assert _bench(tiny_real, tiny_synthetic, tmp_path / "b") == 2
    assert "synthetic scan" in (err := capsys.readouterr().err) and "has voxel size" in err


def test_a_csv_pairing_two_scans_with_one_label_map_is_named(tiny_real, tmp_path, caplog):
    from ratgan.data.io import list_scans

    rows = ["image,label"] + [
        f"{tiny_real}/images/sub-00{i}.nii.gz,{tiny_real}/labels/sub-00{min(i, 4)}.nii.gz"
        for i in range(3, 6)
    ]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    with caplog.at_level("WARNING", logger="ratgan.data.io"):
        list_scans(tmp_path / "list.csv")
    assert "line 4 names label map" in caplog.text and "which line 3 already pairs" in caplog.text


def test_joint_labels_made_with_test_scan_atlases_are_refused(
    tiny_real, tiny_synthetic, tmp_path, capsys
):
    # `ratgan label` draws its atlases from every labelled scan it is given: maps made with
    # a future test scan as atlas carry its anatomy into the synthetic tests
    from ratgan.data.io import ScanEntry
    from ratgan.segmentation.labels import record_atlases

    everyone = [ScanEntry(p, None) for p in sorted((tiny_real / "images").glob("*.nii.gz"))]
    record_atlases(tiny_synthetic / "labels", everyone)
    assert _bench(tiny_real, tiny_synthetic, tmp_path / "b") == 2
    err = capsys.readouterr().err
    assert "made by ratgan label with atlases that are real test or validation scans" in err
    assert _bench(tiny_real, tiny_synthetic, tmp_path / "c", "--allow-overlap") == 0
