"""Helpers for the data-layer tests: small random NIfTI files written with nibabel directly."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

# an oblique, anisotropic, translated voxel-to-world matrix (sheared a little)
AFFINE = np.array(
    [
        [0.375, 0.01, 0.0, -12.0],
        [0.0, -0.37, 0.02, 8.5],
        [0.015, 0.0, 0.5, -4.25],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def save(
    path: Path,
    data: np.ndarray,
    affine: np.ndarray = AFFINE,
    dtype=np.float32,
    slope: float | None = None,
    inter: float = 0.0,
    qcode: int = 1,
    scode: int = 2,
) -> Path:
    """Write ``data`` (already in ``dtype``'s stored values) with explicit header fields."""
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    img.header.set_data_dtype(dtype)
    img.set_qform(affine, code=qcode)
    img.set_sform(affine, code=scode)
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def random_scan(rng: np.random.Generator, shape=(20, 24, 12)) -> np.ndarray:
    """Non-negative magnitude-like intensities."""
    return rng.gamma(2.0, 150.0, size=shape).astype(np.float32)


def blob_labels(rng: np.random.Generator, shape=(20, 24, 12)) -> np.ndarray:
    """A label map with large blocks of classes 0-3 (so that nearest sampling is meaningful)."""
    coarse = rng.integers(0, 4, size=tuple(-(-s // 4) for s in shape))
    full = coarse.repeat(4, 0).repeat(4, 1).repeat(4, 2)
    return full[: shape[0], : shape[1], : shape[2]].astype(np.int16)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded numpy generator."""
    return np.random.default_rng(1234)


@pytest.fixture
def h() -> SimpleNamespace:
    """The helpers above (test files cannot import conftest under --import-mode=importlib)."""
    return SimpleNamespace(
        AFFINE=AFFINE, save=save, random_scan=random_scan, blob_labels=blob_labels
    )
