"""The built-in phantom cohort: `ratgan phantom` writes SIGMA-shaped scans with plausible labels."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from ratgan.cli import main
from ratgan.data import phantom
from ratgan.data.io import read_label, read_scan

SUBJECTS = 8
SEED = 3

# The documented tissue-fraction ranges (docs/phantom.md): "brain" is labelled voxels / all
# voxels, each tissue is its voxels / labelled voxels.
RANGES = {"brain": (0.11, 0.19), "GM": (0.66, 0.80), "WM": (0.08, 0.13), "CSF": (0.11, 0.23)}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Eight subjects written through the real CLI entry point."""
    out = tmp_path_factory.mktemp("phantom")
    assert (
        main(
            [
                "phantom",
                "--out",
                str(out),
                "--subjects",
                str(SUBJECTS),
                "--seed",
                str(SEED),
                "--no-progress",
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def scans(cohort):
    """(scan, labels) of every subject, in file order."""
    out = []
    for img in sorted((cohort / "images").iterdir()):
        scan = read_scan(img)
        out.append((scan, read_label(cohort / "labels" / img.name, scan)))
    return out


def test_cli_writes_the_expected_files(cohort):
    names = [f"sub-{i:03d}.nii.gz" for i in range(SUBJECTS)]
    assert sorted(p.name for p in (cohort / "images").iterdir()) == names
    assert sorted(p.name for p in (cohort / "labels").iterdir()) == names
    manifest = json.loads((cohort / "phantom.json").read_text())
    assert manifest["seed"] == SEED and manifest["subjects"] == SUBJECTS
    assert [r["file"] for r in manifest["scans"]] == names


def test_scans_have_the_sigma_geometry(scans):
    for scan, labels in scans:
        assert scan.shape == (64, 64, 40)
        assert labels.shape == (64, 64, 40)
        np.testing.assert_allclose(scan.zooms, (0.375, 0.375, 0.5), atol=1e-6)
        # RAS, axis-aligned, the centre of the field of view at the origin
        np.testing.assert_allclose(np.diag(scan.affine)[:3], (0.375, 0.375, 0.5), atol=1e-6)
        np.testing.assert_allclose(scan.affine @ [31.5, 31.5, 19.5, 1.0], [0, 0, 0, 1], atol=1e-6)
        assert int(scan.header["qform_code"]) == 1 and int(scan.header["sform_code"]) == 1


def test_documented_ranges_match_the_module():
    assert phantom.TISSUE_FRACTION_RANGES == RANGES


def test_labels_hold_four_classes_in_plausible_fractions(scans):
    for _, labels in scans:
        assert set(np.unique(labels)) == {0, 1, 2, 3}
        brain = labels > 0
        fractions = {"brain": brain.mean()}
        fractions.update(
            {
                name: (labels == k).sum() / brain.sum()
                for k, name in ((1, "GM"), (2, "WM"), (3, "CSF"))
            }
        )
        for name, value in fractions.items():
            lo, hi = RANGES[name]
            assert lo <= value <= hi, f"{name} fraction {value:.3f} outside [{lo}, {hi}]"


def test_brain_volume_varies_like_a_rat_cohort(scans):
    volumes = np.array([(labels > 0).sum() for _, labels in scans], float)
    cov = volumes.std() / volumes.mean()
    assert 0.01 < cov < 0.10  # about 4% expected (docs/method.md section 1)


def test_images_look_like_surface_coil_epi(scans):
    for scan, labels in scans:
        img = scan.data
        assert img.dtype == np.float32
        assert img.min() >= 0 and 500 < img.max() < 4000
        brain = labels > 0
        # brain well above the noise in the corners of the field of view
        corner = np.concatenate([img[:6, :6].ravel(), img[-6:, :6].ravel()])
        assert np.median(img[brain]) > 8 * corner.mean()
        # the coil on top: the dorsal half of the brain is brighter than the ventral half
        rows = np.arange(64)[None, :, None]
        mid = np.median(np.nonzero(brain)[1])
        assert img[brain & (rows > mid)].mean() > 1.5 * img[brain & (rows < mid)].mean()
        # T2*-weighted contrast: CSF brighter than GM brighter than WM (same depths compared)
        csf, gm, wm = (img[(labels == k) & (rows > mid)].mean() for k in (3, 1, 2))
        assert csf > 1.15 * gm and gm > 1.15 * wm
        # signal outside the brain (muscle, skin) next to it
        outside = ~brain & (img > 0.15 * img[brain].mean())
        assert outside.sum() > 0.2 * brain.sum()


def test_subjects_differ_from_each_other(scans):
    for (a, la), (b, lb) in itertools.pairwise(scans):
        assert not np.array_equal(a.data, b.data)
        overlap = 2 * ((la > 0) & (lb > 0)).sum() / ((la > 0).sum() + (lb > 0).sum())
        assert 0.8 < overlap < 0.995  # the same anatomy, not the same brain


def test_same_seed_gives_identical_files_whatever_the_cohort_size(cohort, tmp_path):
    phantom.write_cohort(tmp_path, subjects=2, seed=SEED, progress=False)
    for folder in ("images", "labels"):
        for name in ("sub-000.nii.gz", "sub-001.nii.gz"):
            assert (tmp_path / folder / name).read_bytes() == (cohort / folder / name).read_bytes()


def test_make_subject_matches_the_written_file(scans):
    image, labels, affine = phantom.make_subject(phantom.subject_seed(SEED, 1))
    scan, lab = scans[1]
    assert image.dtype == np.float32 and labels.dtype == np.uint8
    np.testing.assert_array_equal(scan.data, image)
    np.testing.assert_array_equal(lab, labels)
    np.testing.assert_array_equal(scan.affine, affine)


def test_another_seed_gives_other_scans(cohort, tmp_path):
    phantom.write_cohort(tmp_path, subjects=1, seed=SEED + 1, progress=False)
    a = read_scan(tmp_path / "images" / "sub-000.nii.gz").data
    b = read_scan(cohort / "images" / "sub-000.nii.gz").data
    assert not np.allclose(a, b)


def test_sample_params_is_deterministic_and_varied():
    a = phantom.sample_params(np.random.default_rng(0))
    assert a == phantom.sample_params(np.random.default_rng(0))
    assert a != phantom.sample_params(np.random.default_rng(1))


def test_a_smaller_cohort_replaces_a_larger_one(tmp_path):
    phantom.write_cohort(tmp_path, subjects=3, seed=0, progress=False)
    (tmp_path / "images" / ".DS_Store").write_text("kept")
    phantom.write_cohort(tmp_path, subjects=1, seed=0, progress=False)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        ".DS_Store",
        "sub-000.nii.gz",
    ]
    assert [p.name for p in (tmp_path / "labels").iterdir()] == ["sub-000.nii.gz"]
    assert json.loads((tmp_path / "phantom.json").read_text())["subjects"] == 1


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_an_interrupted_rewrite_leaves_the_previous_cohort_untouched(tmp_path, monkeypatch):
    phantom.write_cohort(tmp_path, subjects=3, seed=0, progress=False)
    before = _files(tmp_path)
    real, calls = phantom.render, []

    def interrupted(params):
        calls.append(params)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(params)

    monkeypatch.setattr(phantom, "render", interrupted)
    with pytest.raises(KeyboardInterrupt):
        phantom.write_cohort(tmp_path, subjects=3, seed=1, progress=False)
    # the seed-0 cohort, byte for byte, and no staging folder left behind
    assert _files(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "labels", "phantom.json"]


def _cohort(folder: Path, kind: str) -> dict[str, bytes] | None:
    """The scans of ``folder/kind`` (hidden files left out), or None when it is absent."""
    if not (folder / kind).is_dir():
        return None
    return {p.name: p.read_bytes() for p in (folder / kind).glob("[!.]*")}


def test_an_interrupted_swap_never_leaves_part_of_a_cohort(tmp_path, monkeypatch):
    import os
    import types

    phantom.write_cohort(tmp_path / "old", subjects=3, seed=0, progress=False)
    phantom.write_cohort(tmp_path / "new", subjects=2, seed=1, progress=False)
    kinds = ("images", "labels")
    cohorts = {s: {k: _cohort(tmp_path / s, k) for k in kinds} for s in ("old", "new")}
    stops = 0
    for stop in range(20):  # stop before the first, second, ... rename of the swap
        out = tmp_path / f"run{stop}"
        phantom.write_cohort(out, subjects=3, seed=0, progress=False)
        (out / "images" / ".DS_Store").write_bytes(b"finder")
        calls = []

        def replace(src, dst, calls=calls, stop=stop):
            if len(calls) == stop:
                raise KeyboardInterrupt
            calls.append(dst)
            os.replace(src, dst)

        monkeypatch.setattr(phantom, "os", types.SimpleNamespace(replace=replace))
        try:
            phantom.write_cohort(out, subjects=2, seed=1, progress=False)
        except KeyboardInterrupt:
            stops += 1
        else:  # every rename done: the new cohort, its record, the hidden file carried over
            assert json.loads((out / "phantom.json").read_text())["seed"] == 1
            assert _cohort(out, "images") == cohorts["new"]["images"]
            assert (out / "images" / ".DS_Store").read_bytes() == b"finder"
            break
        finally:
            monkeypatch.undo()
        images, labels = _cohort(out, "images"), _cohort(out, "labels")
        # images/ is one whole cohort or absent; labels/ beside it is of the same cohort
        whole = [s for s in cohorts if images == cohorts[s]["images"]]
        assert images is None or (len(whole) == 1 and labels == cohorts[whole[0]]["labels"])
        assert labels is None or labels in (cohorts["old"]["labels"], cohorts["new"]["labels"])
        if images == cohorts["new"]["images"]:
            assert not (out / "phantom.json").exists()  # until phantom.json: visibly unfinished
        phantom.write_cohort(out, subjects=2, seed=1, progress=False)  # a rerun completes it
        assert {k: _cohort(out, k) for k in kinds} == cohorts["new"]
        assert sorted(p.name for p in out.iterdir()) == ["images", "labels", "phantom.json"]
    assert stops >= 5  # the swap renames hidden file, old folders, new folders, record


@pytest.mark.parametrize(
    "user_file",
    ["images/sub-01_T2w.nii.gz", "images/my_scan.nii", "labels/sub-01.nii.gz", "images/notes.txt"],
)
def test_an_out_holding_other_files_is_refused_and_they_are_kept(tmp_path, capsys, user_file):
    phantom.write_cohort(tmp_path, subjects=1, seed=0, progress=False)
    (tmp_path / user_file).write_bytes(b"not the phantom's")
    before = _files(tmp_path)
    args = ["phantom", "--out", str(tmp_path), "--subjects", "2", "--seed", "1", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert user_file.split("/")[1] in err and len(err.strip().splitlines()) == 1
    assert _files(tmp_path) == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--subjects", "0"], "--subjects must be at least 1"),
        (["--seed", "-1"], "--seed must not be negative"),
    ],
)
def test_cli_rejects_bad_arguments(tmp_path, capsys, args, message):
    assert main(["phantom", "--out", str(tmp_path / "x"), "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
