"""Labels for synthetic scans from a teacher: a U-Net trained on the real labelled scans.

This replaces the authors' SPM12 step for models that generate scans only.  The teacher sees
the real training split only (validation split for early stopping), never a test scan, so
that no test-scan information reaches the benchmark through the synthetic labels.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ratgan.segmentation.data import Box, SegSet, crop, downsample_images, downsample_labels
from ratgan.segmentation.train import (
    TrainResult,
    TrainSettings,
    load_model,
    save_model,
    train_segmenter,
)
from ratgan.segmentation.unet import SegUNet, UNetConfig


def train_teacher(
    train: SegSet,
    val: SegSet,
    net: UNetConfig,
    settings: TrainSettings,
    downsample: int = 1,
    box: Box | None = None,
    seed: int = 0,
    progress: bool = False,
) -> TrainResult:
    """Train the teacher on full-resolution real scans (cropped to ``box``, pooled by
    ``downsample``)."""

    def prep(s: SegSet) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            downsample_images(crop(s.images, box), downsample),
            downsample_labels(crop(s.label_maps(), box), downsample),
        )

    return train_segmenter(
        *prep(train), *prep(val), net, settings, seed=seed, progress=progress, desc="teacher"
    )


def cached_teacher(
    path: Path,
    train: SegSet,
    val: SegSet,
    net: UNetConfig,
    settings: TrainSettings,
    downsample: int = 1,
    box: Box | None = None,
    seed: int = 0,
    progress: bool = False,
) -> SegUNet:
    """The teacher saved at ``path``, trained and saved first when it is not there."""
    path = Path(path)
    if path.is_file():
        return load_model(path, settings.device)[0]
    result = train_teacher(train, val, net, settings, downsample, box, seed, progress)
    save_model(
        path,
        result,
        {
            "train": train.names,
            "val": val.names,
            "box": None if box is None else [list(b) for b in box],
        },
    )
    return result.model
