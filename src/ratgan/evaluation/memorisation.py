"""Is a synthetic scan a copy of a training scan?

For each synthetic scan we find its nearest training scan by global NCC (the most similar
one).  Alone that number means little — real rats resemble each other — so it is compared
with the same number for real scans that are *not* the scan itself: each held-out real scan's
nearest training scan, or (without a held-out set) each real scan's nearest *other* real scan.
A synthetic scan closer to a training scan than any of those real reference scans is to
theirs is flagged as a near-copy.
"""

from __future__ import annotations

import numpy as np
import torch


def _normalised(volumes: np.ndarray, batch: int = 64) -> torch.Tensor:
    """Each volume centred and scaled to unit norm (rows), so that dot products are NCCs."""
    out = torch.empty(len(volumes), int(np.prod(volumes.shape[1:])), dtype=torch.float32)
    for s in range(0, len(volumes), batch):
        v = torch.from_numpy(volumes[s:s + batch]).reshape(min(batch, len(volumes) - s), -1)
        v = v.double()
        v = v - v.mean(1, keepdim=True)
        n = v.norm(dim=1, keepdim=True)
        out[s:s + batch] = torch.where(n > 0, v / n.clamp_min(1e-300), v).float()
    return out


def ncc_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Global NCC between every volume of ``a`` (n, ...) and of ``b`` (m, ...): (n, m)."""
    return (_normalised(a) @ _normalised(b).T).double().numpy()


def nearest(query: np.ndarray, train: np.ndarray, exclude_self: bool = False
            ) -> tuple[np.ndarray, np.ndarray]:
    """For each query volume: the highest NCC to a training volume, and that volume's index.

    ``exclude_self`` (query is train) skips each volume's match with itself.
    """
    sim = ncc_matrix(query, train)
    if exclude_self:
        np.fill_diagonal(sim, -np.inf)
    idx = sim.argmax(axis=1)
    return sim[np.arange(len(sim)), idx], idx


def summary(synthetic_nn: np.ndarray, reference_nn: np.ndarray,
            threshold: float | None = None) -> dict:
    """Near-copy statistics of one synthetic set against the real reference distribution.

    ``threshold`` None uses the largest nearest-neighbour NCC among the real reference scans.
    """
    thr = float(reference_nn.max()) if threshold is None else float(threshold)
    flagged = synthetic_nn > thr
    return {
        "threshold": thr,
        "threshold_rule": "max real reference NN NCC" if threshold is None else "given",
        "near_copies": int(flagged.sum()),
        "fraction": float(flagged.mean()) if len(flagged) else 0.0,
        "nn_ncc_mean": float(synthetic_nn.mean()),
        "nn_ncc_median": float(np.median(synthetic_nn)),
        "nn_ncc_max": float(synthetic_nn.max()),
        "reference_nn_ncc_mean": float(reference_nn.mean()),
        "reference_nn_ncc_median": float(np.median(reference_nn)),
        "reference_nn_ncc_max": float(reference_nn.max()),
    }
