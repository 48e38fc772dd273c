"""Cohorts in memory and the endless, resumable batch stream."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from ratgan.config import AugmentConfig, DataConfig
from ratgan.data.augment import BatchAugmenter
from ratgan.data.dataset import Cohort, EndlessBatches, load_cohort
from ratgan.errors import RatganError


def _write_cohort(root, rng, h, n=5, shape=(12, 12, 8), labels=True):
    for i in range(n):
        name = f"rat{i:02d}.nii.gz"
        h.save(root / "images" / name, h.random_scan(rng, shape) + i)
        if labels:
            h.save(root / "labels" / name, h.blob_labels(rng, shape), dtype=np.uint8)
    return root


def test_load_cohort_with_labels(tmp_path, rng, h):
    root = _write_cohort(tmp_path / "ds", rng, h)
    cfg = DataConfig(target_shape=(16, 16, 16))
    cohort = load_cohort(root, cfg, progress=False)
    assert len(cohort) == 5
    assert cohort.images.shape == (5, 1, 16, 16, 16) and cohort.images.dtype == torch.float32
    assert cohort.images.min() == -1 and cohort.images.max() == 1
    assert cohort.labels.shape == (5, 1, 16, 16, 16) and cohort.labels.dtype == torch.int64
    assert [e.image.name for e in cohort.entries] == [f"rat{i:02d}.nii.gz" for i in range(5)]
    assert all(info.source_shape == (12, 12, 8) for info in cohort.infos)
    # padding: 2 voxels each side in x/y, 4 in z, label 0 and intensity -1 there
    assert torch.all(cohort.labels[:, :, :, :, :4] == 0)
    assert torch.all(cohort.images[:, :, :2] == -1)

    small = load_cohort(root, DataConfig(target_shape=(8, 8, 8), downsample=2), progress=False)
    assert small.images.shape == (5, 1, 8, 8, 8) and small.infos[0].downsample == 2


def test_labels_all_or_none(tmp_path, rng, h, caplog):
    root = _write_cohort(tmp_path / "ds", rng, h, n=3)
    (root / "labels" / "rat01.nii.gz").unlink()
    cfg = DataConfig(target_shape=(16, 16, 16))
    with caplog.at_level(logging.WARNING):
        cohort = load_cohort(root, cfg, progress=False)
    assert cohort.labels is None and "2 of 3" in caplog.text
    with pytest.raises(RatganError, match="rat01"):
        load_cohort(root, cfg, require_labels=True, progress=False)


def _indexed_cohort(n: int) -> Cohort:
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1, 1).expand(n, 1, 2, 2, 2)
    labels = torch.arange(n).view(n, 1, 1, 1, 1).expand(n, 1, 2, 2, 2).clone()
    return Cohort(images=images.clone(), labels=labels, entries=[], infos=[])


def _ids(batch: torch.Tensor) -> list[int]:
    return batch[:, 0, 0, 0, 0].long().tolist()


@pytest.mark.parametrize("n, batch_size", [(10, 4), (7, 7), (3, 5)])
def test_each_scan_once_per_epoch(n, batch_size):
    stream = EndlessBatches(_indexed_cohort(n), batch_size, seed=0)
    epochs = 3 * batch_size  # a whole number of batches that is a whole number of epochs
    ids = [i for _ in range(epochs * n // batch_size) for i in _ids(next(stream)[0])]
    assert len(ids) == epochs * n
    for e in range(epochs):
        assert sorted(ids[e * n : (e + 1) * n]) == list(range(n))
    assert ids[:n] != ids[n : 2 * n] or n < 3  # a new permutation per epoch


def test_resume_yields_identical_batches():
    cohort = _indexed_cohort(9)
    cfg = AugmentConfig(mode="all", flip_prob=0.5, noise_prob=0.5, translate_prob=0.5)

    def make() -> EndlessBatches:
        return EndlessBatches(
            cohort, 4, seed=3, augmenter=BatchAugmenter(cfg, seed=8), with_labels=True
        )

    a = make()
    for _ in range(5):
        next(a)
    state = a.state_dict()
    expected = [next(a) for _ in range(6)]

    b = make()
    next(b)  # a different position, to be overwritten
    b.load_state_dict(state)
    for (xe, le), (xb, lb) in zip(expected, (next(b) for _ in range(6)), strict=True):
        assert torch.equal(xe, xb) and torch.equal(le, lb)


def test_same_seed_same_stream_and_without_labels():
    cohort = _indexed_cohort(6)
    a, b = EndlessBatches(cohort, 4, seed=1), EndlessBatches(cohort, 4, seed=1)
    for _ in range(4):
        (xa, la), (xb, _) = next(a), next(b)
        assert la is None and torch.equal(xa, xb)
    c = EndlessBatches(cohort, 4, seed=2)
    assert [_ids(next(c)[0]) for _ in range(3)] != [_ids(next(a)[0]) for _ in range(3)]


def test_stream_errors():
    cohort = _indexed_cohort(4)
    no_labels = Cohort(images=cohort.images, labels=None, entries=[], infos=[])
    with pytest.raises(RatganError, match="label"):
        EndlessBatches(no_labels, 2, seed=0, with_labels=True)
    state = EndlessBatches(cohort, 2, seed=0).state_dict()
    with pytest.raises(RatganError, match="4 scans"):
        EndlessBatches(_indexed_cohort(5), 2, seed=0).load_state_dict(state)


def test_4d_scans_averaged_into_a_cohort_are_warned_about_once(tmp_path, rng, h, caplog):
    h.save(tmp_path / "a.nii.gz", h.random_scan(rng, (8, 8, 6)))
    for name in ("b.nii.gz", "c.nii.gz"):
        h.save(tmp_path / name, rng.gamma(2.0, 150.0, size=(8, 8, 6, 3)))
    with caplog.at_level(logging.WARNING):
        load_cohort(tmp_path, DataConfig(target_shape=(8, 8, 8)), progress=False)
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "2 of 3 scans" in record.getMessage() and "b.nii.gz, 3 volumes" in record.getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        cfg = DataConfig(target_shape=(8, 8, 8), volume_index=0)
        load_cohort(tmp_path, cfg, progress=False)
    assert not caplog.records


def test_label_maps_named_after_no_scan_are_warned_about_once(tmp_path, rng, h, caplog):
    """Label maps whose file names match no scan (rat00_seg.nii.gz beside rat00.nii.gz) were
    left out without a word when the run needs no labels: the user never heard they were
    misnamed."""
    root = _write_cohort(tmp_path / "ds", rng, h, n=3, labels=False)
    for i in range(3):
        h.save(root / "labels" / f"rat{i:02d}_seg.nii.gz", h.blob_labels(rng, (12, 12, 8)))
    cfg = DataConfig(target_shape=(16, 16, 16))
    with caplog.at_level(logging.WARNING):
        cohort = load_cohort(root, cfg, progress=False)
    assert len(cohort) == 3 and cohort.labels is None  # read, not refused
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = record.getMessage()
    assert "holds 3 label maps named after no scan" in message
    assert "rat00_seg.nii.gz" in message
    assert str(root / "labels") in message
    # maps named after their scans (here all but one) say nothing of the kind
    for i in range(3):
        (root / "labels" / f"rat{i:02d}_seg.nii.gz").rename(root / "labels" / f"rat{i:02d}.nii.gz")
    (root / "labels" / "rat02.nii.gz").rename(root / "labels" / "rat2.nii.gz")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_cohort(root, cfg, progress=False)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 2 and "2 of 3 scans" in messages[0]  # the partial-labels warning
    assert "1 label map named" in messages[1] and "rat2.nii.gz" in messages[1]
    (root / "labels" / "rat2.nii.gz").unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_cohort(root, cfg, progress=False)
    assert "after no scan" not in caplog.text
