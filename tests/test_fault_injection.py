"""Fault injection beside the SIGKILL checkpoint test (tests/training/test_run.py): processes
killed in the middle of `generate`, `label`, `evaluate` and `turing create` leave no partial
output and a rerun completes; a killed generation's folder refuses another generation's scans;
a full disk while writing a checkpoint gives one clear error.

The faults are injected from the test side by ``faulty_ratgan.py``, which stalls the real
command at a chosen point so that the test can SIGKILL it there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ratgan.cli import main
from ratgan.folder_lock import LOCK_FILE

FAULTY = Path(__file__).with_name("faulty_ratgan.py")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """(phantom cohort, a tiny trained run folder)."""
    from ratgan.config import load_config
    from ratgan.data.phantom import write_cohort
    from ratgan.training.run import train

    root = tmp_path_factory.mktemp("faults")
    write_cohort(root / "cohort", subjects=4, seed=11, progress=False)
    train(
        load_config("tiny", {"train.iterations": 2}), root / "cohort", root / "run", progress=False
    )
    return root / "cohort", root / "run"


def _kill_at(fault: str, args: list[str], tmp_path: Path) -> None:
    """Run `ratgan ARGS` with FAULT injected, SIGKILL it when it gets there."""
    marker = tmp_path / f"{fault}.reached"
    proc = subprocess.Popen(
        [sys.executable, str(FAULTY), fault, str(marker), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 600  # generous: CI machines may be shared and slow
    try:
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, f"{fault} was never reached"
            time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL
        proc.wait()


def _visible(folder: Path) -> set[str]:
    return {
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }


def _hidden(folder: Path) -> list[Path]:
    """Hidden leftovers, but for the folder lock's file, which a killed command leaves by
    design (unlocked by the kernel; the next command takes it and removes it when done)."""
    return [p for p in folder.rglob(".*") if p.name != LOCK_FILE]


def test_sigkill_during_generate_leaves_complete_files_only_and_a_rerun_completes(
    tiny_run, tmp_path
):
    _, run = tiny_run
    out = tmp_path / "gen"
    args = [
        "generate",
        str(run),
        "--n",
        "4",
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--writers",
        "1",
        "--no-progress",
    ]
    _kill_at("generate-nifti", args, tmp_path)
    # The half-written second scan exists only under its hidden temporary name, and the
    # manifest says that the set is not complete.
    assert _visible(out) == {"synthetic_00000.nii.gz", "manifest.json"}
    assert json.loads((out / "manifest.json").read_text())["complete"] is False
    assert np.asarray(nib.load(out / "synthetic_00000.nii.gz").dataobj).shape == (64, 64, 40)
    assert len(_hidden(out)) == 1
    # Another generation into the killed one's folder would mix two sets: refused.
    assert main([*args, "--seed", "1"]) == 2
    assert _visible(out) == {"synthetic_00000.nii.gz", "manifest.json"}
    assert main(args) == 0
    assert json.loads((out / "manifest.json").read_text())["complete"] is True
    assert _visible(out) == {f"synthetic_{i:05d}.nii.gz" for i in range(4)} | {"manifest.json"}
    assert _hidden(out) == []
    clean = tmp_path / "clean"
    assert main(args[:5] + [str(clean)] + args[6:]) == 0  # an uninterrupted generation
    for i in range(4):
        name = f"synthetic_{i:05d}.nii.gz"
        assert np.array_equal(
            np.asarray(nib.load(out / name).dataobj), np.asarray(nib.load(clean / name).dataobj)
        ), name


def test_sigkill_during_label_leaves_no_label_maps_and_a_rerun_completes(tiny_run, tmp_path):
    pytest.importorskip("ants")
    cohort, run = tiny_run
    scans = tmp_path / "scans"
    assert main(["generate", str(run), "--n", "2", "--out", str(scans), "--no-progress"]) == 0
    out = tmp_path / "labels"
    args = ["label", "--atlas", str(cohort), "--scans", str(scans), "--out", str(out)]
    args += ["--k", "1", "--workers", "1", "--no-progress"]
    _kill_at("label-second", args, tmp_path)
    # The first scan's map is in the hidden cache only: no partial set of label maps.
    assert _visible(out) == set() and len(list((out / ".cache").glob("*.nii.gz"))) == 1
    assert main(args) == 0
    names = {"synthetic_00000.nii.gz", "synthetic_00001.nii.gz"}
    assert _visible(out) == names
    clean = tmp_path / "clean"
    assert main(args[:6] + [str(clean)] + args[7:]) == 0  # an uninterrupted labelling
    for name in names:
        assert np.array_equal(
            np.asarray(nib.load(out / name).dataobj), np.asarray(nib.load(clean / name).dataobj)
        ), name


def test_sigkill_during_evaluate_leaves_no_partial_report(tiny_run, tmp_path):
    cohort, run = tiny_run
    out = tmp_path / "eval"
    args = [
        "evaluate",
        "--real",
        str(cohort),
        "--synthetic",
        f"tiny={run}",
        "--out",
        str(out),
        "--n-generate",
        "2",
        "--comparisons",
        "20",
        "--msssim-comparisons",
        "4",
        "--split-repeats",
        "2",
        "--no-progress",
    ]
    _kill_at("evaluate-figures", args, tmp_path)
    # Two figures were written before the kill, in the hidden staging folder only.
    assert {p for p in _visible(out) if not p.startswith("generated/")} == set()
    assert main(args) == 0
    report = {
        "report.md",
        "metrics.json",
        "montage.png",
        "mean_std_maps.png",
        "intensity_histograms.png",
        "memorisation.png",
    }
    assert report <= _visible(out) and _hidden(out) == []


@pytest.mark.parametrize("fault", ["turing-render", "turing-rename"])
def test_sigkill_during_turing_create_leaves_no_study(tiny_run, tmp_path, fault):
    cohort, run = tiny_run
    assert (
        main(["generate", str(run), "--n", "2", "--out", str(tmp_path / "syn"), "--no-progress"])
        == 0
    )
    out = tmp_path / "study"
    args = [
        "turing",
        "create",
        "--real",
        str(cohort),
        "--synthetic",
        f"m={tmp_path / 'syn'}",
        "--n-real",
        "2",
        "--n-per-model",
        "2",
        "--raters",
        "2",
        "--out",
        str(out),
    ]
    _kill_at(fault, args, tmp_path)
    assert not (out / "study.sqlite").exists()
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["links.txt", "study.sqlite"]
    from ratgan.turing.study import Study

    study = Study(out)
    assert all(r.token in (out / "links.txt").read_text() for r in study.raters())


def test_a_full_disk_while_checkpointing_gives_one_error_and_keeps_the_last_checkpoint(
    tiny_run, tmp_path, monkeypatch, capsys
):
    import errno

    import torch

    from ratgan.training import checkpoint as ckpt

    cohort, _ = tiny_run
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("iteration") == 4:
            if hasattr(f, "write"):  # some bytes reach the disk before it is full
                f.write(b"PK\x03\x04 partial")
            else:
                Path(f).write_bytes(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    run = tmp_path / "run"
    args = [
        "train",
        "--config",
        "tiny",
        "--data",
        str(cohort),
        "--out",
        str(run),
        "--iterations",
        "6",
        "--no-progress",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "cannot write checkpoint" in err and "ckpt_0000004.pt (No space left on device)" in err
    assert "the previous checkpoint ckpt_0000002.pt is kept intact" in err
    assert [i for i, _ in ckpt.list_checkpoints(run)] == [2]
    assert ckpt.load_checkpoint(ckpt.checkpoint_path(run, 2))["iteration"] == 2
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["ckpt_0000002.pt"]
    monkeypatch.setattr(torch, "save", real_save)  # space again: the run continues
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert [i for i, _ in ckpt.list_checkpoints(run)] == [4, 6]
