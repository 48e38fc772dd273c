"""The evaluation protocol: the paper's Table 2 metrics, distribution distances and memorisation.

``evaluate`` runs five named stages and returns an ``EvaluationResult`` (``results``):

1. ``paper_metrics``: MS-SSIM between random pairs of distinct scans *inside* each set
   (diversity, ``msssim_comparisons`` draws per set; paper: 2,100) and NCC, MAE, MMD, PSNR,
   RMSE between random (real, synthetic) pairs (``comparisons`` draws; paper: 21,000), mean
   ± std over draws (``pairs``).  The reference row pairs held-out real scans with real
   ones, or, with no held-out set, distinct real scans with each other.  With
   ``protocol="authors"`` this stage is the published code's computation instead
   (``authors``).
2. ``feature_distances``, once per feature space: RBF-MMD², Fréchet distance, k-NN
   precision/recall and k-NN density/coverage of each set against a reference real set
   ``A`` — repeated ``split_repeats`` times, the real set is split in halves ``A`` and ``B``
   (or ``A`` is the whole real set and ``B`` the held-out set); ``B`` gives the reference
   row and every set, ``B`` included, is subsampled to one common size, because these
   estimators depend on it: ``B``'s size, or the smallest synthetic set's when that is
   smaller (``info["subset_limited_by"]`` names such sets, and a warning says so).
3. ``memorisation_check``: each synthetic scan's most similar training scan, against a
   threshold calibrated on real scans (``memorisation``).
4. ``voxel_statistics``: per-voxel mean/std maps and intensity histograms.
5. ``spectral_artefacts``: per-axis power spectra and the axis-to-diagonal power ratio of every
   set (``spectra``): the grid that nearest-neighbour up-sampling draws.

Every stage draws from its own named random stream (``settings.stream``), so adding a set or
a stage never changes another set's random draws.  One thing is shared on purpose: the common
subset size of stage 2.  A synthetic set smaller than ``B`` lowers it for every set (the
reference row included), which changes their set-level distances; the Fréchet distance is
biased by the sample size, so sets are only comparable at one size.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from ratgan.errors import RatganError
from ratgan.evaluation import features as feat
from ratgan.evaluation import memorisation as mem
from ratgan.evaluation.pairs import paired, sample_std, within_msssim
from ratgan.evaluation.prepare import ScanSet
from ratgan.evaluation.results import (
    EvaluationResult,
    FeatureSpaceResult,
    Memorisation,
    Row,
    VoxelStatistics,
)
from ratgan.evaluation.settings import EvaluationSettings, exact_float32, stream
from ratgan.evaluation.spectra import SpectralSummary, spectral_summary

__all__ = ["EvaluationSettings", "FeatureSpace", "default_feature_spaces", "evaluate"]

log = logging.getLogger(__name__)

SET_METRICS = ("rbf_mmd", "fd", "precision", "recall", "density", "coverage")
HIST_BINS = 100


class Extractor(Protocol):
    """Anything mapping volumes (B, X, Y, Z) in [0, 1] to features (B, d)."""

    def __call__(self, volumes: torch.Tensor) -> torch.Tensor: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass
class FeatureSpace:
    """A named feature space in which set-level distances are measured."""

    name: str
    extractor: Extractor | None
    skipped: str | None = None
    """Why this space measures nothing (then ``extractor`` may be None); the report says so."""
    standardised: bool = False
    """The extractor's features are already standardised by the set it was fitted on, so
    they are not z-scored again with each reference subset (whose few scans would blow up
    features that hardly vary among them)."""


def default_feature_spaces(settings: EvaluationSettings) -> list[FeatureSpace]:
    """The fixed random 3D convolutional features (``features``), seeded by
    ``settings.feature_seed``."""
    return [
        FeatureSpace(
            "random 3D conv", feat.RandomConvFeatures(settings.feature_seed, device=settings.device)
        )
    ]


# --------------------------------------------------------------------------- stage 1


def paper_metrics(
    real: ScanSet, heldout: ScanSet | None, synthetic: list[ScanSet], settings: EvaluationSettings
) -> tuple[dict[str, dict], dict[str, Any]]:
    """The paper's metrics per row ("reference" and each synthetic set's name), and what the
    protocol did (empty for ours)."""
    if settings.protocol == "authors":
        from ratgan.evaluation.authors import authors_metrics

        return authors_metrics(real, heldout, synthetic, settings)
    rows: dict[str, dict] = {"reference": {}, **{s.name: {} for s in synthetic}}
    seed = settings.seed
    rows["reference"]["msssim"] = within_msssim(
        real.volumes,
        settings.msssim_comparisons,
        stream(seed, "msssim", "reference"),
        settings,
        "MS-SSIM real",
    )
    for s in synthetic:
        rows[s.name]["msssim"] = within_msssim(
            s.volumes,
            settings.msssim_comparisons,
            stream(seed, "msssim", "synthetic", s.name),
            settings,
            f"MS-SSIM {s.name}",
        )
    ref_rng = stream(seed, "pairs", "reference")
    rows["reference"].update(
        paired(
            heldout.volumes, real.volumes, settings.comparisons, ref_rng, settings, "pairs held-out"
        )
        if heldout is not None
        else paired(real.volumes, None, settings.comparisons, ref_rng, settings, "pairs real")
    )
    for s in synthetic:
        rows[s.name].update(
            paired(
                real.volumes,
                s.volumes,
                settings.comparisons,
                stream(seed, "pairs", "synthetic", s.name),
                settings,
                f"pairs {s.name}",
            )
        )
    return rows, {}


# --------------------------------------------------------------------------- stage 2


def set_level(
    real: np.ndarray,
    heldout: np.ndarray | None,
    synthetic: dict[str, np.ndarray],
    settings: EvaluationSettings,
    stage: str,
    standardise: bool = True,
) -> tuple[dict[str, dict[str, dict]], dict[str, Any]]:
    """RBF-MMD^2, Fréchet distance, precision, recall, density and coverage of each set
    against real halves.

    ``real``, ``heldout`` and the synthetic arrays are feature matrices (n, d), z-scored with
    each reference subset's mean and std unless ``standardise`` is False (features already
    standardised by their extractor).  Returns ``({"reference": {...}, name: {...}}, info)``
    with mean ± std over repeats; with a held-out set, ± is a bootstrap over scans and each
    row has the permutation p-value of RBF-MMD^2 against the held-out scans
    (``set_uncertainty``).  Every random draw comes from a stream named after ``stage`` and,
    for a set's own draws, the set's name (``stream``).  Every set is subsampled to one
    common size m: the reference pool's size, or the smallest synthetic set's when that is
    smaller.  So a set's numbers depend on the other sets only through m; ``info`` records
    m (``subset_size``), the pool's size (``reference_pool_size``) and the sets that
    are smaller than the pool (``subset_limited_by``: name -> scans, empty when none is).
    """
    values: dict[str, dict[str, list[float]]] = {
        n: {k: [] for k in SET_METRICS} for n in ["reference", *synthetic]
    }
    pool_b = len(heldout) if heldout is not None else len(real) // 2
    m = min([pool_b, *[len(s) for s in synthetic.values()]])
    info: dict[str, Any] = {
        "subset_size": int(m),
        "reference_pool_size": int(pool_b),
        "subset_limited_by": {n: len(s) for n, s in synthetic.items() if len(s) < pool_b},
        "repeats": int(settings.split_repeats),
        "reference_size": int(len(real) if heldout is not None else len(real) - pool_b),
        "knn_k": settings.knn_k,
        "split": "real vs held-out" if heldout is not None else "random halves of real",
    }
    if m < 3 or info["reference_size"] < 3:
        info["skipped"] = "too few scans for set-level distances (need 3 per subset)"
        return {}, info
    sigmas = []
    halves = stream(settings.seed, stage, "halves")
    subsets = {n: stream(settings.seed, stage, "subset", n) for n in ["reference", *synthetic]}
    for _ in range(max(1, settings.split_repeats)):
        if heldout is None:
            perm = halves.permutation(len(real))
            b_pool, a = real[perm[:pool_b]], real[perm[pool_b:]]
        else:
            a, b_pool = real, heldout
        mu, sd = feat.standardiser(a) if standardise else (0.0, 1.0)
        za = (a - mu) / sd
        sigma = feat.median_bandwidth(za)
        sigmas.append(sigma)
        sets = {"reference": b_pool, **synthetic}
        for name, f in sets.items():
            sub = f[subsets[name].choice(len(f), m, replace=False)]
            zs = (sub - mu) / sd
            p, r = feat.precision_recall(za, zs, settings.knn_k)
            dens, cov = feat.density_coverage(za, zs, settings.knn_k)
            values[name]["rbf_mmd"].append(feat.rbf_mmd2(za, zs, sigma))
            values[name]["fd"].append(feat.frechet_distance(za, zs))
            values[name]["precision"].append(p)
            values[name]["recall"].append(r)
            values[name]["density"].append(dens)
            values[name]["coverage"].append(cov)
    info["rbf_sigma_mean"] = float(np.mean(sigmas))
    out: dict[str, dict[str, Any]] = {
        name: {
            k: {
                "mean": float(np.mean(v)),
                "std": sample_std(v),
                "values": [float(x) for x in v],
            }
            for k, v in per.items()
        }
        for name, per in values.items()
    }
    if heldout is not None:
        _heldout_uncertainty(out, real, heldout, synthetic, m, settings, stage, standardise)
        note = _uncertainty_text(settings)
        if note:
            info["uncertainty"] = note
    return out, info


def _uncertainty_text(settings: EvaluationSettings) -> str:
    """What ``_heldout_uncertainty`` computed, for the report: the bootstrap ± (only with
    more than one draw) and the permutation p-value (only with permutations); empty if
    neither."""
    parts = []
    if settings.bootstrap > 1:
        parts.append(f"± = std over {settings.bootstrap} bootstrap draws of the scans")
    if settings.permutations > 0:
        parts.append(
            f"p = permutation p-value of RBF-MMD² against the held-out scans "
            f"({settings.permutations} permutations; the reference row: held-out against real)"
        )
    return "; ".join(parts)


def _heldout_uncertainty(
    out: dict[str, dict[str, Any]],
    real: np.ndarray,
    heldout: np.ndarray,
    synthetic: dict[str, np.ndarray],
    size: int,
    settings: EvaluationSettings,
    stage: str,
    standardise: bool,
) -> None:
    """Bootstrap ± and intervals, and the RBF-MMD² permutation p-value, into ``out``."""
    from ratgan.evaluation import set_uncertainty as unc

    mu, sd = feat.standardiser(real) if standardise else (0.0, 1.0)
    za, zb = (real - mu) / sd, (heldout - mu) / sd
    sigma = feat.median_bandwidth(za)
    for name, f in {"reference": heldout, **synthetic}.items():
        zs = (f - mu) / sd
        if settings.bootstrap > 1:
            boot = unc.bootstrap(
                za,
                zs,
                size,
                sigma,
                settings.knn_k,
                settings.bootstrap,
                stream(settings.seed, stage, "bootstrap", name),
                {metric: out[name][metric]["mean"] for metric in unc.METRICS},
            )
            for metric, b in boot.items():
                out[name][metric].update(
                    std=b["std"], ci=b["ci"], std_over=f"{b['draws']} bootstrap draws of scans"
                )
        if settings.permutations > 0:
            other = za if name == "reference" else zb
            out[name]["mmd_p"] = unc.mmd_permutation_p(
                zs,
                other,
                sigma,
                settings.permutations,
                stream(settings.seed, stage, "permutation", name),
            )


def feature_distances(
    space: FeatureSpace,
    real: ScanSet,
    heldout: ScanSet | None,
    synthetic: list[ScanSet],
    settings: EvaluationSettings,
) -> FeatureSpaceResult:
    """Extract ``space``'s features of every set and measure the set-level distances."""
    if space.skipped is not None or space.extractor is None:
        return FeatureSpaceResult(space.name, {}, {"skipped": space.skipped or "no extractor"}, {})
    bs, on = settings.feature_batch, settings.progress
    f_real = feat.extract(real.volumes, space.extractor, bs, on, f"{space.name} real")
    f_held = (
        feat.extract(heldout.volumes, space.extractor, bs, on, f"{space.name} held-out")
        if heldout is not None
        else None
    )
    f_syn = {
        s.name: feat.extract(s.volumes, space.extractor, bs, on, f"{space.name} {s.name}")
        for s in synthetic
    }
    rows, info = set_level(
        f_real,
        f_held,
        f_syn,
        settings,
        f"features/{space.name}",
        standardise=not space.standardised,
    )
    return FeatureSpaceResult(space.name, space.extractor.describe(), info, rows)


def _warn_subset_limited(spaces: list[FeatureSpaceResult]) -> None:
    """Warn once when small synthetic sets lowered the common subset size of the set-level
    distances below the reference pool's (every space uses the same sizes)."""
    for space in spaces:
        small = space.info.get("subset_limited_by")
        if small:
            log.warning(
                "synthetic set(s) %s are smaller than the reference pool (%d scans): the "
                "set-level distances (Fréchet, MMD, precision, recall, density, coverage) of "
                "every set, the reference row included, use subsets of %d scans instead of %d",
                ", ".join(f"{n!r} ({k} scans)" for n, k in small.items()),
                space.info["reference_pool_size"],
                space.info["subset_size"],
                space.info["reference_pool_size"],
            )
            return


# --------------------------------------------------------------------------- stage 3


def memorisation_check(
    real: ScanSet, heldout: ScanSet | None, synthetic: list[ScanSet], settings: EvaluationSettings
) -> Memorisation:
    """Each synthetic scan's most similar training scan against the calibrated threshold.

    The threshold is fitted on the real scans' leave-one-out nearest neighbours, real scans
    that duplicate another (similarity at least ``mem.DUPLICATE_SIMILARITY``) left out with a
    warning; held-out real scans, which it was not fitted on, give its realised
    false-positive rate.  A threshold (calibrated or given) not below 1 is refused: nothing
    could be flagged.  Reported similarities are clipped to [-1, 1].
    """
    shift = settings.copy_max_shift
    sim = mem.similarity_matrix(real.volumes, real.volumes, shift)
    kept, duplicates = _distinct_real_scans(real, sim)
    ref_nn, kept_idx = mem.nearest_in(sim[np.ix_(kept, kept)], exclude_self=True)
    ref_idx = [kept[i] for i in kept_idx]
    if settings.copy_threshold is None:
        threshold = mem.calibrate(
            ref_nn, settings.copy_false_positive_rate, settings.copy_confidence
        )
    else:
        threshold = mem.Threshold(float(settings.copy_threshold), "given", None)
    left_out = [str(real.paths[kept[i]]) for i in threshold.left_out]
    if left_out:
        log.warning(
            "%d real scans are far less similar to any other real scan than the rest (%s); "
            "they are left out of the near-copy threshold's fit, which they would lift",
            len(left_out),
            ", ".join(left_out[:3]) + (" ..." if len(left_out) > 3 else ""),
        )
    if not threshold.value < 1.0:
        how = "given" if settings.copy_threshold is not None else "calibrated on the real scans"
        raise RatganError(
            f"the near-copy threshold {how} is {threshold.value:.6f}, not below 1, so no copy "
            "of a real scan could be flagged; give a --copy-threshold below 1 (check the real "
            "scans for near-identical pairs)."
        )
    reference = {
        "rule": "each real scan's most similar other real scan (leave-one-out)",
        "similarity": _similarity_text(shift),
        "threshold": threshold.value,
        "threshold_rule": threshold.rule,
        "target_false_positive_rate": threshold.false_positive_rate,
        "confidence": threshold.confidence,
        **_flagged(ref_nn, threshold.value),
        "nn_ncc": ref_nn.tolist(),
        "nearest": [str(real.paths[i]) for i in ref_idx],
        "scans": [str(real.paths[i]) for i in kept],
        "nn_ncc_mean": float(ref_nn.mean()),
        "nn_ncc_max": float(ref_nn.max()),
        "duplicates": duplicates,
        "left_out_of_fit": left_out,
    }
    if heldout is not None:  # never fitted on: the realised false-positive rate
        held_nn, held_idx = mem.nearest(heldout.volumes, real.volumes, max_shift=shift)
        reference["heldout"] = {
            "rule": "each held-out real scan's most similar real (training) scan",
            **_flagged(held_nn, threshold.value),
            "nn_ncc": held_nn.tolist(),
            "nearest": [str(real.paths[i]) for i in held_idx],
            "scans": [str(p) for p in heldout.paths],
            "nn_ncc_mean": float(held_nn.mean()),
            "nn_ncc_max": float(held_nn.max()),
        }
    per_set = {}
    for s in synthetic:
        nn, idx = mem.nearest(s.volumes, real.volumes, max_shift=shift)
        summ = mem.summary(nn, ref_nn, threshold)
        summ["flagged"] = [
            {
                "scan": str(s.paths[i]),
                "nearest_training_scan": str(real.paths[idx[i]]),
                "ncc": float(nn[i]),
            }
            for i in np.flatnonzero(nn > threshold.value)
        ]
        summ["nn_ncc"] = nn.tolist()
        summ["nearest"] = [str(real.paths[i]) for i in idx]
        per_set[s.name] = summ
    return Memorisation(reference, per_set)


def _distinct_real_scans(real: ScanSet, sim: np.ndarray) -> tuple[list[int], list[dict[str, Any]]]:
    """The indices of the real scans the threshold is calibrated on, and the duplicates left
    out: of each group of real scans at least ``mem.DUPLICATE_SIMILARITY`` similar (one scan
    copied or rescanned), only the first is kept, since its copy would be its nearest
    neighbour and push the threshold to 1, switching the check off.  Warns naming them."""
    groups = mem.duplicate_groups(sim)
    left_out = {i for g in groups for i in g[1:]}
    kept = [i for i in range(len(real)) if i not in left_out]
    if len(kept) < 2:
        raise RatganError(
            f"the {len(real)} real scans from {real.source} are {len(kept)} scan(s) repeated "
            f"(similarity at least {mem.DUPLICATE_SIMILARITY}); the near-copy check needs at "
            "least 2 distinct real scans."
        )
    duplicates: list[dict[str, Any]] = []
    for g in groups:
        copies = [str(real.paths[i]) for i in g[1:]]
        duplicates.append(
            {
                "kept": str(real.paths[g[0]]),
                "left_out": copies,
                "similarity": float(min(1.0, max(sim[g[0], i] for i in g[1:]))),
            }
        )
    if duplicates:
        log.warning(
            "%d real scans are duplicates of another real scan (similarity at least %s) and "
            "are left out of the near-copy threshold's calibration: %s",
            len(left_out),
            mem.DUPLICATE_SIMILARITY,
            "; ".join(
                f"{', '.join(str(real.paths[i]) for i in g[1:])} (= {real.paths[g[0]]})"
                for g in groups
            ),
        )
    return kept, duplicates


def _flagged(nn: np.ndarray, threshold: float) -> dict[str, Any]:
    """How many of ``nn`` lie above ``threshold``, and their share."""
    above = nn > threshold
    return {"near_copies": int(above.sum()), "fraction": float(above.mean())}


def _similarity_text(shift: int) -> str:
    mirror = " and its left-right mirror image" if mem.DEFAULT_MIRROR else ""
    if shift == 0:
        return f"global NCC with the training scan{mirror}"
    return (
        f"highest NCC over shifts of up to {shift} voxels per axis with the training scan{mirror}"
    )


# --------------------------------------------------------------------------- stage 4


def voxel_maps(volumes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel mean and standard deviation over a set (the unbiased 1/(n - 1) variance: sets
    of different sizes are compared, and the 1/n one shrinks a set's std by a factor that
    depends on its size alone).  Sets hold at least 2 scans."""
    v = volumes.astype(np.float64)
    return v.mean(0).astype(np.float32), v.std(0, ddof=1).astype(np.float32)


def intensity_histogram(volumes: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """Density histogram of all voxel intensities of a set on [0, 1]."""
    counts, _ = np.histogram(volumes, bins=bins, range=(0.0, 1.0))
    return counts / max(counts.sum(), 1)


def histogram_w1(p: np.ndarray, q: np.ndarray) -> float:
    """1-Wasserstein distance between two histograms on equal bins of [0, 1]."""
    return float(np.abs(np.cumsum(p) - np.cumsum(q)).sum() / len(p))


TAIL_PERCENTILE = 99.9


def tail_percentile(volumes: np.ndarray, q: float = TAIL_PERCENTILE) -> float:
    """Mean over a set's volumes (each already min/max rescaled to [0, 1]) of their ``q``
    percentile: how far below the brightest voxel a scan's bright tissue sits.  In a magnitude
    scan the brightest voxel is a noise extreme, so this is about 0.75 for the phantom cohort; a
    set whose value is higher comes out brighter in every voxel after min/max rescaling."""
    flat = volumes.reshape(len(volumes), -1).astype(np.float64)
    return float(np.percentile(flat, q, axis=1).mean())


def voxel_statistics(
    real: ScanSet,
    heldout: ScanSet | None,
    synthetic: list[ScanSet],
    ref_name: str,
    settings: EvaluationSettings,
) -> tuple[VoxelStatistics, dict[str, dict[str, float]]]:
    """Maps and histograms of every set, and each row's distances to the real ones."""
    maps = {ref_name: voxel_maps(real.volumes)}
    hists = {ref_name: intensity_histogram(real.volumes)}
    extra = ([("held-out real", heldout)] if heldout is not None else []) + [
        (s.name, s) for s in synthetic
    ]
    for name, s in extra:
        maps[name] = voxel_maps(s.volumes)
        hists[name] = intensity_histogram(s.volumes)
    # what a perfect generator scores: held-out vs real, or one half of real vs the other
    if heldout is not None:
        targets = {"reference": (maps["held-out real"], hists["held-out real"])}
        ref_maps, ref_hist = maps[ref_name], hists[ref_name]
        pairs = {"reference": (targets["reference"], (ref_maps, ref_hist))}
    else:
        perm = stream(settings.seed, "voxel", "halves").permutation(len(real))
        half = len(real) // 2
        a, b = real.volumes[perm[half:]], real.volumes[perm[:half]]
        pairs = {
            "reference": (
                (voxel_maps(b), intensity_histogram(b)),
                (voxel_maps(a), intensity_histogram(a)),
            )
        }
    for s in synthetic:
        pairs[s.name] = ((maps[s.name], hists[s.name]), (maps[ref_name], hists[ref_name]))
    # the brightest voxel's place: each row's set against its reference set, as above
    real_tail = tail_percentile(real.volumes)
    own_tails = {name: tail_percentile(s.volumes) for name, s in extra}
    if heldout is not None:
        tails = {"reference": (own_tails["held-out real"], real_tail)}
    else:
        tails = {"reference": (tail_percentile(b), tail_percentile(a))}
    tails.update({s.name: (own_tails[s.name], real_tail) for s in synthetic})
    own_tails = {"real": real_tail, **own_tails}  # the real set under its plain name
    rows = {}
    for row, (((mean_map, std_map), hist), ((ref_mean, ref_std), ref_hist)) in pairs.items():
        tail, ref_tail = tails[row]
        rows[row] = {
            "intensity_w1": histogram_w1(ref_hist, hist),
            "mean_map_rmse": float(np.sqrt(((mean_map - ref_mean) ** 2).mean())),
            "std_map_rmse": float(np.sqrt(((std_map - ref_std) ** 2).mean())),
            "tail_p999": tail,
            "tail_gap": abs(tail - ref_tail),
        }
    return VoxelStatistics(maps, hists, HIST_BINS, own_tails), rows


def spectral_artefacts(
    real: ScanSet, heldout: ScanSet | None, synthetic: list[ScanSet]
) -> dict[str, SpectralSummary]:
    """The directional spectra of the real, held-out and synthetic sets, keyed by set name."""
    sets = [("real", real)] + ([("held-out real", heldout)] if heldout is not None else [])
    sets += [(s.name, s) for s in synthetic]
    return {name: spectral_summary(s.volumes) for name, s in sets}


# --------------------------------------------------------------------------- the whole thing


def evaluate(
    real: ScanSet,
    synthetic: list[ScanSet],
    settings: EvaluationSettings,
    heldout: ScanSet | None = None,
    feature_spaces: list[FeatureSpace] | None = None,
) -> EvaluationResult:
    """Run the whole protocol on prepared sets; ``feature_spaces`` defaults to
    ``default_feature_spaces(settings)`` (the first one fills the main distance table).
    On a GPU every stage computes in full float32, as on a CPU (``exact_float32``)."""
    with exact_float32():
        return _evaluate(real, synthetic, settings, heldout, feature_spaces)


def _evaluate(
    real: ScanSet,
    synthetic: list[ScanSet],
    settings: EvaluationSettings,
    heldout: ScanSet | None,
    feature_spaces: list[FeatureSpace] | None,
) -> EvaluationResult:
    t0 = time.perf_counter()
    timing: dict[str, float] = {}
    for s in synthetic + ([heldout] if heldout is not None else []):
        if s.shape != real.shape:
            raise ValueError(f"set {s.name} has shape {s.shape}, real has {real.shape}")
    names = [s.name for s in synthetic]
    if "reference" in names or len(set(names)) != len(names):
        # the reference row is keyed "reference" inside the stages, and rows by set name
        raise ValueError(f"synthetic set names {names} must be distinct and not 'reference'")
    spaces = default_feature_spaces(settings) if feature_spaces is None else feature_spaces
    ref_name = "real (held-out vs real)" if heldout is not None else "real (real vs real)"

    def timed(stage: str, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        timing[stage] = time.perf_counter() - t
        return out

    paper, details = timed("paper_metrics", paper_metrics, real, heldout, synthetic, settings)
    spaces_out = [
        timed(f"features: {sp.name}", feature_distances, sp, real, heldout, synthetic, settings)
        for sp in spaces
    ]
    _warn_subset_limited(spaces_out)
    memo = timed("memorisation", memorisation_check, real, heldout, synthetic, settings)
    voxel, voxel_rows = timed(
        "voxel_maps", voxel_statistics, real, heldout, synthetic, ref_name, settings
    )
    spectra = timed("spectra", spectral_artefacts, real, heldout, synthetic)
    timing["total"] = time.perf_counter() - t0

    rows = {ref_name: Row(ref_name, "reference", {**paper["reference"], **voxel_rows["reference"]})}
    for s in synthetic:
        rows[s.name] = Row(s.name, "synthetic", {**paper[s.name], **voxel_rows[s.name]})
    for space in spaces_out:  # the stage keys its rows "reference"; the tables use row names
        if "reference" in space.rows:
            space.rows[ref_name] = space.rows.pop("reference")
    recorded = settings.to_dict()
    recorded["msssim"] = settings.msssim.describe(real.shape)
    return EvaluationResult(
        protocol=settings.protocol,
        reference_row=ref_name,
        settings=recorded,
        real=real,
        heldout=heldout,
        synthetic=synthetic,
        rows=rows,
        feature_spaces=spaces_out,
        memorisation=memo,
        voxel=voxel,
        timing_s=timing,
        protocol_details=details,
        spectra=spectra,
    )
