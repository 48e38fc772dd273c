"""Dice scores and the training loss of the segmentation benchmark.

Per-class Dice comes from MONAI's ``DiceMetric``.  The paper's "global Dice" (Table 4) is not
the mean of the three class scores (0.8969 vs a class mean of 0.8606 for test 1); it is read
here as the voxel-weighted (micro-averaged) Dice over the three tissue classes,
2 * sum_c |P_c & T_c| / sum_c (|P_c| + |T_c|), which is computed by hand from the counts
because MONAI has no micro-averaged multi-class Dice.  The class mean and a whole-brain Dice
(any tissue vs background) are reported as well.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.losses import DiceCELoss, DiceLoss
from monai.metrics import DiceMetric

from ratgan.segmentation.unet import NUM_CLASSES

TISSUES = ("GM", "WM", "CSF")
"""Foreground classes 1, 2, 3 of a label map (0 is background)."""
SCORES = ("global", "GM", "WM", "CSF", "mean", "brain")
"""Names of the scores of :func:`dice_scores`, table order first."""


def _as_index(t: torch.Tensor | np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(t) if isinstance(t, np.ndarray) else t)
    if t.ndim == 3:
        t = t[None, None]
    elif t.ndim == 4:
        t = t[:, None]
    return t.long()


def dice_scores(
    pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray
) -> dict[str, np.ndarray]:
    """Dice of each scan: ``{score: array (N,)}`` for label maps (N, [1,] X, Y, Z) or (X, Y, Z).

    A tissue's score is NaN wherever the target lacks that tissue, even if the prediction
    has some (MONAI's ``ignore_empty``): such false positives count in the global score only.
    The NaN falls on the same scans for every seed, so paired comparisons drop those scans
    from both sides.
    """
    p, t = _as_index(pred), _as_index(target)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {tuple(p.shape)} != target shape {tuple(t.shape)}")
    metric = DiceMetric(include_background=False, reduction="none", num_classes=NUM_CLASSES)
    raw = metric(p, t)
    assert isinstance(raw, torch.Tensor), "DiceMetric gives one tensor for tensor inputs"
    per_class = raw.cpu().numpy().astype(np.float64)  # (N, 3)
    out = {name: per_class[:, i] for i, name in enumerate(TISSUES)}
    inter = np.zeros(p.shape[0])
    total = np.zeros(p.shape[0])
    for c in range(1, NUM_CLASSES):
        pc, tc = p == c, t == c
        inter += (pc & tc).flatten(1).sum(1).numpy()
        total += pc.flatten(1).sum(1).numpy() + tc.flatten(1).sum(1).numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        out["global"] = np.where(total > 0, 2 * inter / total, np.nan)
        pb, tb = p > 0, t > 0
        bi = (pb & tb).flatten(1).sum(1).numpy()
        bt = pb.flatten(1).sum(1).numpy() + tb.flatten(1).sum(1).numpy()
        out["brain"] = np.where(bt > 0, 2 * bi / bt, np.nan)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out["mean"] = np.nanmean(per_class, axis=1)
    return {k: out[k] for k in SCORES}


def summarize(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean over scans of each score (NaN scans ignored)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {k: float(np.nanmean(v)) for k, v in scores.items()}


def make_loss(kind: str = "dice") -> torch.nn.Module:
    """The training loss on logits (B, 4, ...) and index labels (B, 1, ...).

    ``dice``: the paper's multi-class soft Dice (all four classes, computed over the batch);
    ``dice_ce``: the same plus cross-entropy.
    """
    if kind == "dice":
        return DiceLoss(softmax=True, to_onehot_y=True, include_background=True, batch=True)
    if kind == "dice_ce":
        return DiceCELoss(softmax=True, to_onehot_y=True, include_background=True, batch=True)
    raise ValueError(f"unknown loss {kind!r} (dice or dice_ce)")
