"""Tiny labelled cohorts (16x16x8) written as NIfTI files for the segmentation tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHAPE = (16, 16, 8)
AFFINE = np.diag([0.375, 0.375, 0.5, 1.0])


def tiny_subject(rng: np.random.Generator, shape=SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """A scan and its label map: an ellipsoid brain (GM shell, WM core, CSF centre)."""
    grid = np.stack(np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in shape], indexing="ij"))
    radii = np.array([s * 0.36 for s in shape]) * rng.uniform(0.9, 1.1, 3)
    r = np.sqrt(((grid / radii[:, None, None, None]) ** 2).sum(0))
    labels = np.zeros(shape, np.int64)
    labels[r < 1.0] = 1
    labels[r < 0.65] = 2
    labels[r < 0.3] = 3
    means = np.array([0.05, 0.6, 0.4, 0.95])
    image = means[labels] + rng.normal(0, 0.03, shape)
    return (100 * image).astype(np.float32), labels


def write_cohort(
    folder: Path,
    n: int,
    seed: int,
    layout: str = "images",
    with_labels: bool = True,
    prefix: str = "sub",
    shape=SHAPE,
) -> Path:
    """``layout='images'``: folder/images + folder/labels; ``'flat'``: scans in folder and
    label maps in folder/labels (what `ratgan generate` writes for a joint model)."""
    from ratgan.data.io import write_nifti

    rng = np.random.default_rng(seed)
    img_dir = folder / "images" if layout == "images" else folder
    for i in range(n):
        image, labels = tiny_subject(rng, shape)
        name = f"{prefix}-{i:03d}.nii.gz"
        write_nifti(img_dir / name, image, AFFINE)
        if with_labels:
            write_nifti(folder / "labels" / name, labels.astype(np.uint8), AFFINE, dtype=np.uint8)
    return folder


@pytest.fixture
def tiny_real(tmp_path: Path) -> Path:
    return write_cohort(tmp_path / "real", 12, seed=0)


@pytest.fixture
def tiny_synthetic(tmp_path: Path) -> Path:
    return write_cohort(tmp_path / "synthetic", 12, seed=1, layout="flat", prefix="synthetic")


@pytest.fixture
def subject_maker():
    """``tiny_subject`` for tests that build label maps in memory."""
    return tiny_subject


@pytest.fixture
def cohort_writer():
    """``write_cohort`` for tests that write their own folders."""
    return write_cohort
