"""Fixtures for training tests: a small phantom cohort shared by the module."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """Six phantom subjects (64x64x40 with labels), written once per test session."""
    from ratgan.data.phantom import write_cohort

    out = tmp_path_factory.mktemp("phantom")
    write_cohort(out, subjects=6, seed=123, progress=False)
    return out


@pytest.fixture
def ema_run(phantom_dir, tmp_path):
    """A tiny run of 4 iterations with an EMA of G and checkpoints at 2 and 4."""
    from ratgan.config import load_config
    from ratgan.training.run import train

    cfg = load_config(
        "tiny",
        {
            "train.iterations": 4,
            "train.checkpoint_every": 2,
            "train.keep_checkpoints": 10,
            "train.ema_half_life_images": 64.0,
        },
    )
    run = tmp_path / "source"
    train(cfg, phantom_dir, run, progress=False)
    return run
