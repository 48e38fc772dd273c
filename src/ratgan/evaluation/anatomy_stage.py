"""The anatomy feature space as one more ``FeatureSpace`` of ``ratgan evaluate``.

``anatomy_space`` reads the real scans' label maps and fits (or loads from the cache) the
anatomy network of ``ratgan.evaluation.anatomy``; the evaluation then measures RBF-MMD^2,
Fréchet distance and k-NN precision/recall of every set in it with exactly the splits and
subsampling of the random feature space (``protocol.feature_distances``, its own named random
stream).  Without label maps for every real scan, with fewer than ``MIN_LABELLED`` real scans,
or when turned off, the space is skipped and the report says why.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ratgan.evaluation.anatomy import AnatomyFeatures
from ratgan.evaluation.prepare import ScanSet, canonical_labels, centre_crop
from ratgan.evaluation.protocol import FeatureSpace
from ratgan.evaluation.settings import EvaluationSettings

MIN_LABELLED = 10
"""Fewer labelled real scans than this train no anatomy network (too little to learn from)."""
NETWORK = None
"""``AnatomySettings`` of the network ``ratgan evaluate`` trains (None: the defaults)."""
LOADED = {
    "trained": "trained now",
    "cache": "loaded from the cache",
    "bundled": "loaded from the network bundled with ratgan (fitted by the same code on this "
    "real set: the demo's training cohort)",
}
"""How the report names each ``AnatomyFeatures.source``."""
NAME = "anatomy"
"""The space's name in the report and in metrics.json ``feature_spaces``."""


def real_labels(real: ScanSet) -> tuple[np.ndarray | None, str | None]:
    """Label maps (n, X, Y, Z) of the real set reoriented and cropped like its scans, or
    (None, reason)."""
    from ratgan.data.io import list_scans, read_label, read_scan
    from ratgan.errors import RatganError

    try:
        by_image = {str(e.image): e.label for e in list_scans(real.source)}
    except RatganError:  # e.g. volumes built in memory, with no files behind them
        return None, f"the real source {real.source} lists no scan files to find label maps for"
    found = [by_image.get(str(p)) for p in real.paths]
    labels = [lab for lab in found if lab is not None]
    if len(labels) < len(found):
        return None, (
            f"{len(found) - len(labels)} of {len(found)} real scans have no label map (a labels/ "
            "folder beside images/, or a CSV label column), so no anatomy network "
            "can be trained"
        )
    out = np.empty((len(labels), *real.shape), dtype=np.int64)
    for i, (img, lab) in enumerate(zip(real.paths, labels, strict=True)):
        scan = read_scan(img)
        out[i] = centre_crop(canonical_labels(read_label(lab, scan), scan), real.shape)
    return out, None


class AnatomyExtractor:
    """A fitted anatomy space as a ``protocol.Extractor``: volumes (B, X, Y, Z) in [0, 1] ->
    features (B, d)."""

    def __init__(self, space: AnatomyFeatures, fit_or_load_s: float) -> None:
        self.space = space
        self.fit_or_load_s = fit_or_load_s

    def __call__(self, volumes: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.space.features(volumes.detach().cpu().numpy()))

    def describe(self) -> dict[str, Any]:
        """The network's definition and training facts, and a sentence for the report."""
        info = self.space.describe()
        dice = ", ".join(f"label {k} {v:.2f}" for k, v in info["val_dice"].items())
        if info["n_validation"]:
            target = (
                f"reached the target {info['target_dice']:g} for every tissue"
                if info["reached_target"]
                else f"did NOT reach the target {info['target_dice']:g} within "
                f"{info['max_steps']} steps, so its tissue maps are unreliable"
            )
            trained = (
                f"Dice on {info['n_validation']} held-out labelled real scans per label: "
                f"{dice} ({target})"
            )
        else:
            trained = "too few labelled scans to hold any out, so its Dice was not checked"
        about = (
            f"Encoder widths {info['widths']}, tissue maps pooled to "
            f"{'x'.join(map(str, info['grid']))} cells; {info['steps']} training steps, "
            f"seed {info['seed']}, "
            f"{LOADED[info['source']]}; {trained}. "
            "Features are standardised with the real scans' mean and std. Unlike the random "
            "space it responds to where tissue is rather than to noise texture "
            "(docs/evaluation.md shows both on known corruptions)."
        )
        return {**info, "fit_or_load_s": self.fit_or_load_s, "about": about}


def anatomy_space(real: ScanSet, settings: EvaluationSettings) -> FeatureSpace:
    """The anatomy ``FeatureSpace`` fitted on the real labelled scans (network trained now or
    loaded from the cache), or a skipped one that says why."""
    from ratgan.evaluation.anatomy import default_cache_dir, fit_anatomy_features

    if not settings.anatomy:
        return FeatureSpace(NAME, None, "turned off (--no-anatomy)")
    labels, reason = real_labels(real)
    if labels is None:
        return FeatureSpace(NAME, None, reason)
    if len(real) < MIN_LABELLED:
        return FeatureSpace(
            NAME,
            None,
            f"only {len(real)} labelled real scans; the anatomy "
            f"network needs at least {MIN_LABELLED}",
        )
    t0 = time.perf_counter()
    space = fit_anatomy_features(
        real.volumes,
        labels,
        seed=settings.feature_seed,
        settings=NETWORK,
        cache_dir=default_cache_dir(),
        progress=settings.progress,
    )
    return FeatureSpace(NAME, AnatomyExtractor(space, time.perf_counter() - t0), standardised=True)
