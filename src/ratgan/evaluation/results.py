"""The typed result of an evaluation, which ``report`` turns into report.md, metrics.json and
figures.

One ``Row`` per compared set (the real reference row first, then each synthetic set) holds
the numbers of the tables; ``FeatureSpaceResult`` holds the set-level distances measured in
one feature space (a list, so that further feature spaces add rows without touching the
others); ``Memorisation`` the near-copy check; ``VoxelStatistics`` the arrays of the figures.
``EvaluationResult.to_json()`` is the content of metrics.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ratgan.evaluation.spectra import SpectralSummary
from ratgan.evaluation.prepare import ScanSet

Stats = dict[str, Any]
"""One metric's summary: mean, std and counts (see ``pairs.stats``), or a plain float."""


@dataclass
class Row:
    """One table row: a set's metrics, keyed by metric name (``report`` names the columns)."""

    name: str
    role: str
    """"reference" (real scans, the target) or "synthetic"."""
    metrics: dict[str, Stats | float] = field(default_factory=dict)


@dataclass
class FeatureSpaceResult:
    """Set-level distances (RBF-MMD², Fréchet, precision, recall, density, coverage) in one
    feature space."""

    name: str
    description: dict[str, Any]
    """The feature extractor's definition (``describe()``)."""
    info: dict[str, Any]
    """Subset sizes, repeats, k, bandwidth, or why the distances were skipped."""
    rows: dict[str, dict[str, Stats]]
    """Row name -> metric -> mean ± std over repeats."""

    @property
    def dim(self) -> int:
        """Number of features."""
        return int(self.description.get("dim", 0))

    @property
    def unstable(self) -> bool:
        """Whether a distance was computed on fewer scans than features (an unstable
        covariance: Fréchet distances are biased upwards, kernel estimates noisy)."""
        sizes = [self.info.get("subset_size"), self.info.get("reference_size")]
        return any(s is not None and s < self.dim for s in sizes)


@dataclass
class Memorisation:
    """Nearest-training-scan similarity of the real reference scans and of each synthetic
    set, with the near-copy threshold calibrated on the former."""

    reference: dict[str, Any]
    """Rule, per-scan values and nearest scans of the real reference."""
    synthetic: dict[str, dict[str, Any]]
    """Set name -> ``memorisation.summary`` plus flagged scans and per-scan values."""


@dataclass
class VoxelStatistics:
    """Per-voxel mean and std maps and intensity histograms of every set (figures)."""

    maps: dict[str, tuple[np.ndarray, np.ndarray]]
    histograms: dict[str, np.ndarray]
    bins: int
    tails: dict[str, float] = field(default_factory=dict)
    """Set name -> mean 99.9th percentile of its min/max-rescaled scans (``tail_percentile``)."""


@dataclass
class EvaluationResult:
    """Everything an evaluation measured, and the sets it measured."""

    protocol: str
    reference_row: str
    settings: dict[str, Any]
    """The settings as recorded (MS-SSIM resolved for the volume shape)."""
    real: ScanSet
    heldout: ScanSet | None
    synthetic: list[ScanSet]
    rows: dict[str, Row]
    feature_spaces: list[FeatureSpaceResult]
    memorisation: Memorisation
    voxel: VoxelStatistics
    timing_s: dict[str, float]
    protocol_details: dict[str, Any] = field(default_factory=dict)
    """What the chosen protocol computed (e.g. epochs and batches of the authors' one)."""
    spectra: dict[str, SpectralSummary] = field(default_factory=dict)
    """Set name ("real", "held-out real", each synthetic set) -> its directional spectra."""

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one prepared volume."""
        return self.real.shape

    def synthetic_rows(self) -> list[Row]:
        """The rows of the synthetic sets, in order."""
        return [r for r in self.rows.values() if r.role == "synthetic"]

    def sets(self) -> dict[str, dict[str, Any]]:
        """Each set's size, source and notes."""
        out = {"real": _set_info(self.real, "real (training) scans")}
        if self.heldout is not None:
            out["held-out"] = _set_info(self.heldout, "held-out real scans")
        for s in self.synthetic:
            out[s.name] = _set_info(s, "synthetic")
        return out

    def to_json(self) -> dict[str, Any]:
        """metrics.json: every number (the first feature space's distances also sit in the
        rows and under ``features``, the keys metrics.json has always had)."""
        rows: dict[str, dict[str, Any]] = {}
        first = self.feature_spaces[0] if self.feature_spaces else None
        for name, row in self.rows.items():
            out: dict[str, Any] = {"role": row.role, **row.metrics}
            if first is not None:
                out.update(first.rows.get(name, {}))
            out["memorisation"] = (
                self.memorisation.reference
                if row.role == "reference"
                else self.memorisation.synthetic[name]
            )
            rows[name] = out
        features = {**first.description, **first.info} if first is not None else {}
        return {
            "protocol": self.protocol,
            "protocol_details": self.protocol_details,
            "reference_row": self.reference_row,
            "shape": list(self.shape),
            "settings": self.settings,
            "features": features,
            "feature_spaces": [
                {"name": f.name, **f.description, **f.info, "rows": f.rows}
                for f in self.feature_spaces
            ],
            "sets": self.sets(),
            "rows": rows,
            "histogram_bins": self.voxel.bins,
            "intensity_histograms": {k: v.tolist() for k, v in self.voxel.histograms.items()},
            "tail_p999": self.voxel.tails,
            "timing_s": self.timing_s,
            "spectra": {
                name: {
                    "axis_to_diagonal": sp.ratios,
                    "per_plane": sp.plane_ratios,
                    "band_power": sp.band_power,
                }
                for name, sp in self.spectra.items()
            },
        }


def _set_info(s: ScanSet, role: str) -> dict[str, Any]:
    return {
        "role": role,
        "n": len(s),
        "source": s.source,
        "generated_from": s.generated_from,
        "shape": list(s.shape),
        "notes": s.notes,
        "files": [str(Path(p)) for p in s.paths],
    }
