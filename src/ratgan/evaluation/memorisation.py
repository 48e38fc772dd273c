"""Is a synthetic scan a copy of a training scan?

**Similarity.** Global NCC alone misses copies that moved: on the built-in phantom cohort a
training scan shifted by one or two voxels keeps an NCC of only about 0.8 with its original,
below that of two *different* real subjects (about 0.9).  The similarity used here is
therefore shift-tolerant: the highest NCC over every integer shift of up to ``max_shift``
voxels per axis, between the query's shifted window and the training scan's centre (both
cropped by ``max_shift`` on every side).  NCC ignores intensity scale and offset, so scaled
copies score like exact ones.  Training flips scans left-right (``augment.flip_prob``), so a
generator can reproduce a training subject mirrored: each training scan's left-right mirror
image (axis 0 of the prepared, RAS-ordered volumes) counts as that scan too (``mirror``); a
mirrored copy otherwise passed as a new subject (4 of 24 phantom copies flagged).
``max_shift=0, mirror=False`` is the plain global NCC.

**Threshold.** Real rats resemble each other, so a high similarity means nothing alone; it is
compared with real scans that are *not* the scan itself: each real (training) scan's most
similar *other* real scan (leave-one-out).  The largest of those values (the first rule) is
an extreme value of a small sample and flagged 75 % of 12 never-seen real scans; the plug-in
upper 99 % quantile of a normal fitted to ``-log(1 - similarity)`` (the second) flagged 1.5 %
on average but more than 5 % in 7 % of random 24-scan training sets, because 24 values
estimate the tail poorly.  The threshold is now a **one-sided normal tolerance bound** on
that scale: mean + k sd with k from the noncentral t distribution, so that with
``confidence`` (default 95 %) at most ``false_positive_rate`` (default 1 %) of never-seen
real scans exceed it (k = 3.18, 3.03, 2.79 for 24, 32, 64 reference scans, against the
plug-in 2.33).  The rate it promises is checked on scans it was not fitted on: held-out real
scans when the evaluation has them, never-seen phantom subjects in the tests and in
benchmarks/memorisation_phantom.py (docs/evaluation.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_MAX_SHIFT = 2
DEFAULT_MIRROR = True
DEFAULT_FALSE_POSITIVE_RATE = 0.01
DEFAULT_CONFIDENCE = 0.95


def _normalised(volumes: np.ndarray, batch: int = 64) -> torch.Tensor:
    """Each volume centred and scaled to unit norm (rows), so that dot products are NCCs."""
    flat = volumes.reshape(len(volumes), -1)
    out = torch.empty(flat.shape, dtype=torch.float32)
    for s in range(0, len(volumes), batch):
        v = torch.from_numpy(np.ascontiguousarray(flat[s : s + batch])).double()
        v = v - v.mean(1, keepdim=True)
        n = v.norm(dim=1, keepdim=True)
        out[s : s + batch] = torch.where(n > 0, v / n.clamp_min(1e-300), v).float()
    return out


def ncc_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Global NCC between every volume of ``a`` (n, ...) and of ``b`` (m, ...): (n, m)."""
    return (_normalised(a) @ _normalised(b).T).double().numpy()


def similarity_matrix(
    query: np.ndarray,
    train: np.ndarray,
    max_shift: int = DEFAULT_MAX_SHIFT,
    batch: int = 8,
    mirror: bool = DEFAULT_MIRROR,
) -> np.ndarray:
    """Shift-tolerant NCC between every query volume and every training volume: (n, m).

    Entry (i, j) is the highest NCC between training scan j's centre (cropped by
    ``max_shift`` voxels on each side) and query i's window shifted by up to ``max_shift``
    voxels on each axis; with ``mirror``, the higher of that and the same for training scan
    j's left-right mirror image (reversed axis 0).  ``max_shift=0, mirror=False`` gives the
    plain global NCC.

    One ``conv3d`` with the centred, unit-norm training centres as kernels gives every
    window's dot product with every centre; since a centred kernel sums to zero, dividing by
    the window's centred norm (from running sums of q and q^2, in float64) gives the NCC.
    """
    if mirror:
        flipped = np.ascontiguousarray(train[:, ::-1])
        return np.maximum(
            similarity_matrix(query, train, max_shift, batch, mirror=False),
            similarity_matrix(query, flipped, max_shift, batch, mirror=False),
        )
    if max_shift == 0:
        return ncc_matrix(query, train)
    r = max_shift
    if min(query.shape[1:]) <= 2 * r:
        raise ValueError(
            f"volumes of shape {list(query.shape[1:])} are too small for shifts of {r} voxels"
        )
    inner = tuple(s - 2 * r for s in query.shape[1:])
    kernels = _normalised(np.ascontiguousarray(train[:, r:-r, r:-r, r:-r]))
    kernels = kernels.reshape(len(train), 1, *inner)
    n = float(np.prod(inner))
    out = np.empty((len(query), len(train)))
    for s in range(0, len(query), batch):
        q = np.asarray(query[s : s + batch], dtype=np.float64)
        s1 = _box_sums(q, inner)
        var = torch.from_numpy(np.sqrt(np.clip(_box_sums(q * q, inner) - s1 * s1 / n, 0, None)))
        var = var[:, None]
        x = torch.from_numpy(np.ascontiguousarray(query[s : s + batch]))[:, None].float()
        dots = F.conv3d(x, kernels).double()
        ncc = torch.where(var > 0, dots / var.clamp_min(1e-300), torch.zeros_like(dots))
        out[s : s + len(x)] = ncc.flatten(2).max(2).values.numpy()
    return out


def _box_sums(volumes: np.ndarray, inner: tuple[int, ...]) -> np.ndarray:
    """Sums of every ``inner``-sized window of each volume (B, X, Y, Z), by cumulative sums
    along each axis: (B, X - inner_x + 1, ...)."""
    out = volumes
    for axis, w in enumerate(inner, start=1):
        c = np.cumsum(out, axis=axis)
        zero = np.zeros_like(np.take(c, [0], axis=axis))
        c = np.concatenate([zero, c], axis=axis)
        n = c.shape[axis]
        out = np.take(c, range(w, n), axis=axis) - np.take(c, range(n - w), axis=axis)
    return out


def nearest(
    query: np.ndarray,
    train: np.ndarray,
    exclude_self: bool = False,
    max_shift: int = DEFAULT_MAX_SHIFT,
    mirror: bool = DEFAULT_MIRROR,
) -> tuple[np.ndarray, np.ndarray]:
    """For each query volume: the highest similarity to a training volume, and its index.

    ``exclude_self`` (query is train) skips each volume's match with itself (and with its
    own mirror image).  Similarities
    are clipped to [-1, 1] (float32 rounding puts an exact copy at 1.000007), after the
    nearest volume is chosen; a threshold below 1 flags the same volumes either way.
    """
    sim = similarity_matrix(query, train, max_shift, mirror=mirror)
    return nearest_in(sim, exclude_self)


def nearest_in(sim: np.ndarray, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """:func:`nearest` from a similarity matrix (query, train) already computed."""
    sim = np.array(sim, dtype=np.float64)
    if exclude_self:
        np.fill_diagonal(sim, -np.inf)
    idx = sim.argmax(axis=1)
    return np.clip(sim[np.arange(len(sim)), idx], -1.0, 1.0), idx


DUPLICATE_SIMILARITY = 0.9999
"""Two real scans at least this similar are one scan twice (a copied file or a rescan)."""


def same_images(query: np.ndarray, train: np.ndarray) -> list[tuple[int, int]]:
    """(i, j) of every query volume i and training volume j that are one image twice: plain
    global NCC at least ``DUPLICATE_SIMILARITY`` (a copy saved with other bytes)."""
    sim = similarity_matrix(query, train, max_shift=0, mirror=False)
    return [(int(i), int(j)) for i, j in zip(*np.nonzero(sim >= DUPLICATE_SIMILARITY), strict=True)]


def duplicate_groups(sim: np.ndarray, limit: float = DUPLICATE_SIMILARITY) -> list[list[int]]:
    """Groups (two or more, each sorted) of the real scans that are duplicates of each other:
    ``sim`` (n, n) is their similarity matrix, and two scans whose similarity either way is
    at least ``limit`` are one group (linked transitively)."""
    n = len(sim)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    close = np.maximum(sim, sim.T) >= limit
    for i, j in zip(*np.nonzero(np.triu(close, k=1)), strict=True):
        parent[root(int(j))] = root(int(i))
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


@dataclass(frozen=True)
class Threshold:
    """A near-copy threshold and how it was obtained."""

    value: float
    rule: str
    false_positive_rate: float | None
    """The rate of never-seen real scans it may flag (None for a given threshold)."""
    confidence: float | None = None
    """The confidence with which that rate holds (None for a given threshold)."""
    left_out: tuple[int, ...] = ()
    """Positions of the reference values left out of the fit as low outliers."""


#: Reference values whose robust z-score (median and MAD of -log(1 - s)) is below minus this
#: are left out of the threshold's fit (Iglewicz and Hoaglin's 3.5 for outliers).
LOW_OUTLIER_Z = 3.5


def tolerance_factor(n: int, false_positive_rate: float, confidence: float) -> float:
    """k of the one-sided normal tolerance bound mean + k sd of ``n`` values: with
    ``confidence`` it exceeds the population's upper ``false_positive_rate`` quantile.

    The sample mean and sd of n normal values give (quantile - mean) / (sd / sqrt n) a
    noncentral t distribution with n - 1 degrees of freedom and noncentrality z sqrt(n), so
    k = t'_{confidence}(n - 1, z_{1 - rate} sqrt n) / sqrt n (e.g. 3.18 for n = 24, 1 %, 95 %).
    """
    from scipy.stats import nct

    z = NormalDist().inv_cdf(1.0 - false_positive_rate)
    return float(nct.ppf(confidence, n - 1, z * math.sqrt(n)) / math.sqrt(n))


def calibrate(
    reference_nn: np.ndarray,
    false_positive_rate: float = DEFAULT_FALSE_POSITIVE_RATE,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Threshold:
    """The similarity above which at most ``false_positive_rate`` of never-seen real scans
    fall, with ``confidence``: a one-sided normal tolerance bound on ``-log(1 - s)`` of the
    reference values ``s`` (at least 3; fewer fall back to their maximum), mapped back to
    the similarity scale.
    """
    if not 0 < false_positive_rate < 1:
        raise ValueError(f"false_positive_rate must be in (0, 1), got {false_positive_rate}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    ref = np.asarray(reference_nn, dtype=np.float64)
    if len(ref) < 3:
        return Threshold(
            float(ref.max()),
            "largest real reference value (fewer than 3 reference scans: no fit)",
            None,
        )
    t = -np.log(np.clip(1.0 - ref, 1e-12, None))
    # A real scan unlike every other (very noisy, or of another contrast) has a low value that
    # widened the sd and lifted the bound on the *upper* tail: one such scan among 8 raised the
    # threshold from 0.958 to 0.995 and let every copy through. It says nothing about how
    # similar never-seen scans come, so it is left out of the fit.
    median = float(np.median(t))
    mad = 1.4826 * float(np.median(np.abs(t - median)))
    low = t < median - LOW_OUTLIER_Z * mad if mad > 0 else np.zeros(len(t), dtype=bool)
    if (~low).sum() < 3:
        low[:] = False
    fitted = t[~low]
    k = tolerance_factor(len(fitted), false_positive_rate, confidence)
    mu, sd = float(fitted.mean()), float(fitted.std(ddof=1))
    value = 1.0 - math.exp(-(mu + k * sd))
    rule = (
        f"one-sided normal tolerance bound on -log(1 - similarity) of the {len(fitted)} real "
        f"reference scans, mean + {k:.2f} sd: with {100 * confidence:g}% confidence at most "
        f"{100 * false_positive_rate:g}% of never-seen real scans lie above it"
    )
    if low.any():
        rule += (
            f" ({int(low.sum())} real scans far less similar to any other than the rest, "
            f"robust z below -{LOW_OUTLIER_Z:g}, left out of the fit)"
        )
    left_out = tuple(int(i) for i in np.flatnonzero(low))
    return Threshold(float(value), rule, float(false_positive_rate), float(confidence), left_out)


def summary(synthetic_nn: np.ndarray, reference_nn: np.ndarray, threshold: Threshold) -> dict:
    """Near-copy statistics of one synthetic set against the real reference distribution.

    ``reference_fraction`` is the share of the real reference scans above the threshold;
    the threshold was fitted on them, so this in-sample share cannot reveal a threshold set
    too low (the held-out scans' share, where there are any, can).
    """
    flagged = synthetic_nn > threshold.value
    ref_flagged = reference_nn > threshold.value
    return {
        "threshold": threshold.value,
        "threshold_rule": threshold.rule,
        "target_false_positive_rate": threshold.false_positive_rate,
        "confidence": threshold.confidence,
        "near_copies": int(flagged.sum()),
        "fraction": float(flagged.mean()) if len(flagged) else 0.0,
        "reference_near_copies": int(ref_flagged.sum()),
        "reference_fraction": float(ref_flagged.mean()) if len(ref_flagged) else 0.0,
        "nn_ncc_mean": float(synthetic_nn.mean()),
        "nn_ncc_median": float(np.median(synthetic_nn)),
        "nn_ncc_max": float(synthetic_nn.max()),
        "reference_nn_ncc_mean": float(reference_nn.mean()),
        "reference_nn_ncc_median": float(np.median(reference_nn)),
        "reference_nn_ncc_max": float(reference_nn.max()),
    }
