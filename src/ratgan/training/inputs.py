"""The networks' view of a batch of scans (shared by the training loop and generation)."""

from __future__ import annotations

import torch

from ratgan.config import Config
from ratgan.data.transforms import labels_to_channels


def model_input(images: torch.Tensor, labels: torch.Tensor | None, cfg: Config) -> torch.Tensor:
    """The network's view of a batch: the scan, plus GM/WM/CSF channels for joint generation."""
    if cfg.data.label_channels:
        assert labels is not None, "load_cohort(require_labels=True) gives every scan labels"
        images = torch.cat([images, labels_to_channels(labels).to(images.dtype)], dim=1)
    fmt = torch.channels_last_3d if cfg.train.channels_last else torch.contiguous_format
    return images.contiguous(memory_format=fmt)
