"""Augmentation geometry against scipy.ndimage and hand-worked answers (docs/method.md section 1):
rotation in radians about the volume centre and about the named voxel axis, zoom enlarging the
content, translation in whole voxels, -1 / 0 outside the field of view, on a non-cubic grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from ratgan.config import AugmentConfig
from ratgan.data.augment import FLIP, NOISE, ROTATE, TRANSLATE, ZOOM, AugmentParams, BatchAugmenter

SHAPE = (20, 22, 12)  # anisotropic on purpose: the geometry is in voxels of each axis


def _augment(
    vol: np.ndarray,
    labels: np.ndarray | None = None,
    angles: tuple[float, float, float] = (0.0, 0.0, 0.0),
    zoom: float = 1.0,
    shift: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray | None]:
    """One volume through the public call, with these parameters instead of random ones."""
    apply = np.zeros((1, 6), dtype=bool)
    apply[0, ROTATE], apply[0, ZOOM], apply[0, TRANSLATE] = any(angles), zoom != 1.0, any(shift)
    assert not apply[0, [FLIP, NOISE]].any()
    params = AugmentParams(
        apply, np.array([angles]), np.zeros(1), np.array([zoom]), np.array([shift]), 0
    )
    aug = BatchAugmenter(AugmentConfig(), seed=0)
    aug.sample_params = lambda batch: params  # type: ignore[method-assign]
    lab = None if labels is None else torch.from_numpy(labels)[None, None]
    out, out_lab = aug(torch.from_numpy(vol)[None, None], lab)
    return out[0, 0].numpy(), None if out_lab is None else out_lab[0, 0].numpy()


def _smooth_volume() -> np.ndarray:
    vol = ndimage.gaussian_filter(np.random.default_rng(0).uniform(-1, 1, SHAPE), 2)
    return (vol / np.abs(vol).max() * 0.9).astype(np.float32)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_rotation_is_in_radians_about_the_centre_and_the_named_axis(axis):
    vol = _smooth_volume()
    angle = 0.3  # radians
    angles = [0.0, 0.0, 0.0]
    angles[axis] = angle
    out, _ = _augment(vol, angles=(angles[0], angles[1], angles[2]))
    plane = tuple(a for a in range(3) if a != axis)
    # scipy turns the plane of the two other axes about the centre of the array; the range is
    # symmetric, so either sense is the documented transform
    err = min(
        np.abs(
            ndimage.rotate(
                vol,
                s * np.degrees(angle),
                plane,
                reshape=False,
                order=1,
                mode="grid-constant",
                cval=-1.0,
            )
            - out
        ).max()
        for s in (1, -1)
    )
    assert err < 1e-4


def test_a_quarter_turn_moves_a_voxel_about_the_centre():
    vol = -np.ones((33, 33, 21), np.float32)
    vol[16 + 5, 16, 10] = 1.0  # 5 voxels from the centre along axis 0
    out, _ = _augment(vol, angles=(0.0, 0.0, np.pi / 2))
    assert np.argwhere(out > 0.5).tolist() in ([[16, 11, 10]], [[16, 21, 10]])


def test_zoom_enlarges_with_nearest_sampling():
    vol = -np.ones((33, 33, 21), np.float32)
    vol[16 + 8, 16, 10] = 1.0
    labels = np.zeros(vol.shape, np.int64)
    labels[16 + 8, 16, 10] = 3
    out, out_lab = _augment(vol, labels, zoom=1.25)
    assert np.argwhere(out > 0.5).tolist() == [[26, 16, 10]]  # 8 voxels out -> 10
    assert set(np.unique(out).tolist()) <= {-1.0, 1.0}  # nearest: no blended values
    assert out_lab is not None and np.argwhere(out_lab == 3).tolist() == [[26, 16, 10]]


def test_translation_in_whole_voxels_fills_background():
    vol = _smooth_volume()
    labels = np.full(SHAPE, 2, np.int64)
    out, out_lab = _augment(vol, labels, shift=(2.0, -3.0, 1.0))
    # content moves by minus the drawn shift (the sign is free: the range is symmetric)
    ref = ndimage.shift(vol, (-2.0, 3.0, -1.0), order=1, mode="grid-constant", cval=-1.0)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert out_lab is not None
    assert (
        np.all(out_lab[-2:] == 0) and np.all(out_lab[:, :3] == 0) and np.all(out_lab[..., -1:] == 0)
    )
    assert np.all(out_lab[:-2, 3:, :-1] == 2)
