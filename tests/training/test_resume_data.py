"""A resumed run continues on exactly the scans it started with, from any working directory.

Its data stream's state indexes the recorded scans, so re-listing the data source on resume
would silently train on other data after scans were added or removed; a relative source
would not be found from another directory."""

import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from ratgan.config import load_config
from ratgan.errors import RatganError
from ratgan.training import checkpoint as ckpt
from ratgan.training.run import train


def _cfg(iterations: int):
    return load_config(
        "tiny",
        {
            "train.iterations": iterations,
            "train.log_every": 1,
            "train.checkpoint_every": 2,
            "train.sample_every": 100,
        },
    )


def _copy_scans(phantom_dir: Path, folder: Path, n: int) -> Path:
    folder.mkdir()
    for path in sorted((phantom_dir / "images").glob("*.nii.gz"))[:n]:
        shutil.copy(path, folder / path.name)
    return folder


def _weights(run: Path, it: int) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(ckpt.checkpoint_path(run, it))["networks"]["G"]


def test_resume_from_another_directory_with_scans_added_continues_on_the_recorded_ones(
    phantom_dir, tmp_path, monkeypatch, caplog
):
    full = tmp_path / "full"
    train(_cfg(4), _copy_scans(phantom_dir, tmp_path / "a", 3), full, progress=False)
    work = tmp_path / "work"
    work.mkdir()
    _copy_scans(phantom_dir, work / "scans", 3)
    monkeypatch.chdir(work)
    train(_cfg(2), "scans", tmp_path / "part", progress=False)  # a relative source
    record = json.loads((tmp_path / "part" / "data.json").read_text())
    assert record["source"] == str(work / "scans")
    extra = sorted((phantom_dir / "images").glob("*.nii.gz"))[3]
    shutil.copy(extra, work / "scans" / extra.name)  # a scan added after the start
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING):
        train(_cfg(4), None, tmp_path / "part", resume=True, progress=False)
    assert "continues on the 3 scans it started with" in caplog.text
    a, b = _weights(full, 4), _weights(tmp_path / "part", 4)
    assert all(torch.equal(v, b[k]) for k, v in a.items())  # the same run as without the change


def test_resume_refuses_a_recorded_scan_that_is_gone(phantom_dir, tmp_path):
    data = _copy_scans(phantom_dir, tmp_path / "scans", 3)
    train(_cfg(2), data, tmp_path / "run", progress=False)
    gone = sorted(data.glob("*.nii.gz"))[1]
    gone.unlink()
    with pytest.raises(RatganError, match=f"{gone.name}, a training scan recorded in .*data.json"):
        train(_cfg(4), None, tmp_path / "run", resume=True, progress=False)


def test_resume_refuses_a_recorded_scan_whose_content_changed(phantom_dir, tmp_path):
    data = _copy_scans(phantom_dir, tmp_path / "scans", 3)
    train(_cfg(2), data, tmp_path / "run", progress=False)
    path = sorted(data.glob("*.nii.gz"))[0]
    img = nib.load(path)
    brighter = np.asarray(img.dataobj, dtype=np.float32) * 2.0 + 5.0
    nib.save(nib.Nifti1Image(brighter, img.affine, img.header), path)
    with pytest.raises(RatganError, match=f"{path.name} has changed since the run started"):
        train(_cfg(4), None, tmp_path / "run", resume=True, progress=False)


def test_resume_refuses_a_scan_replaced_by_one_of_the_same_value_range(phantom_dir, tmp_path):
    """The preprocessing record (shape, min, max) misses a scan replaced by another of the same
    range: the digest recorded at the start catches it."""
    data = _copy_scans(phantom_dir, tmp_path / "scans", 3)
    train(_cfg(2), data, tmp_path / "run", progress=False)
    path = sorted(data.glob("*.nii.gz"))[0]
    img = nib.load(path)
    flipped = np.ascontiguousarray(np.flip(np.asarray(img.dataobj), axis=0))  # same min and max
    nib.save(nib.Nifti1Image(flipped, img.affine, img.header), path)
    with pytest.raises(RatganError, match=f"{path.name} has changed since the run started"):
        train(_cfg(4), None, tmp_path / "run", resume=True, progress=False)
    record = json.loads((tmp_path / "run" / "data.json").read_text())
    assert all(len(e["sha256"]) == 64 for e in record["entries"])


def test_a_run_recorded_without_digests_resumes_with_the_preprocessing_check(phantom_dir, tmp_path):
    data = _copy_scans(phantom_dir, tmp_path / "scans", 3)
    run = tmp_path / "run"
    train(_cfg(2), data, run, progress=False)
    record = json.loads((run / "data.json").read_text())
    for entry in record["entries"]:
        del entry["sha256"]  # as written before digests were recorded
    (run / "data.json").write_text(json.dumps(record))
    train(_cfg(4), None, run, resume=True, progress=False)
    assert [i for i, _ in ckpt.list_checkpoints(run)][-1] == 4


def test_a_refused_resume_leaves_the_runs_config_as_it_was(phantom_dir, tmp_path):
    data = _copy_scans(phantom_dir, tmp_path / "scans", 3)
    run = tmp_path / "run"
    train(_cfg(2), data, run, progress=False)
    before = (run / "config.yaml").read_text()
    path = sorted(data.glob("*.nii.gz"))[0]
    img = nib.load(path)
    brighter = np.asarray(img.dataobj, dtype=np.float32) * 2.0 + 5.0
    nib.save(nib.Nifti1Image(brighter, img.affine, img.header), path)
    with pytest.raises(RatganError, match="has changed since the run started"):
        train(_cfg(6), None, run, resume=True, progress=False)  # a new iteration target
    assert (run / "config.yaml").read_text() == before
