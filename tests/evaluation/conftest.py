"""Small synthetic 'brains' for evaluation tests: ellipsoids with inner structure and noise."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

SHAPE = (32, 32, 20)


def brains(n: int, seed: int, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """``n`` brain-like volumes in [0, 1]: a bright ellipsoid with a darker core, a few %
    size variation between subjects, and mild noise."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    out = np.empty((n, *shape), dtype=np.float32)
    for i in range(n):
        radii = np.array([0.65, 0.55, 0.7]) * (1 + 0.04 * rng.standard_normal(3))
        centre = 0.03 * rng.standard_normal(3)
        r = np.sqrt(
            (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0)
        )
        vol = np.clip(1.2 - r, 0, None) * (r < 1) * 0.8
        vol += 0.35 * (r < 0.45 * (1 + 0.05 * rng.standard_normal()))
        vol += 0.03 * rng.standard_normal(shape) * (r < 1)
        out[i] = np.clip(vol, 0, None)
    return out


def noise(n: int, seed: int, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """Independent uniform noise volumes."""
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def write_set(folder: Path, volumes: np.ndarray, prefix: str = "scan") -> Path:
    """Write volumes as NIfTI files with 0.375 x 0.375 x 0.5 mm voxels."""
    from ratgan.data.io import write_nifti

    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([0.375, 0.375, 0.5, 1.0])
    for i, v in enumerate(volumes):
        write_nifti(folder / f"{prefix}_{i:03d}.nii.gz", v * 1000.0, affine)
    return folder


@pytest.fixture
def tiny_sets(tmp_path) -> dict[str, Path]:
    """real (10), held-out real (6), noise (6) and a 64-slice-padded copy set, on disk."""
    return {
        "real": write_set(tmp_path / "real", brains(10, 1)),
        "heldout": write_set(tmp_path / "heldout", brains(6, 2)),
        "noise": write_set(tmp_path / "noise", noise(6, 3)),
        "tmp": tmp_path,
    }


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """The helpers above, for test modules (importlib mode cannot import conftest)."""
    return SimpleNamespace(brains=brains, noise=noise, write_set=write_set, shape=SHAPE)
