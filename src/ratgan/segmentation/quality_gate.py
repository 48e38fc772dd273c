"""Quality gate for synthetic scans: a stand-in for the authors' manual SPM12 screening.

The authors discarded about half of their synthetic scans because SPM12 could not segment
their anatomy.  Here a synthetic scan's label map (from joint generation or from the
teacher) is summarised by its tissue composition -- the GM, WM and CSF fractions of the
brain and the brain's fraction of the volume -- and the scan is rejected when any fraction
falls outside the range seen in the real training and validation scans, widened by a
margin of that range plus an absolute tolerance (:meth:`QualityGate.fit`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

FRACTIONS = ("GM", "WM", "CSF", "brain")
"""GM/WM/CSF as fractions of the brain (labels 1-3); brain as a fraction of the volume."""


def tissue_fractions(labels: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, 4) fractions :data:`FRACTIONS` of label maps (N, [1,] X, Y, Z)."""
    y = torch.as_tensor(np.asarray(labels) if isinstance(labels, np.ndarray) else labels)
    if y.ndim == 5:
        y = y[:, 0]
    flat = y.reshape(y.shape[0], -1)
    counts = torch.stack([(flat == c).sum(1) for c in range(4)], 1).double().numpy()
    brain = counts[:, 1:].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tissue = np.where(brain[:, None] > 0, counts[:, 1:] / brain[:, None], 0.0)
    return np.concatenate([tissue, (brain / flat.shape[1])[:, None]], axis=1)


@dataclass
class GateResult:
    """Outcome of the gate on a set of scans."""

    accepted: np.ndarray
    """(N,) bool."""
    fractions: np.ndarray
    reasons: list[str] = field(default_factory=list)
    """Empty for an accepted scan, else why it was rejected."""

    @property
    def acceptance_rate(self) -> float:
        """Fraction of scans accepted."""
        return float(self.accepted.mean()) if self.accepted.size else 0.0


@dataclass
class QualityGate:
    """Accepted range [low, high] of each tissue fraction."""

    low: np.ndarray
    high: np.ndarray
    real_min: np.ndarray
    real_max: np.ndarray
    margin: float = 0.1

    @classmethod
    def fit(
        cls, real_labels: torch.Tensor | np.ndarray, margin: float = 0.1, tolerance: float = 0.005
    ) -> QualityGate:
        """The gate of a set of real label maps: their [min, max] per fraction, widened on each
        side by ``margin`` times the range plus an absolute ``tolerance``."""
        f = tissue_fractions(real_labels)
        lo, hi = f.min(0), f.max(0)
        pad = margin * (hi - lo) + tolerance
        return cls(lo - pad, hi + pad, lo, hi, margin)

    def check(self, labels: torch.Tensor | np.ndarray) -> GateResult:
        """Accept or reject each label map."""
        f = tissue_fractions(labels)
        reasons = []
        for row in f:
            bad = [
                f"{name} fraction {v:.3f} outside [{lo:.3f}, {hi:.3f}]"
                for name, v, lo, hi in zip(FRACTIONS, row, self.low, self.high, strict=True)
                if not lo <= v <= hi
            ]
            reasons.append("; ".join(bad))
        accepted = np.array([r == "" for r in reasons], dtype=bool)
        return GateResult(accepted, f, reasons)

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return {
            "fractions": list(FRACTIONS),
            "low": self.low.tolist(),
            "high": self.high.tolist(),
            "real_min": self.real_min.tolist(),
            "real_max": self.real_max.tolist(),
            "margin": self.margin,
        }
