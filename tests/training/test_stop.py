"""Ctrl-C or SIGTERM during training: finish the iteration, save a checkpoint, say how to resume.

Known answer: a run stopped by a signal at iteration 3 (between regular checkpoints) and
resumed ends with the same weights as the uninterrupted run; before this, the signal lost
everything after the last regular checkpoint.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ratgan.config import load_config
from ratgan.training import checkpoint as ckpt
from ratgan.training.ldm import train_ldm
from ratgan.training.run import train
from ratgan.training.stop import StopRequest, TrainingStopped


@pytest.fixture(autouse=True)
def _ctrl_c_as_in_a_terminal():
    """SIGINT with Python's default handler, as in a terminal: a suite started in the
    background by a non-interactive shell inherits SIGINT ignored, which StopRequest keeps
    ignored on purpose (test_an_ignored_signal_stays_ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _default_sigint() -> None:
    """A child process's SIGINT back to the default (Popen keeps an inherited SIG_IGN)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _gan_cfg(iterations: int):
    return load_config(
        "tiny",
        {
            "train.iterations": iterations,
            "train.log_every": 1,
            "train.checkpoint_every": 4,
            "train.sample_every": 100,
            "train.keep_checkpoints": 10,
        },
    )


def _signal_on_call(monkeypatch, owner: type, method: str, n: int, sig: int) -> None:
    """Make the ``n``-th call of ``owner.method`` send ``sig`` to this process mid-iteration."""
    real = getattr(owner, method)
    calls = {"n": 0}

    def wrapped(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), sig)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(owner, method, wrapped)


def _same_networks(a: Path, b: Path) -> None:
    sa, sb = ckpt.load_checkpoint(a), ckpt.load_checkpoint(b)
    for net, weights in sa["networks"].items():
        for key, value in weights.items():
            assert torch.equal(value, sb["networks"][net][key]), (net, key)


def test_sigterm_saves_the_iteration_and_the_resumed_run_equals_an_uninterrupted_one(
    phantom_dir, tmp_path, monkeypatch
):
    from ratgan.training import alphagan

    full = tmp_path / "full"
    train(_gan_cfg(6), phantom_dir, full, progress=False)

    def unhandled(signum, frame):  # what SIGTERM does if training does not take it over
        raise RuntimeError("SIGTERM reached the default handler: the run was killed")

    run = tmp_path / "run"
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        with monkeypatch.context() as patch:
            _signal_on_call(patch, alphagan.AlphaGANStep, "__call__", 3, signal.SIGTERM)
            with pytest.raises(TrainingStopped, match=r"SIGTERM after iteration 3.*--resume"):
                train(_gan_cfg(6), phantom_dir, run, progress=False)
        assert signal.getsignal(signal.SIGTERM) is unhandled  # the handler is given back
    finally:
        signal.signal(signal.SIGTERM, previous)
    # No regular checkpoint was due before 4: the stop wrote iteration 3.
    assert [i for i, _ in ckpt.list_checkpoints(run)] == [3]

    train(_gan_cfg(6), None, run, resume=True, progress=False)
    _same_networks(ckpt.checkpoint_path(full, 6), ckpt.checkpoint_path(run, 6))
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5, 6]


def test_a_stopped_latent_diffusion_run_resumes_to_the_same_weights(
    phantom_dir, tmp_path, monkeypatch
):
    from ratgan.training.ldm import LDMTrainer

    def cfg():
        return load_config(
            "ldm-tiny",
            {"train.iterations": 6, "train.keep_checkpoints": 10, "train.sample_every": 100},
        )

    full = tmp_path / "full"
    train_ldm(cfg(), phantom_dir, full, progress=False)
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        # ldm-tiny's autoencoder stage is 2 iterations: the 3rd step is the diffusion's first.
        _signal_on_call(patch, LDMTrainer, "diffusion_step", 1, signal.SIGINT)
        with pytest.raises(TrainingStopped, match="SIGINT after iteration 3"):
            train_ldm(cfg(), phantom_dir, run, progress=False)
    assert 3 in [i for i, _ in ckpt.list_checkpoints(run)]
    train_ldm(cfg(), None, run, resume=True, progress=False)
    _same_networks(ckpt.checkpoint_path(full, 6), ckpt.checkpoint_path(run, 6))


def test_a_second_ctrl_c_interrupts_at_once():
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs before this returns
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_on_the_command_line_exits_130_with_a_resumable_checkpoint(phantom_dir, tmp_path):
    run = tmp_path / "run"
    cfg_yaml = tmp_path / "slow.yaml"
    cfg_yaml.write_text(
        "base: tiny\ntrain: {iterations: 100000, checkpoint_every: 100000, log_every: 1, "
        "sample_every: 100000}\n"
    )
    cmd = [sys.executable, "-m", "ratgan", "train", "--config", str(cfg_yaml)]
    cmd += ["--data", str(phantom_dir), "--out", str(run), "--no-progress"]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    try:  # a failed check must not leave a 100,000-iteration training running
        metrics = run / "metrics.jsonl"
        deadline = time.time() + 120
        while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "training never logged"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "stopped by SIGINT" in err and "--resume" in err and "error" not in err
    last_logged = json.loads(metrics.read_text().splitlines()[-1])["iteration"]
    assert [i for i, _ in ckpt.list_checkpoints(run)] == [last_logged]


def test_an_ignored_signal_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopRequest() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            assert not stop.requested
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
