"""Random pairings and the pairwise metrics of the paper's protocol over them.

Draws cycle through random permutations, so every scan is used equally often; each distinct
pair is computed once and counted as often as it was drawn.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike

from ratgan.evaluation.metrics import PSNR_MSE_FLOOR, ms_ssim
from ratgan.evaluation.settings import EvaluationSettings

PAIR_METRICS = ("ncc", "mae", "mmd", "psnr", "rmse")


def _cycled(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` indices in [0, n) made of consecutive random permutations (balanced use)."""
    reps = -(-count // n)
    return np.concatenate([rng.permutation(n) for _ in range(reps)])[:count]


def sample_std(values: ArrayLike) -> float:
    """Standard deviation (ddof 1) of ``values``; NaN for fewer than two, whose spread is
    unknown (0 would claim a certain value)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.std(ddof=1)) if v.size > 1 else float("nan")


def draw_pairs(n_a: int, n_b: int | None, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random pairs (i, j): i in set A, j in set B; ``n_b`` None pairs A with itself
    (i != j).  Returns an int array (count, 2)."""
    if n_a < 1 or (n_b is not None and n_b < 1):
        raise ValueError(f"pairs need at least one scan in each set (got {n_a} and {n_b})")
    i = _cycled(n_a, count, rng)
    if n_b is None:
        if n_a < 2:
            raise ValueError("pairs inside a set need at least two scans")
        j = (i + 1 + rng.integers(0, n_a - 1, size=count)) % n_a
    else:
        j = _cycled(n_b, count, rng)
    return np.stack([i, j], axis=1)


def unique_pairs(pairs: np.ndarray, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    key = np.sort(pairs, axis=1) if symmetric else pairs
    uniq, inverse = np.unique(key, axis=0, return_inverse=True)
    return uniq, inverse.reshape(-1)


def scan_jackknife_sem(values: np.ndarray, pairs: np.ndarray, within: bool) -> float:
    """Standard error over scans of the mean of ``values`` drawn at ``pairs`` (i, j).

    The draws share scans (and repeat pairs), so they are not independent and
    std / sqrt(draws) understates the standard error (about 25 times for 21,000 draws of
    24 x 24 scans).  Delete-one-scan jackknife: each scan's draws are left out in turn; for
    two sets (``within`` False) the two sets' jackknife variances add (Arvesen 1969), inside
    one set a scan is left out of both places.  NaN when a set has fewer than two scans, or one
    scan is in every draw.
    """
    v = np.asarray(values, dtype=np.float64)
    p = np.asarray(pairs)
    if within:
        sides = [(np.concatenate([p[:, 0], p[:, 1]]), np.concatenate([v, v]))]
    else:
        sides = [(p[:, 0], v), (p[:, 1], v)]
    total, n = float(v.sum()), len(v)
    var = 0.0
    for scans, vals in sides:
        sums = np.bincount(scans, weights=vals)
        counts = np.bincount(scans)
        used = counts > 0
        rest = n - counts[used]  # draws left when a scan is left out
        if len(rest) < 2 or not rest.all():
            return float("nan")
        g = len(rest)
        theta = (total - sums[used]) / rest
        var += (g - 1) / g * float(((theta - theta.mean()) ** 2).sum())
    return var**0.5


def stats(values: np.ndarray, pairs: np.ndarray | None = None, within: bool = False) -> dict:
    """mean, std (over draws), standard error, min, max and counts of one metric.

    With the drawn ``pairs`` (``within``: pairs inside one set) the standard error is over
    scans (``scan_jackknife_sem``) and the distinct pairs are counted; without, the values
    are taken as independent (std / sqrt(n)).  One value has std and standard error NaN.
    """
    v = np.asarray(values, dtype=np.float64)
    std = sample_std(v)
    out = {
        "mean": float(v.mean()),
        "std": std,
        "sem": std / len(v) ** 0.5,
        "min": float(v.min()),
        "max": float(v.max()),
        "comparisons": len(v),
    }
    if pairs is not None:
        out["sem"] = scan_jackknife_sem(v, pairs, within)
        out["distinct_pairs"] = len(unique_pairs(pairs, symmetric=within)[0])
    return out


def _bar(total: int, desc: str, on: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="pair", disable=not on, leave=False)


def pair_matrices(
    a: np.ndarray, b: np.ndarray | None, settings: EvaluationSettings, desc: str, block: int = 32
) -> dict[str, np.ndarray]:
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

    for s in tqdm(
        range(0, len(a), block), desc=desc, unit="block", disable=not settings.progress, leave=False
    ):
        ta, ca, ma, qa = centred(a[s : s + block])
        rows = slice(s, s + len(ta))
        for t0 in range(0, len(other), block):
            tb, cb, mb, qb = centred(other[t0 : t0 + block])  # recomputed: memory stays bounded
            cols = slice(t0, t0 + len(tb))
            cross = ca @ cb.T
            den = torch.sqrt(qa[:, None] * qb[None, :])
            ncc[rows, cols] = (
                torch.where(den > 0, cross / den.clamp_min(1e-300), torch.zeros_like(cross))
                .cpu()
                .numpy()
            )
            sse[rows, cols] = (
                (qa[:, None] + qb[None, :] - 2 * cross + n * (ma[:, None] - mb[None, :]) ** 2)
                .clamp_min(0)
                .cpu()
                .numpy()
            )
            sad[rows, cols] = torch.cdist(ta[None], tb[None], p=1)[0].cpu().numpy()
    mse = sse / n
    return {
        "ncc": ncc,
        "mae": sad / n,
        "mmd": sse,
        "psnr": 10 * np.log10(1.0 / np.maximum(mse, PSNR_MSE_FLOOR)),
        "rmse": np.sqrt(mse),
    }


def paired(
    a: np.ndarray,
    b: np.ndarray | None,
    count: int,
    rng: np.random.Generator,
    settings: EvaluationSettings,
    desc: str,
) -> dict:
    """NCC, MAE, MMD, PSNR, RMSE over ``count`` random pairs (a_i, b_j) (b None: inside a)."""
    pairs = draw_pairs(len(a), None if b is None else len(b), count, rng)
    mats = pair_matrices(a, b, settings, desc)
    return {k: stats(mats[k][pairs[:, 0], pairs[:, 1]], pairs, b is None) for k in PAIR_METRICS}


def within_msssim(
    volumes: np.ndarray,
    count: int,
    rng: np.random.Generator,
    settings: EvaluationSettings,
    desc: str,
) -> dict:
    """MS-SSIM over ``count`` random pairs of distinct scans of one set."""
    if len(volumes) < 2 or count < 1:
        return {"mean": float("nan"), "std": float("nan"), "comparisons": 0}
    pairs = draw_pairs(len(volumes), None, count, rng)
    uniq, inverse = unique_pairs(pairs, symmetric=True)
    dev = torch.device(settings.device)
    vals = np.empty(len(uniq))
    step = max(1, settings.batch_size)
    with _bar(len(uniq), desc, settings.progress) as bar:
        for s in range(0, len(uniq), step):
            idx = uniq[s : s + step]
            x = torch.from_numpy(volumes[idx[:, 0]]).to(dev)
            y = torch.from_numpy(volumes[idx[:, 1]]).to(dev)
            vals[s : s + len(idx)] = ms_ssim(x, y, settings.msssim).cpu().double().numpy()
            bar.update(len(idx))
    return stats(vals[inverse], pairs, within=True)
