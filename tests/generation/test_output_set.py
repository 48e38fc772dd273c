"""Generation writes one set, never a mixture: its output folder and its reference scan."""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ratgan.cli import main
from ratgan.config import load_config
from ratgan.errors import RatganError
from ratgan.generation import generate_scans
from ratgan.training.run import train


@pytest.fixture(scope="module")
def tiny_run(phantom_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    train(load_config("tiny", {"train.iterations": 2}), phantom_dir, run, progress=False)
    return run


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def test_a_folder_of_real_scans_is_refused_and_left_as_it_was(tiny_run, phantom_dir, tmp_path):
    cohort = tmp_path / "cohort"
    shutil.copytree(phantom_dir, cohort)
    before = _files(cohort)
    with pytest.raises(RatganError, match=r"holds 6 entries that ratgan generate did not write"):
        generate_scans(tiny_run, 2, cohort / "images", progress=False)
    assert _files(cohort) == before


def test_an_earlier_set_of_the_same_settings_is_replaced_whole(tiny_run, tmp_path):
    out = tmp_path / "syn"
    eight = generate_scans(tiny_run, 8, out, seed=0, progress=False)
    first = eight[0].read_bytes()
    generate_scans(tiny_run, 2, out, seed=0, progress=False)
    assert _files(out) == ["manifest.json", "synthetic_00000.nii.gz", "synthetic_00001.nii.gz"]
    manifest = _manifest(out)
    assert manifest["complete"] is True and manifest["n"] == 2
    assert [r["file"] for r in manifest["scans"]] == [
        "synthetic_00000.nii.gz",
        "synthetic_00001.nii.gz",
    ]
    assert (out / "synthetic_00000.nii.gz").read_bytes() == first  # the same scan, rewritten


def test_another_seed_or_precision_into_an_earlier_set_is_refused(tiny_run, tmp_path):
    out = tmp_path / "syn"
    generate_scans(tiny_run, 3, out, seed=0, progress=False)
    before = {name: (out / name).read_bytes() for name in _files(out)}
    with pytest.raises(RatganError, match=r"another generation \(seed 0 -> 1\)"):
        generate_scans(tiny_run, 3, out, seed=1, progress=False)
    with pytest.raises(RatganError, match=r"precision fp32 -> bf16"):
        generate_scans(tiny_run, 3, out, seed=0, progress=False, precision="bf16")
    assert {name: (out / name).read_bytes() for name in _files(out)} == before


def test_scans_without_a_manifest_or_with_an_old_one_are_refused(tiny_run, tmp_path):
    out = tmp_path / "syn"
    generate_scans(tiny_run, 2, out, progress=False)
    manifest = _manifest(out)
    (out / "manifest.json").unlink()
    with pytest.raises(RatganError, match="no manifest.json"):
        generate_scans(tiny_run, 2, out, progress=False)
    del manifest["settings"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RatganError, match="older ratgan"):
        generate_scans(tiny_run, 2, out, progress=False)


def test_an_unfinished_generation_is_marked_and_a_rerun_completes_it(
    tiny_run, tmp_path, monkeypatch
):
    from ratgan.generation import sample
    from ratgan.generation.output import is_complete_set

    out = tmp_path / "syn"
    real_export, calls = sample._export, {"n": 0}

    def failing_export(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk gone")
        return real_export(*args, **kwargs)

    monkeypatch.setattr(sample, "_export", failing_export)
    with pytest.raises(OSError, match="disk gone"):
        generate_scans(tiny_run, 4, out, progress=False, batch_size=2, writers=1)
    assert not is_complete_set(out) and _manifest(out)["complete"] is False
    monkeypatch.setattr(sample, "_export", real_export)
    generate_scans(tiny_run, 4, out, progress=False, batch_size=2, writers=1)
    assert is_complete_set(out) and len(_manifest(out)["scans"]) == 4


def _reference(path, shape, affine):
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.normal(100, 10, shape).astype(np.float32), affine), path)
    return path


@pytest.mark.parametrize(
    ("shape", "flip", "message"),
    [
        (
            (48, 48, 30),
            1,
            r"shape \[48, 48, 30\] but the run's training scans .* shape \[64, 64, 40\]",
        ),
        ((2, 2, 2), 1, r"shape \[2, 2, 2\] but .* shape \[64, 64, 40\]"),
        ((64, 64, 40), -1, r"orientation LAS but the run's training scans .* are in RAS"),
    ],
)
def test_a_reference_outside_the_training_space_is_refused(
    tiny_run, phantom_dir, tmp_path, shape, flip, message
):
    real = nib.load(min((phantom_dir / "images").glob("*.nii.gz")))
    affine = real.affine.copy()
    affine[0] *= flip
    ref = _reference(tmp_path / "ref.nii.gz", shape, affine)
    with pytest.raises(RatganError, match=message):
        generate_scans(tiny_run, 1, tmp_path / "out", reference=ref, progress=False)
    assert not (tmp_path / "out").exists()


def test_a_blank_reference_is_refused_not_used_for_the_intensity_range(
    tiny_run, phantom_dir, tmp_path
):
    # Generated scans take the reference's min/max: an all-zero file of the training geometry
    # (a header template) gave scans that were 0 in every voxel, with no error.
    real = nib.load(min((phantom_dir / "images").glob("*.nii.gz")))
    ref = tmp_path / "template.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(real.shape, np.float32), real.affine, real.header), ref)
    with pytest.raises(RatganError, match=r"reference .*template.nii.gz holds the same value"):
        generate_scans(tiny_run, 1, tmp_path / "out", reference=ref, progress=False)
    assert not (tmp_path / "out").exists()


def test_a_label_map_as_reference_is_refused(tiny_run, phantom_dir, tmp_path):
    # A label map has the training scans' geometry and passed every check: the generated
    # scans were mapped to its range 0-3 and stored as its uint8, holding only 0, 1 and 2.
    ref = min((phantom_dir / "labels").glob("*.nii.gz"))
    with pytest.raises(RatganError, match=r"reference .*labels/sub-000.nii.gz holds only 0"):
        generate_scans(tiny_run, 1, tmp_path / "out", reference=ref, progress=False)
    assert not (tmp_path / "out").exists()


def test_runs_that_did_not_record_orientations_compare_with_their_first_scan(
    tiny_run, phantom_dir, tmp_path
):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    data = json.loads((run / "data.json").read_text())
    assert {e["orientation"] for e in data["entries"]} == {"RAS"}  # what training records now
    for entry in data["entries"]:
        del entry["orientation"]
    (run / "data.json").write_text(json.dumps(data))
    real = nib.load(min((phantom_dir / "images").glob("*.nii.gz")))
    ref = _reference(tmp_path / "las.nii.gz", (64, 64, 40), np.diag([-1, 1, 1, 1]) @ real.affine)
    with pytest.raises(RatganError, match="orientation LAS"):
        generate_scans(run, 1, tmp_path / "out", reference=ref, progress=False)


def test_a_run_that_recorded_mixed_orientations_takes_only_the_most_common(
    tiny_run, phantom_dir, tmp_path
):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    data = json.loads((run / "data.json").read_text())
    data["entries"][-1]["orientation"] = "LAS"  # what an older ratgan let a cohort hold
    (run / "data.json").write_text(json.dumps(data))
    real = nib.load(min((phantom_dir / "images").glob("*.nii.gz")))
    ref = _reference(tmp_path / "las.nii.gz", (64, 64, 40), np.diag([-1, 1, 1, 1]) @ real.affine)
    with pytest.raises(RatganError, match=r"orientation LAS but .* are in RAS \(most of them"):
        generate_scans(run, 1, tmp_path / "out", reference=ref, progress=False)


def test_a_reference_of_another_voxel_size_is_refused(tiny_run, phantom_dir, tmp_path):
    real = nib.load(min((phantom_dir / "images").glob("*.nii.gz")))
    affine = real.affine.copy()
    affine[:3, :3] *= 3  # same grid and orientation, anatomy 3x larger in the world
    ref = _reference(tmp_path / "ref.nii.gz", (64, 64, 40), affine)
    message = r"voxel size 1.125 x 1.125 x 1.5 but the run's training scans .* 0.375 x 0.375 x 0.5"
    with pytest.raises(RatganError, match=message):
        generate_scans(tiny_run, 1, tmp_path / "out", reference=ref, progress=False)
    assert not (tmp_path / "out").exists()
    affine[:3, :3] = real.affine[:3, :3] * 1.04  # within the 5 % tolerance
    ref = _reference(tmp_path / "close.nii.gz", (64, 64, 40), affine)
    assert generate_scans(tiny_run, 1, tmp_path / "ok", reference=ref, progress=False)


def test_runs_whose_training_scans_are_gone_skip_the_voxel_size_check(tiny_run, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    data = json.loads((run / "data.json").read_text())
    for entry in data["entries"]:
        entry["image"] = str(tmp_path / "moved" / Path(entry["image"]).name)
        entry.pop("voxel_size", None)  # a run written before voxel sizes were recorded
        entry.pop("orientation", None)  # ... or orientations
    (run / "data.json").write_text(json.dumps(data))
    ref = _reference(tmp_path / "ref.nii.gz", (64, 64, 40), np.diag([3.0, 3.0, 3.0, 1.0]))
    with caplog.at_level("WARNING", logger="ratgan.generation.reference"):
        assert generate_scans(run, 1, tmp_path / "out", reference=ref, progress=False)
    # the orientation check is skipped too, no longer silently
    assert "nothing checks that the reference" in caplog.text


def test_an_existing_file_as_out_is_one_sentence(tiny_run, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    args = ["generate", str(tiny_run), "--n", "1", "--out", str(tmp_path / "afile")]
    assert main([*args, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert "is a file, not a folder" in err


def test_the_training_voxel_size_is_recorded_and_compared_without_the_scans(
    tiny_run, phantom_dir, tmp_path
):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    data = json.loads((run / "data.json").read_text())
    assert {tuple(e["voxel_size"]) for e in data["entries"]} == {(0.375, 0.375, 0.5)}
    for entry in data["entries"]:
        entry["image"] = str(tmp_path / "moved" / Path(entry["image"]).name)
    (run / "data.json").write_text(json.dumps(data))
    ref = _reference(tmp_path / "ref.nii.gz", (64, 64, 40), np.diag([3.0, 3.0, 3.0, 1.0]))
    with pytest.raises(RatganError, match=r"voxel size 3 x 3 x 3 but .* have 0.375 x 0.375 x 0.5"):
        generate_scans(run, 1, tmp_path / "out", reference=ref, progress=False)


def test_label_maps_left_without_a_manifest_are_refused_not_paired_with_new_scans(
    tiny_run, phantom_dir, tmp_path
):
    """A folder's labels/ pairs each scan with the label map of its name (ratgan.data.io): a
    label map left there by another set (its scans and manifest deleted) would be read as the
    new scan's, so it is refused as scans without a manifest are."""
    out = tmp_path / "syn"
    (out / "labels").mkdir(parents=True)
    stale = min((phantom_dir / "labels").glob("*.nii*"))
    shutil.copy(stale, out / "labels" / "synthetic_00000.nii.gz")
    with pytest.raises(RatganError, match=r"labels/synthetic_00000\.nii\.gz but no manifest"):
        generate_scans(tiny_run, 2, out, progress=False)
    assert _files(out) == ["labels/synthetic_00000.nii.gz"]
