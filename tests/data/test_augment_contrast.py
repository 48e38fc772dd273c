"""benchmarks/augment_contrast.py: the conventional augmentation's effect on tissue contrast,
against what interpolation does to structures of known thickness."""

import dataclasses

import pytest
import torch

from ratgan.config import load_config


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("augment_contrast")


def _slabs(thickness: int, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` 32 x 32 x 16 volumes (each draws its own shift): GM (0.0) with CSF (1.0) slabs
    of ``thickness`` voxels across x every 8 voxels, and a WM block (-0.5); the label maps
    say which is which."""
    image = torch.zeros(n, 1, 32, 32, 16)
    labels = torch.ones(n, 1, 32, 32, 16, dtype=torch.int64)
    for x0 in range(4, 28, 8):
        image[:, :, x0 : x0 + thickness, 4:24] = 1.0
        labels[:, :, x0 : x0 + thickness, 4:24] = 3
    image[:, :, :, 24:] = -0.5
    labels[:, :, :, 24:] = 2
    return image, labels


def test_translation_dims_one_voxel_slabs_and_not_thick_ones(bench):
    # a slab shifted by a fraction f of a voxel: each of its two edges keeps 1 - f or f of the
    # contrast in the voxel labelled CSF (the label moves by nearest neighbour), max(f, 1 - f)
    # for a one-voxel slab: on average over f ~ U(0, 1), 3/4 of it for a one-voxel slab and
    # 1 - 1/(2 * 6) for a six-voxel one (up to the change of the brain's std, a few per cent)
    augment = load_config("long").augment
    thin = bench.contrast_shares(*_slabs(1), augment, draws=1, seed=0)["translate"]["CSF-GM"]
    thick = bench.contrast_shares(*_slabs(6), augment, draws=1, seed=0)["translate"]["CSF-GM"]
    assert thin == pytest.approx(0.75, abs=0.06)
    assert thick == pytest.approx(1 - 1 / 12, abs=0.04)


def test_no_augmentation_keeps_every_contrast(bench):
    augment = dataclasses.replace(load_config("long").augment, mode="none")
    shares = bench.contrast_shares(*_slabs(1), augment, draws=2, seed=0)
    assert shares["preset"] == {"CSF-GM": 1.0, "GM-WM": 1.0}


def test_command_on_a_phantom_cohort(bench, tmp_path, capsys):
    from ratgan.data.phantom import write_cohort

    write_cohort(tmp_path / "real", subjects=2, seed=3, progress=False)
    shares = bench.main(["--real", str(tmp_path / "real"), "--draws", "1"])
    assert set(shares) == {"translate", "rotate", "zoom", "preset"}
    assert 0.3 < shares["translate"]["CSF-GM"] < 1.0  # the phantom's CSF is mostly one voxel thin
    assert "share of the unaugmented" in capsys.readouterr().out
