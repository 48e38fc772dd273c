"""model.volume_depth: networks for volumes whose slice axis is shorter than the other two."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from ratgan.config import load_config
from ratgan.data.dataset import load_cohort
from ratgan.errors import RatganError
from ratgan.models import build_networks

TINY = {"latent_dim": 8, "g_width": 16, "d_width": 16, "e_width": 16, "c_hidden": 32}


def _model(depth: int | None, size: int = 16, **extra):
    cfg = load_config("sigmarat2").model
    return dataclasses.replace(cfg, volume_size=size, volume_depth=depth, **TINY, **extra)


@pytest.mark.parametrize(("size", "depth"), [(16, 12), (16, 4), (32, 24), (64, 48)])
def test_the_networks_map_codes_to_volumes_of_the_given_depth_and_back(size, depth):
    cfg = _model(depth, size, d_mbstd_group=2)
    nets = build_networks(cfg)
    z = torch.randn(2, cfg.latent_dim)
    x = nets.generator(z)
    assert x.shape == (2, 1, size, size, depth)
    assert nets.discriminator(x).shape == (2,)
    assert nets.encoder(x).shape == (2, cfg.latent_dim)


def test_a_cube_builds_the_published_layers_whether_or_not_its_depth_is_given():
    """volume_depth equal to volume_size (or None) keeps the paper's kernel of 4: checkpoints
    of the paper presets load unchanged."""
    shapes = [
        {k: tuple(v.shape) for k, v in build_networks(_model(d)).generator.state_dict().items()}
        for d in (None, 16)
    ]
    assert shapes[0] == shapes[1]
    nets = build_networks(_model(None))
    assert nets.generator.net.stem[0].kernel_size == (4, 4, 4)
    assert nets.discriminator.net.head.kernel_size == (4, 4, 4)


@pytest.mark.parametrize("net", ["discriminator", "encoder"])
def test_every_voxel_of_a_shallow_volume_reaches_the_score_and_the_code(net):
    """The head's kernel covers the coarsest map exactly: no slice is outside the receptive
    field, the first and last slices included (a kernel of 4 on a depth-3 map would not run;
    one of 2 would drop a slice of it)."""
    cfg = _model(12)
    module = getattr(build_networks(cfg), net).eval()
    x = torch.randn(2, 1, 16, 16, 12, requires_grad=True)
    module(x).sum().backward()
    assert x.grad is not None
    per_slice = x.grad.abs().sum(dim=(0, 1, 2, 3))
    assert (per_slice > 0).all(), per_slice


def test_the_stem_and_the_head_are_fully_connected_on_the_coarsest_map():
    """Known answer: G's stem on a 1^3 code is a linear map to (width, 4, 4, depth / 2**k), and
    D's head on that map is a linear map of its flattened features."""
    cfg = _model(12)
    nets = build_networks(cfg)
    stem = nets.generator.net.stem[0]
    z = torch.randn(3, cfg.latent_dim)
    out = stem(z.reshape(3, cfg.latent_dim, 1, 1, 1))
    w = stem.weight  # (L, width, 4, 4, 3)
    assert out.shape[2:] == (4, 4, 3)
    torch.testing.assert_close(out, torch.einsum("bl,lcxyz->bcxyz", z, w))
    head = nets.discriminator.net.head
    feats = torch.randn(3, head.in_channels, 4, 4, 3)
    expected = feats.flatten(1) @ head.weight.flatten(1).T + head.bias
    torch.testing.assert_close(head(feats).flatten(1), expected)


@pytest.mark.parametrize("depth", [40, 8, 0])
def test_a_depth_that_the_blocks_cannot_halve_is_a_clear_error(depth):
    with pytest.raises(RatganError, match="model.volume_depth must be a positive multiple of 16"):
        load_config("demo", {"model.volume_depth": depth, "data.target_shape": [64, 64, depth]})


def test_the_data_shape_must_match_the_depth():
    with pytest.raises(RatganError, match=r"\[64, 64, 64\] must equal the model's volume"):
        load_config("sigmarat2", {"model.volume_depth": 48})
    with pytest.raises(RatganError, match=r"\[64, 64, 48\] must equal model.volume_size 64"):
        load_config("demo", {"model.volume_depth": None})


def _save(path, shape, seed):
    import nibabel as nib

    data = np.random.default_rng(seed).random(shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)


def test_cutting_slices_off_the_scans_is_warned_and_padding_is_not(tmp_path, caplog):
    big, small = tmp_path / "big", tmp_path / "small"
    big.mkdir()
    small.mkdir()
    for i in range(2):
        _save(big / f"s{i}.nii.gz", (8, 8, 12), i)
        _save(small / f"s{i}.nii.gz", (8, 8, 6), i)
    cfg = load_config("tiny").data
    cfg = dataclasses.replace(cfg, target_shape=(8, 8, 8), downsample=1)
    with caplog.at_level(logging.WARNING, logger="ratgan.data.dataset"):
        load_cohort(small, cfg, progress=False)
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="ratgan.data.dataset"):
        load_cohort(big, cfg, progress=False)
    (record,) = caplog.records
    assert "s0.nii.gz" in record.getMessage()
    assert "8x8x12" in record.getMessage() and "4 slices off axis 2" in record.getMessage()
