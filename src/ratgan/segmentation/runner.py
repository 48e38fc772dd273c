"""Training and scoring of the benchmark's test networks, one (test, seed) at a time."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from ratgan.segmentation.data import Box, SegSet, crop, downsample_images, downsample_labels
from ratgan.segmentation.metrics import dice_scores, summarize
from ratgan.segmentation.plan import PlannedTest
from ratgan.segmentation.train import segment, train_segmenter

from ratgan.segmentation.state import BenchState

if TYPE_CHECKING:
    from ratgan.data.augment import BatchAugmenter

Tensors = tuple[torch.Tensor, torch.Tensor]


def network_inputs(s: SegSet, box: Box | None, factor: int) -> Tensors:
    """Scans and label maps as the networks see them: cropped to ``box``, pooled."""
    return (
        downsample_images(crop(s.images, box), factor),
        downsample_labels(crop(s.label_maps(), box), factor),
    )


def conventional_augmenter(affine: np.ndarray | None, downsample: int, seed: int) -> BatchAugmenter:
    """The conventional augmentation of a benchmark test: the paper's settings, translations
    in voxels of the pooled grid, and the left-right flip on the voxel axis that runs left to
    right in the real scans stored with ``affine`` (no flips where no axis does; axis 0 where
    ``affine`` is None).  The scans are read in their stored voxel order, so a fixed axis 0
    would mirror scans stored front to back (ARS, PIR...) front to back."""
    from ratgan.config import AugmentConfig
    from ratgan.data.augment import BatchAugmenter
    from ratgan.data.io import orientation_code

    base = AugmentConfig()
    tx, ty, tz = base.translate_range
    tr = (tx / downsample, ty / downsample, tz / downsample)
    flip_axis, flip_prob = 0, base.flip_prob
    if affine is not None:
        code = orientation_code(affine)
        left_right = next((i for i, letter in enumerate(code) if letter in "LR"), None)
        if left_right is None:
            flip_prob = 0.0
        else:
            flip_axis = left_right
    cfg = AugmentConfig(mode="all", translate_range=tr, flip_axis=flip_axis, flip_prob=flip_prob)
    return BatchAugmenter(cfg, seed=seed)


def run_test(state: BenchState, real_lo: Tensors, pool_lo: Tensors | None, p: PlannedTest) -> dict:
    """Train the network of one (test, seed) and score it on the real test scans."""
    opt = state.opt
    xr, yr = real_lo
    parts_x = [xr[p.real]] if p.real else []
    parts_y = [yr[p.real]] if p.real else []
    if p.synthetic:
        assert pool_lo is not None
        xs, ys = pool_lo
        parts_x.append(xs[p.synthetic])
        parts_y.append(ys[p.synthetic])
    x, y = torch.cat(parts_x), torch.cat(parts_y)
    augment = None
    if p.augment:
        affine = state.real.affines[0] if state.real.affines else None
        augment = conventional_augmenter(affine, opt.downsample, 1000 * p.seed + p.number)
    res = train_segmenter(
        x,
        y,
        xr[state.split.val],
        yr[state.split.val],
        opt.net(state.box),
        opt.settings(),
        seed=1000 * p.seed + p.number,
        augment=augment,
        progress=opt.progress,
        desc=f"test {p.number} seed {p.seed}",
    )
    t = time.perf_counter()
    test = state.real.subset(state.split.test)
    pred = segment(res.model, test.images, state.box, opt.downsample, opt.precision, opt.batch_size)
    scores = dice_scores(pred, test.label_maps())
    return {
        "test": p.number,
        "seed": p.seed,
        "name": p.name,
        "paper": p.paper,
        "n_real": len(p.real),
        "n_synthetic": len(p.synthetic),
        "augment": p.augment,
        "scores": summarize(scores),
        "per_scan": {
            k: [None if np.isnan(v) else float(v) for v in vals] for k, vals in scores.items()
        },
        "epochs": res.epochs,
        "steps": res.steps,
        "best_epoch": res.best_epoch,
        "best_val_loss": res.best_val_loss,
        "train_seconds": round(res.seconds, 2),
        "seconds": round(res.seconds + time.perf_counter() - t, 2),
        "val_loss": [round(h["val_loss"], 5) for h in res.history],
    }
