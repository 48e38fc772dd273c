"""The evaluation protocol: the paper's Table 2 metrics, distribution distances and memorisation.

Pairwise metrics (paper protocol, SPEC section 5):
* MS-SSIM between random pairs of distinct scans *inside* one set (real-real, synthetic-
  synthetic): diversity.  ``msssim_comparisons`` draws per set (paper: 2,100).
* NCC, MAE, MMD, PSNR, RMSE between random (real, synthetic) pairs, ``comparisons`` draws per
  set (paper: 21,000).  The reference row pairs held-out real scans with real ones, or, with
  no held-out set, distinct real scans with each other.
Draws cycle through random permutations, so every scan is used equally often; each distinct
pair is computed once and counted as often as it was drawn.  Reported: mean ± std over draws.

Set-level distances in the random-feature space (see ``features``) and k-NN precision/recall
compare each set with a reference real set ``A``: repeated ``split_repeats`` times, the real
set is split in halves ``A`` and ``B`` (or ``A`` is the whole real set and ``B`` the held-out
set); ``B`` gives the reference row (what a perfect generator scores) and every synthetic set
is subsampled to ``B``'s size, because these estimators depend on the sample size.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ratgan.evaluation import features as feat
from ratgan.evaluation import memorisation as mem
from ratgan.evaluation.anatomy_stage import anatomy_rows
from ratgan.evaluation.metrics import PSNR_MSE_FLOOR, MSSSIMSettings, ms_ssim
from ratgan.evaluation.prepare import ScanSet

PAIR_METRICS = ("ncc", "mae", "mmd", "psnr", "rmse")
SET_METRICS = ("rbf_mmd", "fd", "precision", "recall")
HIST_BINS = 100


@dataclass
class EvaluationSettings:
    """Every knob of an evaluation (all recorded in metrics.json)."""

    seed: int = 0
    comparisons: int = 21_000
    msssim_comparisons: int = 2_100
    msssim: MSSSIMSettings = field(default_factory=MSSSIMSettings)
    split_repeats: int = 10
    knn_k: int = 3
    copy_threshold: float | None = None
    feature_seed: int = 0
    batch_size: int = 2
    """MS-SSIM pairs per batch.  On a CPU, small batches are fastest: larger ones allocate
    temporaries big enough for the allocator to map and unmap them each time, and the page
    faults cost more than batching saves (64x64x40, one thread: 7 ms per pair at 2, 25 at 8)."""
    feature_batch: int = 4
    """Volumes per batch through the random feature network."""
    device: str = "cpu"
    progress: bool = True
    anatomy: bool = True
    """Also compute the set-level distances in the anatomy feature space (needs labels)."""

    def to_dict(self) -> dict:
        """Plain dict of the settings."""
        return asdict(self)


# --------------------------------------------------------------------------- pairings


def _cycled(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` indices in [0, n) made of consecutive random permutations (balanced use)."""
    reps = -(-count // n)
    return np.concatenate([rng.permutation(n) for _ in range(reps)])[:count]


def draw_pairs(n_a: int, n_b: int | None, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random pairs (i, j): i in set A, j in set B; ``n_b`` None pairs A with itself
    (i != j).  Returns an int array (count, 2)."""
    i = _cycled(n_a, count, rng)
    if n_b is None:
        if n_a < 2:
            raise ValueError("pairs inside a set need at least two scans")
        j = (i + 1 + rng.integers(0, n_a - 1, size=count)) % n_a
    else:
        j = _cycled(n_b, count, rng)
    return np.stack([i, j], axis=1)


def _unique(pairs: np.ndarray, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    key = np.sort(pairs, axis=1) if symmetric else pairs
    uniq, inverse = np.unique(key, axis=0, return_inverse=True)
    return uniq, inverse.reshape(-1)


def stats(values: np.ndarray, unique: int | None = None) -> dict:
    """mean, std (over draws), standard error, min, max and counts of one metric."""
    v = np.asarray(values, dtype=np.float64)
    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    out = {"mean": float(v.mean()), "std": std, "sem": std / max(len(v), 1) ** 0.5,
           "min": float(v.min()), "max": float(v.max()), "comparisons": len(v)}
    if unique is not None:
        out["distinct_pairs"] = int(unique)
    return out


def _bar(total: int, desc: str, on: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="pair", disable=not on, leave=False)


def pair_matrices(a: np.ndarray, b: np.ndarray | None, settings: EvaluationSettings,
                  desc: str, block: int = 32) -> dict[str, np.ndarray]:
    """NCC, MAE, MMD, PSNR, RMSE for *every* pair (a_i, b_j), as (n_a, n_b) matrices.

    Computing all pairs with two library kernels is much faster than gathering the drawn
    pairs one by one: a float64 Gram matrix of the centred volumes gives NCC and the sum of
    squared differences (SSE = |a_c|^2 + |b_c|^2 - 2 a_c.b_c + N (mean_a - mean_b)^2), and
    ``torch.cdist(p=1)`` gives the sum of absolute differences.
    """
    from tqdm.auto import tqdm

    dev = torch.device(settings.device)
    other = a if b is None else b
    n = int(np.prod(a.shape[1:]))
    ncc = np.zeros((len(a), len(other)))
    sse = np.zeros_like(ncc)
    sad = np.zeros_like(ncc)

    def centred(v: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        t = torch.from_numpy(v).to(dev).reshape(len(v), -1).double()
        mean = t.mean(1)
        c = t - mean[:, None]
        return t, c, mean, (c * c).sum(1)

    for s in tqdm(range(0, len(a), block), desc=desc, unit="block", disable=not settings.progress,
                  leave=False):
        ta, ca, ma, qa = centred(a[s:s + block])
        rows = slice(s, s + len(ta))
        for t0 in range(0, len(other), block):
            tb, cb, mb, qb = centred(other[t0:t0 + block])  # recomputed: memory stays bounded
            cols = slice(t0, t0 + len(tb))
            cross = ca @ cb.T
            den = torch.sqrt(qa[:, None] * qb[None, :])
            ncc[rows, cols] = torch.where(den > 0, cross / den.clamp_min(1e-300),
                                          torch.zeros_like(cross)).cpu().numpy()
            sse[rows, cols] = (qa[:, None] + qb[None, :] - 2 * cross
                               + n * (ma[:, None] - mb[None, :]) ** 2).clamp_min(0).cpu().numpy()
            sad[rows, cols] = torch.cdist(ta[None], tb[None], p=1)[0].cpu().numpy()
    mse = sse / n
    return {"ncc": ncc, "mae": sad / n, "mmd": sse,
            "psnr": 10 * np.log10(1.0 / np.maximum(mse, PSNR_MSE_FLOOR)), "rmse": np.sqrt(mse)}


def paired(a: np.ndarray, b: np.ndarray | None, count: int, rng: np.random.Generator,
           settings: EvaluationSettings, desc: str) -> dict:
    """NCC, MAE, MMD, PSNR, RMSE over ``count`` random pairs (a_i, b_j) (b None: inside a)."""
    pairs = draw_pairs(len(a), None if b is None else len(b), count, rng)
    uniq, _ = _unique(pairs, symmetric=b is None)
    mats = pair_matrices(a, b, settings, desc)
    return {k: stats(mats[k][pairs[:, 0], pairs[:, 1]], len(uniq)) for k in PAIR_METRICS}


def within_msssim(volumes: np.ndarray, count: int, rng: np.random.Generator,
                  settings: EvaluationSettings, desc: str) -> dict:
    """MS-SSIM over ``count`` random pairs of distinct scans of one set."""
    if len(volumes) < 2 or count < 1:
        return {"mean": float("nan"), "std": float("nan"), "comparisons": 0}
    pairs = draw_pairs(len(volumes), None, count, rng)
    uniq, inverse = _unique(pairs, symmetric=True)
    dev = torch.device(settings.device)
    vals = np.empty(len(uniq))
    step = max(1, settings.batch_size)
    with _bar(len(uniq), desc, settings.progress) as bar:
        for s in range(0, len(uniq), step):
            idx = uniq[s:s + step]
            x = torch.from_numpy(volumes[idx[:, 0]]).to(dev)
            y = torch.from_numpy(volumes[idx[:, 1]]).to(dev)
            vals[s:s + len(idx)] = ms_ssim(x, y, settings.msssim).cpu().double().numpy()
            bar.update(len(idx))
    return stats(vals[inverse], len(uniq))


# --------------------------------------------------------------------------- set level


def set_level(real: np.ndarray, heldout: np.ndarray | None, synthetic: dict[str, np.ndarray],
              settings: EvaluationSettings, rng: np.random.Generator) -> dict:
    """RBF-MMD^2, Fréchet distance, precision and recall of each set against real halves.

    ``real``, ``heldout`` and the synthetic arrays are feature matrices (n, d).  Returns
    ``{"reference": {...}, name: {...}, "_info": {...}}`` with mean ± std over repeats.
    """
    values: dict[str, dict[str, list[float]]] = {
        n: {k: [] for k in SET_METRICS} for n in ["reference", *synthetic]}
    pool_b = len(heldout) if heldout is not None else len(real) // 2
    m = min([pool_b, *[len(s) for s in synthetic.values()]])
    info = {"subset_size": int(m), "repeats": int(settings.split_repeats),
            "reference_size": int(len(real) if heldout is not None else len(real) - pool_b),
            "knn_k": settings.knn_k,
            "split": "real vs held-out" if heldout is not None else "random halves of real"}
    if m < 3 or info["reference_size"] < 3:
        info["skipped"] = "too few scans for set-level distances (need 3 per subset)"
        return {"_info": info}
    sigmas = []
    for _ in range(max(1, settings.split_repeats)):
        if heldout is None:
            perm = rng.permutation(len(real))
            b_pool, a = real[perm[:pool_b]], real[perm[pool_b:]]
        else:
            a, b_pool = real, heldout
        mu, sd = feat.standardiser(a)
        za = (a - mu) / sd
        sigma = feat.median_bandwidth(za)
        sigmas.append(sigma)
        sets = {"reference": b_pool, **synthetic}
        for name, f in sets.items():
            sub = f[rng.choice(len(f), m, replace=False)]
            zs = (sub - mu) / sd
            p, r = feat.precision_recall(za, zs, settings.knn_k)
            values[name]["rbf_mmd"].append(feat.rbf_mmd2(za, zs, sigma))
            values[name]["fd"].append(feat.frechet_distance(za, zs))
            values[name]["precision"].append(p)
            values[name]["recall"].append(r)
    info["rbf_sigma_mean"] = float(np.mean(sigmas))
    out: dict = {"_info": info}
    for name, per in values.items():
        out[name] = {k: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1))
                         if len(v) > 1 else 0.0, "values": [float(x) for x in v]}
                     for k, v in per.items()}
    return out


# --------------------------------------------------------------------------- voxel statistics


def voxel_maps(volumes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel mean and standard deviation over a set."""
    v = volumes.astype(np.float64)
    return v.mean(0).astype(np.float32), v.std(0).astype(np.float32)


def intensity_histogram(volumes: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """Density histogram of all voxel intensities of a set on [0, 1]."""
    counts, _ = np.histogram(volumes, bins=bins, range=(0.0, 1.0))
    return counts / max(counts.sum(), 1)


def histogram_w1(p: np.ndarray, q: np.ndarray) -> float:
    """1-Wasserstein distance between two histograms on equal bins of [0, 1]."""
    return float(np.abs(np.cumsum(p) - np.cumsum(q)).sum() / len(p))


# --------------------------------------------------------------------------- the whole thing


def evaluate(real: ScanSet, synthetic: list[ScanSet], settings: EvaluationSettings,
             heldout: ScanSet | None = None) -> dict:
    """Run the whole protocol; returns the results dict written to metrics.json.

    Also attaches the per-set arrays needed for figures under ``results["_arrays"]``
    (removed before the JSON is written).
    """
    t0 = time.perf_counter()
    timing: dict[str, float] = {}
    shape = real.shape
    for s in synthetic + ([heldout] if heldout is not None else []):
        if s.shape != shape:
            raise ValueError(f"set {s.name} has shape {s.shape}, real has {shape}")

    # one child generator per task, so adding a set does not change the others' draws
    seeds = np.random.SeedSequence(settings.seed).spawn(5 + 4 * len(synthetic))
    gens = [np.random.default_rng(s) for s in seeds]

    ref_name = "real (held-out vs real)" if heldout is not None else "real (real vs real)"
    rows: dict[str, dict] = {ref_name: {"role": "reference"}}
    for s in synthetic:
        rows[s.name] = {"role": "synthetic"}

    # --- MS-SSIM inside each set
    t = time.perf_counter()
    rows[ref_name]["msssim"] = within_msssim(real.volumes, settings.msssim_comparisons, gens[0],
                                             settings, "MS-SSIM real")
    for k, s in enumerate(synthetic):
        rows[s.name]["msssim"] = within_msssim(s.volumes, settings.msssim_comparisons,
                                               gens[5 + 4 * k], settings, f"MS-SSIM {s.name}")
    timing["msssim"] = time.perf_counter() - t

    # --- NCC, MAE, MMD, PSNR, RMSE against real
    t = time.perf_counter()
    if heldout is not None:
        ref_pairs = paired(heldout.volumes, real.volumes, settings.comparisons, gens[1],
                           settings, "pairs held-out")
    else:
        ref_pairs = paired(real.volumes, None, settings.comparisons, gens[1], settings,
                           "pairs real")
    rows[ref_name].update(ref_pairs)
    for k, s in enumerate(synthetic):
        rows[s.name].update(paired(real.volumes, s.volumes, settings.comparisons,
                                   gens[6 + 4 * k], settings, f"pairs {s.name}"))
    timing["pairwise"] = time.perf_counter() - t

    # --- features and set-level distances
    t = time.perf_counter()
    extractor = feat.RandomConvFeatures(settings.feature_seed, device=settings.device)
    bs = settings.feature_batch
    f_real = feat.extract(real.volumes, extractor, bs, settings.progress, "features real")
    f_held = (feat.extract(heldout.volumes, extractor, bs, settings.progress, "features held-out")
              if heldout is not None else None)
    f_syn = {s.name: feat.extract(s.volumes, extractor, bs, settings.progress,
                                  f"features {s.name}") for s in synthetic}
    level = set_level(f_real, f_held, f_syn, settings, gens[2])
    set_info = level.pop("_info")
    for name, per in level.items():
        rows[ref_name if name == "reference" else name].update(per)
    timing["features"] = time.perf_counter() - t

    # --- the same distances in the anatomy feature space (its own module)
    t = time.perf_counter()
    anatomy = anatomy_rows(real, heldout, synthetic, settings, gens[4])
    timing["anatomy"] = time.perf_counter() - t

    # --- memorisation
    t = time.perf_counter()
    if heldout is not None:
        ref_nn, ref_idx = mem.nearest(heldout.volumes, real.volumes)
        ref_query = heldout.paths
        ref_rule = "each held-out real scan's most similar real (training) scan"
    else:
        ref_nn, ref_idx = mem.nearest(real.volumes, real.volumes, exclude_self=True)
        ref_query = real.paths
        ref_rule = "each real scan's most similar other real scan"
    memo_ref = {"rule": ref_rule, "nn_ncc": ref_nn.tolist(),
                "nearest": [str(real.paths[i]) for i in ref_idx],
                "scans": [str(p) for p in ref_query],
                "nn_ncc_mean": float(ref_nn.mean()), "nn_ncc_max": float(ref_nn.max())}
    rows[ref_name]["memorisation"] = memo_ref
    for s in synthetic:
        nn, idx = mem.nearest(s.volumes, real.volumes)
        summ = mem.summary(nn, ref_nn, settings.copy_threshold)
        flagged = np.flatnonzero(nn > summ["threshold"])
        summ["flagged"] = [{"scan": str(s.paths[i]), "nearest_training_scan":
                            str(real.paths[idx[i]]), "ncc": float(nn[i])} for i in flagged]
        summ["nn_ncc"] = nn.tolist()
        summ["nearest"] = [str(real.paths[i]) for i in idx]
        rows[s.name]["memorisation"] = summ
    timing["memorisation"] = time.perf_counter() - t

    # --- voxel statistics
    t = time.perf_counter()
    maps = {ref_name: voxel_maps(real.volumes)}
    hists = {ref_name: intensity_histogram(real.volumes)}
    if heldout is not None:
        maps["held-out real"] = voxel_maps(heldout.volumes)
        hists["held-out real"] = intensity_histogram(heldout.volumes)
    for s in synthetic:
        maps[s.name] = voxel_maps(s.volumes)
        hists[s.name] = intensity_histogram(s.volumes)
    # what a perfect generator scores: held-out vs real, or one half of real vs the other
    if heldout is not None:
        targets = {ref_name: (maps["held-out real"], hists["held-out real"], maps[ref_name],
                              hists[ref_name])}
    else:
        perm = gens[3].permutation(len(real))
        half_a, half_b = real.volumes[perm[len(real) // 2:]], real.volumes[perm[:len(real) // 2]]
        targets = {ref_name: (voxel_maps(half_b), intensity_histogram(half_b),
                              voxel_maps(half_a), intensity_histogram(half_a))}
    for s in synthetic:
        targets[s.name] = (maps[s.name], hists[s.name], maps[ref_name], hists[ref_name])
    for row, ((mean_map, std_map), hist, (ref_mean, ref_std), ref_hist) in targets.items():
        rows[row]["intensity_w1"] = histogram_w1(ref_hist, hist)
        rows[row]["mean_map_rmse"] = float(np.sqrt(((mean_map - ref_mean) ** 2).mean()))
        rows[row]["std_map_rmse"] = float(np.sqrt(((std_map - ref_std) ** 2).mean()))
    timing["voxel_maps"] = time.perf_counter() - t
    timing["total"] = time.perf_counter() - t0

    sets = {"real": _set_info(real, "real (training) scans")}
    if heldout is not None:
        sets["held-out"] = _set_info(heldout, "held-out real scans")
    for s in synthetic:
        sets[s.name] = _set_info(s, "synthetic")
    settings_dict = settings.to_dict()
    settings_dict["msssim"] = settings.msssim.describe(shape)
    return {
        "reference_row": ref_name,
        "shape": list(shape),
        "settings": settings_dict,
        "features": {**extractor.describe(), **set_info},
        "anatomy": anatomy,
        "sets": sets,
        "rows": rows,
        "histogram_bins": HIST_BINS,
        "intensity_histograms": {k: v.tolist() for k, v in hists.items()},
        "timing_s": timing,
        "_arrays": {"maps": maps, "real": real, "heldout": heldout, "synthetic": synthetic},
    }


def _set_info(s: ScanSet, role: str) -> dict:
    return {"role": role, "n": len(s), "source": s.source, "generated_from": s.generated_from,
            "shape": list(s.shape), "notes": s.notes,
            "files": [str(Path(p)) for p in s.paths]}
