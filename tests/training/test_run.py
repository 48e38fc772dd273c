"""The training loop: run folder, resume equality, crash safety, divergence handling.

A run folder is written only for a run that can go on: failed starts leave nothing, resume
falls back over an unreadable checkpoint, and the logged seconds continue across resumes."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from ratgan.cli import main
from ratgan.config import load_config
from ratgan.errors import RatganError
from ratgan.training import checkpoint as ckpt
from ratgan.training.run import TrainingDiverged, train


def _cfg(iterations: int, **over):
    base = {
        "train.iterations": iterations,
        "train.log_every": 1,
        "train.checkpoint_every": 2,
        "train.sample_every": 100,
        "train.keep_checkpoints": 10,
    }
    base.update(over)
    return load_config("tiny", base)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def _strip_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "cpu_seconds")} for r in rows]


def test_resumed_run_gives_the_same_losses_as_an_uninterrupted_one(phantom_dir, tmp_path):
    full = tmp_path / "full"
    train(_cfg(4), phantom_dir, full, progress=False)
    part = tmp_path / "part"
    train(_cfg(2), phantom_dir, part, progress=False)
    train(_cfg(4), None, part, resume=True, progress=False)
    assert _strip_time(_metrics(part)) == _strip_time(_metrics(full))
    # Every line states the run's CPU time, continued (not restarted) by the resumed sitting.
    cpu = [r["cpu_seconds"] for r in _metrics(part)]
    assert cpu == sorted(cpu) and cpu[0] > 0
    a = ckpt.load_checkpoint(ckpt.checkpoint_path(full, 4))
    b = ckpt.load_checkpoint(ckpt.checkpoint_path(part, 4))
    for net in ("G", "E", "D", "C"):
        for key, value in a["networks"][net].items():
            assert torch.equal(value, b["networks"][net][key]), (net, key)


def test_a_config_edited_between_sittings_is_refused_on_resume(phantom_dir, tmp_path):
    # An edited learning rate was recorded but not used (the optimiser's state came from the
    # checkpoint), an edited loss weight was used: the run became a mixture of the two.
    run = tmp_path / "run"
    train(_cfg(2), phantom_dir, run, progress=False)
    config = run / "config.yaml"
    original = config.read_text()
    config.write_text(original.replace("lr: 0.0002", "lr: 0.05"))
    assert config.read_text() != original
    with pytest.raises(RatganError, match=r"differs from the config .*\(optim.lr 0.0002 -> 0.05\)"):
        train(_cfg(4), None, run, resume=True, progress=False)
    config.write_text(original)  # restored: the resume goes on, its new target allowed
    train(_cfg(4), None, run, resume=True, progress=False)
    assert ckpt.list_checkpoints(run)[-1][0] == 4


def test_checkpoint_holds_the_whole_state(phantom_dir, tmp_path):
    run = tmp_path / "run"
    train(_cfg(2), phantom_dir, run, progress=False)
    state = ckpt.load_checkpoint(ckpt.checkpoint_path(run, 2))
    assert state["iteration"] == 2
    assert set(state["networks"]) == set(state["optimizers"]) == {"G", "E", "D", "C"}
    assert {"config", "ranks", "world_size", "ratgan_version"} <= set(state)
    assert {"global", "train", "stream"} <= set(state["ranks"][0])
    assert state["config"]["name"] == "tiny"


def test_new_run_refuses_a_folder_with_checkpoints(phantom_dir, tmp_path):
    run = tmp_path / "run"
    train(_cfg(2), phantom_dir, run, progress=False)
    with pytest.raises(RatganError, match="--resume"):
        train(_cfg(2), phantom_dir, run, progress=False)


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    phantom_dir, tmp_path, monkeypatch
):
    from ratgan.training import alphagan

    real_call = alphagan.AlphaGANStep.__call__
    calls = {"n": 0}

    def poisoned(self, x1, x2):
        out = real_call(self, x1, x2)
        calls["n"] += 1
        if calls["n"] >= 3:
            out["d_total"] = out["d_total"] * float("nan")
        return out

    monkeypatch.setattr(alphagan.AlphaGANStep, "__call__", poisoned)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="NaN or Inf"):
        train(_cfg(6), phantom_dir, run, progress=False)
    assert [i for i, _ in ckpt.list_checkpoints(run)] == [2]
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(run))["iteration"] == 2


def test_sigkill_while_writing_a_checkpoint_resumes_from_the_last_complete_one(
    phantom_dir, tmp_path
):
    # The trainer runs through a test-side wrapper whose torch.save stalls for 60 s after the
    # first 4096 bytes of the checkpoint of iteration 4.
    run = tmp_path / "run"
    wrapper = Path(__file__).with_name("pausing_trainer.py")
    cmd = [
        sys.executable,
        str(wrapper),
        "4",
        "60",
        "train",
        "--config",
        "tiny",
        "--data",
        str(phantom_dir),
        "--out",
        str(run),
        "--iterations",
        "6",
        "--no-progress",
    ]
    cfg_yaml = tmp_path / "tiny2.yaml"
    cfg_yaml.write_text(
        "base: tiny\ntrain: {checkpoint_every: 2, log_every: 1, "
        "sample_every: 100, keep_checkpoints: 10}\n"
    )
    cmd[cmd.index("tiny")] = str(cfg_yaml)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def partials() -> list[Path]:  # the atomic writer's hidden temporary file of iteration 4
        return list((run / "checkpoints").glob(".ckpt_0000004.pt.*.tmp"))

    deadline = time.time() + 120
    while not (partials() and partials()[0].stat().st_size >= 4096):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the checkpoint write never started"
        time.sleep(0.05)
    partial = partials()[0]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [i for i, _ in ckpt.list_checkpoints(run)] == [2]
    with pytest.raises(Exception):  # noqa: B017 - a half-written file does not load
        torch.load(partial, weights_only=False)
    # Resumed as the README says: the run folder alone, its config comes from there.
    done = subprocess.run(
        [sys.executable, "-m", "ratgan", "train", "--out", str(run), "--resume", "--no-progress"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert not partial.exists()
    assert [i for i, _ in ckpt.list_checkpoints(run)] == [2, 4, 6]
    assert [r["iteration"] for r in _metrics(run)] == [1, 2, 3, 4, 5, 6]


# --------------------------------------------------------------- recovery of failed starts


def _with_a_nan_scan(phantom_dir: Path, folder: Path) -> Path:
    """Three phantom scans and, sorted last, one whose voxels are all NaN."""
    folder.mkdir()
    for path in sorted((phantom_dir / "images").glob("*.nii.gz"))[:3]:
        shutil.copy(path, folder / path.name)
    img = nib.load(path)
    nan = np.full(img.shape, np.nan, np.float32)
    nib.save(nib.Nifti1Image(nan, img.affine), folder / "zz_nan.nii.gz")
    return folder


def test_a_run_whose_data_cannot_be_read_leaves_no_run_folder(phantom_dir, tmp_path, capsys):
    data = _with_a_nan_scan(phantom_dir, tmp_path / "data")
    run = tmp_path / "run"
    args = ["train", "--config", "tiny", "--data", str(data), "--out", str(run), "--no-progress"]
    assert main(args) == 2
    assert "zz_nan.nii.gz holds" in capsys.readouterr().err
    assert not run.exists()
    run.mkdir()  # a folder that existed before keeps what it held, and nothing more
    (run / "notes.txt").write_text("mine")
    assert main(args) == 2
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_a_run_failing_before_its_first_checkpoint_removes_what_it_wrote(
    phantom_dir, tmp_path, monkeypatch
):
    from ratgan.training import alphagan

    def broken(self, x1, x2):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(alphagan.AlphaGANStep, "__call__", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        train(_cfg(4), phantom_dir, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_run_that_wrote_a_checkpoint_is_kept_for_resume(phantom_dir, tmp_path, monkeypatch):
    from ratgan.training import alphagan

    real_call, calls = alphagan.AlphaGANStep.__call__, {"n": 0}

    def fails_at_three(self, x1, x2):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("interrupted")
        return real_call(self, x1, x2)

    monkeypatch.setattr(alphagan.AlphaGANStep, "__call__", fails_at_three)
    with pytest.raises(RuntimeError, match="interrupted"):
        train(_cfg(4), phantom_dir, tmp_path / "run", progress=False)
    assert [i for i, _ in ckpt.list_checkpoints(tmp_path / "run")] == [2]
    assert (tmp_path / "run" / "config.yaml").is_file() and (
        tmp_path / "run" / "data.json"
    ).is_file()


def test_resume_skips_an_unreadable_latest_checkpoint_and_says_so(phantom_dir, tmp_path, capsys):
    full = tmp_path / "full"
    train(_cfg(6), phantom_dir, full, progress=False)
    run = tmp_path / "run"
    train(_cfg(4), phantom_dir, run, progress=False)
    latest = ckpt.checkpoint_path(run, 4)
    with open(latest, "r+b") as handle:  # a checkpoint cut short, e.g. by a full disk
        handle.truncate(latest.stat().st_size // 2)
    capsys.readouterr()
    train(_cfg(6), None, run, resume=True, progress=False)
    err = capsys.readouterr().err
    assert f"checkpoint {latest} cannot be read" in err
    assert "resuming from ckpt_0000002.pt instead" in err
    # resumed from iteration 2, the run is the uninterrupted one
    a = ckpt.load_checkpoint(ckpt.checkpoint_path(full, 6))
    b = ckpt.load_checkpoint(ckpt.checkpoint_path(run, 6))
    for net in ("G", "E", "D", "C"):
        for key, value in a["networks"][net].items():
            assert torch.equal(value, b["networks"][net][key]), (net, key)
    assert [r["iteration"] for r in _metrics(run)] == [1, 2, 3, 4, 5, 6]


def test_resume_with_no_readable_checkpoint_names_every_file(phantom_dir, tmp_path):
    run = tmp_path / "run"
    train(_cfg(4), phantom_dir, run, progress=False)
    for _, path in ckpt.list_checkpoints(run):
        path.write_bytes(b"PK\x03\x04 cut")
    with pytest.raises(RatganError, match=r"no checkpoint of .* can be read: .*0004.*0002"):
        train(_cfg(6), None, run, resume=True, progress=False)


def test_logged_seconds_continue_across_a_resume(phantom_dir, tmp_path):
    run = tmp_path / "run"
    train(_cfg(4), phantom_dir, run, progress=False)
    before = _metrics(run)[-1]["seconds"]
    result = train(_cfg(6), None, run, resume=True, progress=False)
    seconds = [r["seconds"] for r in _metrics(run)]
    assert seconds == sorted(seconds) and seconds[4] >= before > 0
    assert result.seconds >= seconds[-1]


def test_a_stored_rng_state_restores_the_same_draws_as_a_cpu_uint8_tensor():
    # Resuming on a GPU loads the checkpoint there, RNG states included; every torch
    # generator's set_state takes only a CPU uint8 tensor (tests/training/test_gpu.py resumes a
    # CUDA run).  Known answer: the draws after restoring equal those after capturing.
    from ratgan.training import checkpoint as ckpt

    gen = torch.Generator().manual_seed(3)
    stored = gen.get_state().to(torch.int64)  # as a careless cast or device move might leave it
    expected = torch.rand(5, generator=gen)
    restored = ckpt.rng_state_tensor(stored)
    assert restored.device.type == "cpu" and restored.dtype == torch.uint8
    gen.set_state(restored)
    assert torch.equal(torch.rand(5, generator=gen), expected)


def _killed_before_its_first_checkpoint(phantom_dir: Path, run: Path) -> None:
    """What a run SIGKILLed before its first checkpoint leaves: config, data record, four
    metrics lines, the montages of iterations 2 and 4 and a best.pt of iteration 4 (written by
    an evaluation), but no ckpt_*.pt."""
    train(_cfg(4, **{"train.checkpoint_every": 4, "train.sample_every": 2}), phantom_dir, run,
          progress=False)  # fmt: skip
    ckpt.checkpoint_path(run, 4).rename(run / "checkpoints" / "best.pt")
    assert not ckpt.list_checkpoints(run)


def test_a_new_run_refuses_a_folder_left_by_a_run_killed_before_its_first_checkpoint(
    phantom_dir, tmp_path
):
    run = tmp_path / "run"
    _killed_before_its_first_checkpoint(phantom_dir, run)
    (run / "notes.txt").write_text("mine")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(RatganError, match=r"earlier run .*metrics.jsonl.*--resume.*another --out"):
        train(_cfg(2), phantom_dir, run, progress=False)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_resume_without_a_checkpoint_starts_again_without_the_dead_runs_files(
    phantom_dir, tmp_path, capsys
):
    run = tmp_path / "run"
    _killed_before_its_first_checkpoint(phantom_dir, run)
    capsys.readouterr()
    train(_cfg(2), None, run, resume=True, progress=False)
    assert "holds no checkpoint yet; starting from iteration 0" in capsys.readouterr().err
    assert [r["iteration"] for r in _metrics(run)] == [1, 2]
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["iter_0000002.png"]
    with pytest.raises(RatganError, match="has no best.pt"):  # `generate --checkpoint best`
        ckpt.resolve_checkpoint(run, "best")


def test_augmentation_strengths_that_blank_volumes_are_refused_at_start(phantom_dir, tmp_path):
    cfg = load_config("tiny", {"augment.intensity_factor": 10.0, "train.iterations": 2})
    with pytest.raises(RatganError, match=r"augment.intensity_factor must be in \[0, 1\)"):
        train(cfg, phantom_dir, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
