"""The benchmark's conventional augmentation mirrors the real scans' left-right axis."""

from __future__ import annotations

from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch

from ratgan.segmentation import runner

# voxel axis 0 runs to anterior, axis 1 to right, axis 2 to superior (stored "ARS")
ARS = np.array(
    [
        [0.0, 0.375, 0.0, -6.0],
        [0.375, 0.0, 0.0, -5.0],
        [0.0, 0.0, 0.5, -2.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


class _Captured(Exception):
    pass


def _augmenter_of_a_test(monkeypatch, affine: np.ndarray):
    """The augmenter that run_test hands to train_segmenter for a test with augmentation."""
    seen = {}

    def capture(*args, **kwargs):
        seen["augment"] = kwargs["augment"]
        raise _Captured

    monkeypatch.setattr(runner, "train_segmenter", capture)
    x = torch.zeros((2, 1, 6, 7, 8))
    y = torch.zeros((2, 1, 6, 7, 8), dtype=torch.int64)
    opt = SimpleNamespace(downsample=1, net=lambda box: None, settings=lambda: None, progress=False)
    state = SimpleNamespace(
        opt=opt, box=None, split=SimpleNamespace(val=[1]), real=SimpleNamespace(affines=[affine])
    )
    plan = SimpleNamespace(real=[0, 1], synthetic=[], augment=True, seed=0, number=10)
    with pytest.raises(_Captured):
        runner.run_test(state, (x, y), None, plan)  # type: ignore[arg-type]
    return seen["augment"]


def test_flips_mirror_the_left_right_axis_of_scans_stored_front_to_back(monkeypatch):
    # nibabel's own reading of the affine: which voxel axis runs along world x (left-right)
    assert nib.aff2axcodes(ARS) == ("A", "R", "S")
    world_axis = nib.orientations.io_orientation(ARS)[:, 0]
    left_right = int(np.flatnonzero(world_axis == 0)[0])
    assert left_right == 1

    augment = _augmenter_of_a_test(monkeypatch, ARS)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand((400, 1, 6, 7, 8), generator=gen) * 2 - 1
    out, _ = augment(images, torch.zeros_like(images, dtype=torch.int64))
    flips = [
        sum(torch.equal(o, x.flip(1 + axis)) for o, x in zip(out, images, strict=True))
        for axis in range(3)
    ]
    # samples whose only transform was the flip (p = 0.1, the others 0.9^5): about 24 of 400
    assert flips[left_right] > 5, flips
    assert flips[0] == 0 and flips[2] == 0, flips  # front-back (before: all of them) or up-down
