"""`ratgan show` through the real CLI entry point, on phantom scans."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ratgan.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantom")
    assert (
        main(["phantom", "--out", str(out), "--subjects", "2", "--seed", "5", "--no-progress"]) == 0
    )
    return out


def _scans(cohort: Path, folder: str) -> list[str]:
    return [str(cohort / folder / f"sub-00{i}.nii.gz") for i in range(2)]


def _assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_show_writes_a_png(cohort, tmp_path, capsys):
    out = tmp_path / "views.png"
    assert main(["show", *_scans(cohort, "images"), "--out", str(out)]) == 0
    _assert_png(out)
    assert str(out) in capsys.readouterr().out


def test_show_with_labels_writes_a_png(cohort, tmp_path):
    out = tmp_path / "sub" / "labels.png"
    assert (
        main(
            [
                "show",
                *_scans(cohort, "images"),
                "--labels",
                *_scans(cohort, "labels"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    _assert_png(out)


def test_show_labels_only_some_scans(cohort, tmp_path):
    out = tmp_path / "some.png"
    assert (
        main(
            [
                "show",
                *_scans(cohort, "images"),
                "--labels",
                "-",
                _scans(cohort, "labels")[1],
                "--out",
                str(out),
            ]
        )
        == 0
    )
    _assert_png(out)


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_show_names_a_missing_file(tmp_path, capsys):
    missing = tmp_path / "missing.nii.gz"
    assert main(["show", str(missing), "--out", str(tmp_path / "x.png")]) == 2
    err = _error(capsys)
    assert str(missing) in err and "does not exist" in err
    assert not (tmp_path / "x.png").exists()


def test_show_rejects_a_label_count_that_differs(cohort, tmp_path, capsys):
    assert (
        main(
            [
                "show",
                *_scans(cohort, "images"),
                "--labels",
                _scans(cohort, "labels")[0],
                "--out",
                str(tmp_path / "x.png"),
            ]
        )
        == 2
    )
    assert "one per scan" in _error(capsys)


def test_show_rejects_an_output_that_is_not_png(cohort, tmp_path, capsys):
    assert main(["show", _scans(cohort, "images")[0], "--out", str(tmp_path / "x.jpg")]) == 2
    assert ".png" in _error(capsys)


def test_show_draws_every_scan_in_ras_order_at_its_voxel_size(tmp_path, monkeypatch):
    """A scan stored in another voxel order (PIR) is drawn as its RAS copy is: the panel
    called coronal shows the coronal plane, with the RAS voxel size (it was drawn as stored,
    its axial plane called coronal, at the stored pixdim)."""
    import ratgan.viz

    rng = np.random.default_rng(0)
    data = rng.random((10, 12, 8)).astype(np.float32)
    labels = rng.integers(0, 4, (10, 12, 8)).astype(np.uint8)
    affine = np.diag([0.3, 0.3, 0.5, 1.0])
    ras = nib.Nifti1Image(data, affine)
    to_pir = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt("PIR")
    )
    pir = ras.as_reoriented(to_pir)
    assert nib.aff2axcodes(pir.affine) == ("P", "I", "R") and pir.shape == (12, 8, 10)
    nib.save(pir, tmp_path / "pir.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine).as_reoriented(to_pir), tmp_path / "pir_lab.nii.gz")
    nib.save(ras, tmp_path / "ras.nii.gz")
    seen = {}

    def capture(volumes, out_png, labels=None, titles=None, zooms=None):
        seen.update(volumes=volumes, labels=labels, zooms=zooms)
        return out_png

    monkeypatch.setattr(ratgan.viz, "orthogonal_views", capture)
    scans = [str(tmp_path / "pir.nii.gz"), str(tmp_path / "ras.nii.gz")]
    args = ["show", *scans, "--labels", str(tmp_path / "pir_lab.nii.gz"), "-"]
    assert main([*args, "--out", str(tmp_path / "x.png")]) == 0
    for volume in seen["volumes"]:
        np.testing.assert_array_equal(volume, data)
    np.testing.assert_array_equal(seen["labels"][0], labels)
    assert seen["labels"][1] is None
    np.testing.assert_allclose(seen["zooms"], (0.3, 0.3, 0.5), rtol=1e-6)


def test_show_warns_when_a_scan_has_another_voxel_size(tmp_path, monkeypatch, caplog):
    """Every panel is drawn at the first scan's voxel size: a scan of another size is named."""
    import ratgan.viz

    data = np.random.default_rng(0).random((6, 6, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([0.3, 0.3, 0.5, 1.0])), tmp_path / "a.nii.gz")
    nib.save(nib.Nifti1Image(data, np.diag([0.3, 0.3, 1.0, 1.0])), tmp_path / "thick.nii.gz")
    monkeypatch.setattr(ratgan.viz, "orthogonal_views", lambda volumes, out_png, **k: out_png)
    scans = [str(tmp_path / "a.nii.gz"), str(tmp_path / "thick.nii.gz")]
    with caplog.at_level("WARNING"):
        assert main(["show", *scans[:1], scans[0], "--out", str(tmp_path / "x.png")]) == 0
        assert "voxel size" not in caplog.text  # the same size: no warning
        assert main(["show", *scans, "--out", str(tmp_path / "y.png")]) == 0
    assert "thick.nii.gz has voxel size" in caplog.text and "a.nii.gz" in caplog.text
