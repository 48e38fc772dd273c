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
