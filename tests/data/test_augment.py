"""Batch augmentation: scan and labels share one geometry; seeded; probabilities respected."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ratgan.config import AugmentConfig
from ratgan.data.augment import TRANSFORMS, BatchAugmenter

CLASS_VALUES = torch.tensor([-1.0, -0.4, 0.3, 1.0])  # background must be -1 (the fill value)


def _labelled_batch(rng: np.random.Generator, batch: int = 4, size: int = 24):
    """Labels in blocks of 6 voxels and an image that is a fixed value per class."""
    coarse = rng.integers(0, 4, size=(batch, 1, size // 6, size // 6, size // 6))
    labels = torch.from_numpy(coarse.repeat(6, 2).repeat(6, 3).repeat(6, 4)).long()
    return CLASS_VALUES[labels], labels


def _classify(images: torch.Tensor) -> torch.Tensor:
    return (images[..., None] - CLASS_VALUES).abs().argmin(-1)


def _geometry_only(**kw) -> AugmentConfig:
    cfg = AugmentConfig(
        mode="all",
        rotate_prob=1.0,
        rotate_range=0.3,
        flip_prob=1.0,
        flip_axis=1,
        intensity_prob=0.0,
        zoom_prob=1.0,
        zoom_range=(1.05, 1.3),
        noise_prob=0.0,
        translate_prob=1.0,
        translate_range=(4.0, 3.0, 2.0),
    )
    return dataclasses.replace(cfg, **kw)


def _interior(labels: torch.Tensor) -> torch.Tensor:
    """Voxels whose 3x3x3 neighbourhood holds one label (away from class borders)."""
    f = labels.float()
    mx = torch.nn.functional.max_pool3d(f, 3, stride=1, padding=1)
    mn = -torch.nn.functional.max_pool3d(-f, 3, stride=1, padding=1)
    return mx == mn


@pytest.mark.parametrize("zoom_prob", [1.0, 0.0])
def test_labels_follow_the_image_geometry(rng, zoom_prob):
    images, labels = _labelled_batch(rng)
    aug = BatchAugmenter(_geometry_only(zoom_prob=zoom_prob), seed=3)
    out, out_labels = aug(images, labels)
    assert out.shape == images.shape and out_labels.shape == labels.shape
    assert out_labels.dtype == torch.int64
    assert not torch.equal(out_labels, labels)  # the geometry did change
    inside = _interior(out_labels)
    assert inside.float().mean() > 0.3
    # zoomed samples are sampled nearest for both; trilinear images blend only at borders
    agree = (_classify(out) == out_labels)[inside].float().mean().item()
    assert agree >= 0.999
    if zoom_prob == 1.0:
        assert (_classify(out) == out_labels).float().mean().item() >= 0.999
    # the same check is sensitive: labels from a different geometry disagree a lot
    _, other = BatchAugmenter(_geometry_only(zoom_prob=zoom_prob), seed=4)(images, labels)
    assert (_classify(out) == other)[_interior(other)].float().mean().item() < 0.75
    assert (_classify(out) == labels)[_interior(labels)].float().mean().item() < 0.75


def test_same_seed_same_output_and_state_resume(rng):
    images, labels = _labelled_batch(rng)
    cfg = dataclasses.replace(_geometry_only(), intensity_prob=0.5, noise_prob=0.5)
    a, b = BatchAugmenter(cfg, seed=11), BatchAugmenter(cfg, seed=11)
    for _ in range(2):
        (xa, la), (xb, lb) = a(images, labels), b(images, labels)
        assert torch.equal(xa, xb) and torch.equal(la, lb)
    xc, _ = BatchAugmenter(cfg, seed=12)(images, labels)
    assert not torch.equal(xa, xc)

    state = a.state_dict()
    first = a(images, labels)
    a(images, labels)
    a.load_state_dict(state)
    again = a(images, labels)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_flip_mode_only_flips(rng):
    images = torch.from_numpy(rng.uniform(-1, 1, size=(64, 1, 6, 7, 8)).astype(np.float32))
    cfg = _geometry_only(
        mode="flip", flip_prob=0.5, flip_axis=0, noise_prob=1.0, intensity_prob=1.0
    )
    out, none = BatchAugmenter(cfg, seed=0)(images)
    assert none is None
    flipped = 0
    for x, y in zip(images, out, strict=True):
        if torch.equal(x, y):
            continue
        assert torch.equal(y, x.flip(1))  # axis 0 of the volume = dim 1 of (C, X, Y, Z)
        flipped += 1
    assert 20 <= flipped <= 44


def test_none_mode_is_identity(rng):
    images, labels = _labelled_batch(rng)
    out, out_labels = BatchAugmenter(_geometry_only(mode="none"), seed=0)(images, labels)
    assert out is images and out_labels is labels


def test_probabilities_respected_over_many_draws():
    cfg = AugmentConfig(
        rotate_prob=0.1,
        flip_prob=0.2,
        intensity_prob=0.3,
        zoom_prob=0.05,
        noise_prob=0.5,
        translate_prob=0.0,
    )
    params = BatchAugmenter(cfg, seed=5).sample_params(20000)
    rates = params.apply.mean(axis=0)
    np.testing.assert_allclose(rates, [0.1, 0.2, 0.3, 0.05, 0.5, 0.0], atol=0.015)
    assert len(TRANSFORMS) == params.apply.shape[1]
    assert np.abs(params.angles).max() <= cfg.rotate_range
    assert params.zoom.min() >= 1.0 and params.zoom.max() <= 1.1
    assert np.all(np.abs(params.shift) <= np.array([4.0, 4.0, 0.0]))


def test_reference_settings_change_about_the_expected_share(rng):
    """With the paper's p=0.1 for six transforms, 1 - 0.9**6 ~ 47% of samples change."""
    images = torch.from_numpy(rng.uniform(-1, 1, size=(200, 1, 8, 8, 8)).astype(np.float32))
    out, _ = BatchAugmenter(AugmentConfig(), seed=1)(images)
    changed = (out != images).flatten(1).any(1).float().mean().item()
    assert 0.35 < changed < 0.6
    assert out.min() >= -1 and out.max() <= 1


def test_fill_outside_field_of_view(rng):
    images, labels = _labelled_batch(rng, batch=2)
    images = torch.full_like(images, 0.5)
    labels = torch.full_like(labels, 2)
    cfg = AugmentConfig(
        mode="all",
        rotate_prob=0,
        flip_prob=0,
        intensity_prob=0,
        zoom_prob=0,
        noise_prob=0,
        translate_prob=1.0,
        translate_range=(4.0, 4.0, 4.0),
    )
    aug = BatchAugmenter(cfg, seed=0)
    params_state = aug.state_dict()
    shift = aug.sample_params(2).shift
    aug.load_state_dict(params_state)
    out, out_labels = aug(images, labels)
    # the face the content moved away from is filled with background
    for b in range(2):
        s = shift[b, 0]
        edge = (slice(-1, None) if s > 0 else slice(0, 1)) if abs(s) >= 1 else None
        if edge is None:
            continue
        assert torch.all(out[b, :, edge] == -1.0)
        assert torch.all(out_labels[b, :, edge] == 0)


def test_intensity_and_noise_keep_background_and_dtype(rng):
    images = torch.full((3, 1, 8, 8, 8), -1.0, dtype=torch.bfloat16)
    images[:, :, 2:6, 2:6, 2:6] = 0.0
    cfg = AugmentConfig(
        mode="all",
        rotate_prob=0,
        flip_prob=0,
        intensity_prob=1.0,
        intensity_factor=0.5,
        zoom_prob=0,
        noise_prob=0,
        translate_prob=0,
    )
    out, _ = BatchAugmenter(cfg, seed=2)(images)
    assert out.dtype == torch.bfloat16 and out.shape == images.shape
    assert torch.all(out[images == -1] == -1)
    assert not torch.equal(out, images)
    cfg = dataclasses.replace(cfg, intensity_prob=0.0, noise_prob=1.0, noise_std=0.01)
    out, _ = BatchAugmenter(cfg, seed=2)(images.float() * 0.5)
    diff = out - images.float() * 0.5
    assert 0.005 < diff.std().item() < 0.02


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(rng):
    images, labels = _labelled_batch(rng)
    cfg = _geometry_only(zoom_prob=0.5)
    x_cpu, l_cpu = BatchAugmenter(cfg, seed=7)(images, labels)
    x_gpu, l_gpu = BatchAugmenter(cfg, seed=7)(images.cuda(), labels.cuda())
    assert x_gpu.is_cuda and l_gpu.is_cuda
    torch.testing.assert_close(x_gpu.cpu(), x_cpu, atol=1e-4, rtol=0)
    assert (l_gpu.cpu() == l_cpu).float().mean().item() > 0.999
