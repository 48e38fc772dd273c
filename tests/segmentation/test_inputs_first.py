"""`ratgan label` and `ratgan segbench` check their inputs before registering or writing
anything, leave no partial label set behind, and stop labelling once the quality gate has
rejected a probe of synthetic scans.  The labeller is replaced by a fast stand-in here (ANTs
itself is tested in test_atlas.py)."""

import json
import shutil

import numpy as np
import pytest
import torch

from ratgan.cli import main
from ratgan.data.io import read_scan
from ratgan.errors import RatganError
from ratgan.segmentation import atlas as atlas_mod
from ratgan.segmentation import labels as labels_mod
from ratgan.segmentation.atlas import AtlasParams, label_scans, make_atlases

FAST = ["--channels", "4,8", "--max-epochs", "2", "--patience", "2", "--no-progress"]
SHAPE = ["--shape", "16", "16", "8"]


def _nan_scan(path, like):
    # written by nibabel: write_nifti refuses NaN, as it should
    import nibabel as nib

    scan = read_scan(like)
    nib.save(nib.Nifti1Image(np.full(scan.shape, np.nan, np.float32), scan.affine), path)


def _threshold_labels(target, *args, **kwargs):
    """Stand-in for the ANTs labeller: bright voxels are GM."""
    return (read_scan(target).data > 50).astype(np.uint8)


@pytest.fixture
def targets(tiny_synthetic, tmp_path):
    """Three scans to label, the last of which (in file order) holds only NaN."""
    folder = tmp_path / "targets"
    folder.mkdir()
    for path in sorted(tiny_synthetic.glob("*.nii.gz"))[:2]:
        shutil.copy(path, folder / path.name)
    _nan_scan(folder / "zz_nan.nii.gz", path)
    return folder


def test_label_reads_every_scan_before_registering_any(tiny_real, targets, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(atlas_mod, "atlas_label", lambda *a, **k: calls.append(a) or 0)
    out = tmp_path / "labels"
    args = ["label", "--atlas", str(tiny_real), "--scans", str(targets), "--out", str(out)]
    assert main([*args, "--k", "1", "--workers", "1", "--no-progress"]) == 2
    assert calls == [] and not out.exists()


def test_a_failed_labelling_leaves_no_label_maps_and_a_rerun_uses_what_it_finished(
    tiny_real, tiny_synthetic, tmp_path, monkeypatch
):
    from ratgan.data.io import list_scans

    atlases = make_atlases(list_scans(tiny_real), 1)
    scans = sorted(tiny_synthetic.glob("*.nii.gz"))[:3]
    calls = []

    def fails_on_the_second(target, *args, **kwargs):
        calls.append(target.name)
        if len(calls) == 2:
            raise RuntimeError("registration failed")
        return _threshold_labels(target, *args, **kwargs)

    monkeypatch.setattr(atlas_mod, "atlas_label", fails_on_the_second)
    out = tmp_path / "labels"
    with pytest.raises(RuntimeError, match="registration failed"):
        label_scans(scans, atlases, out, AtlasParams(k=1), workers=1, progress=False)
    assert [p.name for p in out.iterdir()] == [".cache"]  # the finished one, cached
    calls.clear()
    monkeypatch.setattr(
        atlas_mod, "atlas_label", lambda t, *a, **k: calls.append(t.name) or _threshold_labels(t)
    )
    written = label_scans(scans, atlases, out, AtlasParams(k=1), workers=1, progress=False)
    assert [p.name for p in written] == [p.name for p in scans]
    assert calls == [p.name for p in scans[1:]]


def test_a_failure_while_writing_the_maps_leaves_the_previous_set(
    tiny_real, tiny_synthetic, tmp_path, monkeypatch
):
    """The maps are renamed into --out only once all are written: a failure on the second
    write leaves the first run's maps (not a mixture of two labellings) and no temporary
    files."""
    from ratgan.data import io
    from ratgan.data.io import list_scans, read_label

    atlases = make_atlases(list_scans(tiny_real), 1)
    scans = sorted(tiny_synthetic.glob("*.nii.gz"))[:3]
    out = tmp_path / "labels"
    monkeypatch.setattr(atlas_mod, "atlas_label", _threshold_labels)
    label_scans(scans, atlases, out, AtlasParams(k=1), workers=1, progress=False)
    before = {p.name: p.read_bytes() for p in out.glob("*.nii.gz")}
    assert len(before) == 3

    monkeypatch.setattr(atlas_mod, "atlas_label", lambda t, *a, **k: _threshold_labels(t) * 2)
    real_write, writes = io.write_nifti, []

    def fails_on_the_second(path, *args, **kwargs):
        writes.append(path)
        if len(writes) == 2:
            raise OSError("No space left on device")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(io, "write_nifti", fails_on_the_second)
    with pytest.raises(OSError, match="No space"):
        label_scans(scans, atlases, out, AtlasParams(k=1, seed=1), workers=1, progress=False)
    assert {p.name: p.read_bytes() for p in out.glob("*.nii.gz")} == before
    assert sorted(p.name for p in out.iterdir()) == [".cache", *sorted(before)]
    # the rerun writes the second labelling whole
    monkeypatch.setattr(io, "write_nifti", real_write)
    label_scans(scans, atlases, out, AtlasParams(k=1, seed=1), workers=1, progress=False)
    for path in scans:
        assert read_label(out / path.name, read_scan(path)).max() == 2


def test_results_of_jobs_that_finish_after_a_failure_are_stored():
    """A failed registration cancels the jobs not started, but a job still running when it
    fails is stored (cached) once it finishes, before the error is raised."""
    import threading
    from concurrent.futures import Future

    class PoolFuture(Future):
        """As in an executor: a cancelled job that has not started is reported done."""

        def cancel(self):
            cancelled = super().cancel()
            if cancelled:
                self.set_running_or_notify_cancel()
            return cancelled

    futures = [PoolFuture() for _ in range(4)]
    for f in futures[:3]:
        f.set_running_or_notify_cancel()  # three running; the fourth has not started
    futures[0].set_exception(RuntimeError("registration failed"))
    futures[1].set_result("map 1")
    later = threading.Timer(0.2, futures[2].set_result, ["map 2"])  # after the failure
    later.start()
    stored, done = {}, []
    with pytest.raises(RuntimeError, match="registration failed"):
        atlas_mod.store_as_completed(
            dict(zip(futures, range(4), strict=True)), stored.__setitem__, lambda: done.append(1)
        )
    later.join()
    assert stored == {1: "map 1", 2: "map 2"} and len(done) == 2
    assert futures[3].cancelled()


def _segbench(real, synthetic, out, *extra):
    return [
        "segbench",
        "--real",
        str(real),
        "--synthetic",
        str(synthetic),
        "--out",
        str(out),
        *extra,
    ]


def test_a_segbench_refused_for_its_inputs_leaves_no_out_folder(
    tiny_real, tiny_synthetic, tmp_path, capsys
):
    few = tmp_path / "few"
    for sub in ("images", "labels"):
        (few / sub).mkdir(parents=True)
        for path in sorted((tiny_real / sub).glob("*.nii.gz"))[:2]:
            shutil.copy(path, few / sub / path.name)
    out = tmp_path / "bench"
    assert main(_segbench(few, tiny_synthetic, out, "--tests", "1,2", *SHAPE, *FAST)) == 2
    assert "needs at least 4" in capsys.readouterr().err
    assert not out.exists()
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(_segbench(tiny_real, tiny_synthetic, afile, "--tests", "1", *SHAPE, *FAST)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--out" in err and "is a file" in err


def test_a_synthetic_folder_too_small_for_the_tests_is_refused_before_labelling(
    tiny_real, tiny_synthetic, tmp_path, monkeypatch, capsys
):
    small = tmp_path / "small"
    small.mkdir()
    for path in sorted(tiny_synthetic.glob("*.nii.gz"))[:3]:
        shutil.copy(path, small / path.name)

    def no_labelling(*args, **kwargs):
        raise AssertionError("labelled scans although the folder is too small")

    monkeypatch.setattr(labels_mod, "atlas_labels", no_labelling)
    out = tmp_path / "bench"
    # tests 1 and 2 with 8 real training scans need 4 synthetic scans
    assert main(_segbench(tiny_real, small, out, "--tests", "1,2", *SHAPE, *FAST)) == 2
    assert "holds 3 scans but the tests need 4" in capsys.readouterr().err
    assert not out.exists()


def _rejected_by_the_gate(labelled):
    def labeller(state, syn, folder="labels"):
        if folder == "labels":
            labelled.extend(syn.names)
        # an empty brain: every scan's brain fraction is 0, outside the real range
        return syn.with_labels(torch.zeros(syn.images.shape, dtype=torch.int64))

    return labeller


@pytest.mark.parametrize(("probe", "expected"), [("8", 8), ("0", 12)])
def test_segbench_stops_labelling_when_the_gate_rejects_its_probe(
    tiny_real, tiny_synthetic, tmp_path, monkeypatch, capsys, probe, expected
):
    labelled = []
    monkeypatch.setattr(labels_mod, "atlas_labels", _rejected_by_the_gate(labelled))
    out = tmp_path / "bench"
    args = _segbench(tiny_real, tiny_synthetic, out, "--tests", "1,2", "--gate-probe", probe)
    assert main([*args, *SHAPE, *FAST]) == 2
    err = capsys.readouterr().err
    assert len(set(labelled)) == expected  # scans given to the labeller (the probe's twice)
    gate = json.loads((out / "quality_gate.json").read_text())
    assert gate["n_checked"] == expected and gate["n_accepted"] == 0
    if expected == 8:
        assert "none of the 8 synthetic scans labelled so far passed the quality gate" in err
        assert "fraction was out of the real range in 8" in err and "below 31%" in err
    else:
        assert "no synthetic scan" in err


def test_label_checks_the_atlases_before_registering(tiny_real, tmp_path):
    from ratgan.data.io import list_scans

    atlases = make_atlases(list_scans(tiny_real), 1)
    broken = tmp_path / "broken.nii.gz"
    _nan_scan(broken, atlases[0].image)
    bad = [atlas_mod.Atlas(broken, atlases[0].label)]
    with pytest.raises(RatganError, match="broken.nii.gz holds"):
        label_scans([atlases[0].image], bad, tmp_path / "out", AtlasParams(k=1), progress=False)
    assert not (tmp_path / "out").exists()


def test_label_refuses_negative_syn_iterations_before_reading_anything(tmp_path, capsys):
    args = ["label", "--atlas", str(tmp_path / "none"), "--scans", str(tmp_path / "none")]
    assert main([*args, "--out", str(tmp_path / "o"), "--syn-iterations", "20", "-1"]) == 2
    assert "--syn-iterations must be counts >= 0 (got [20, -1])" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_an_unfinished_generation_is_refused_as_synthetic_source(
    tiny_real, tiny_synthetic, tmp_path, capsys
):
    """A folder left by an interrupted `ratgan generate` (manifest.json says complete: false)
    holds part of a set; a finished one is accepted."""
    manifest = tiny_synthetic / "manifest.json"
    manifest.write_text(json.dumps({"complete": False, "n": 20}))
    out = tmp_path / "bench"
    assert main(_segbench(tiny_real, tiny_synthetic, out, "--tests", "1,2", *SHAPE, *FAST)) == 2
    err = capsys.readouterr().err
    assert f"--synthetic: folder {tiny_synthetic} holds an unfinished" in err
    assert "rerun `ratgan generate` into it" in err
    assert not out.exists()
    manifest.write_text(json.dumps({"complete": True, "n": 12}))
    labels_mod.check_synthetic_source(tiny_synthetic, 4, 8)


def test_label_refuses_two_scans_with_one_file_name(tiny_synthetic, tiny_real, tmp_path):
    from ratgan.data.io import list_scans

    scans = []
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        scans.append(shutil.copy(sorted(tiny_synthetic.glob("*.nii.gz"))[0], tmp_path / sub))
    atlases = make_atlases(list_scans(tiny_real), 1)
    with pytest.raises(RatganError, match="share the file name synthetic-000.nii.gz"):
        label_scans(scans, atlases, tmp_path / "out", AtlasParams(k=1), progress=False)
