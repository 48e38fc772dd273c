"""The authors' computation of the paper's metrics (``ratgan evaluate --protocol authors``).

A re-implementation, in our words, of what the published test notebook of Ferreira et al.
(alpha-WGAN-SigmaRat, ``Test.ipynb``) computes, so that its numbers can be reproduced on any
two sets of scans.  Differences from our protocol (docs/evaluation.md compares the two):

* **Batches of 2 and epochs.**  Each epoch shuffles the real scans into batches of 2 (an odd
  one left out); each batch meets 2 synthetic scans (the notebook drew 2 fresh generator
  samples; we cycle through the synthetic set).  A metric's value is the mean over an
  epoch's batches; ``authors_epochs`` epochs (100 in the notebook) give the reported mean and
  the **± = std over the epoch averages**, not over single comparisons.
* **Linear MMD of 2 against 2:** ``||mean(r0, r1) - mean(s0, s1)||^2`` summed over voxels —
  the distance between two 2-scan mean images, smaller than our per-pair value.
* **NCC and MAE on padded volumes:** the real scans were zero-padded to 64^3 (here: to a cube
  of the longest axis) and the generator's whole 64^3 output was compared, so 24 of 64 slices
  are background in both and MAE shrinks by 40/64.  We zero-pad the 40-slice synthetic files.
  NCC pairs (s0, r0) and (s1, r1); MAE compares s0 with both real scans of the batch (the
  notebook broadcast one synthetic scan against the batch), as does RMSE; PSNR pairs 2 with 2.
  RMSE, PSNR and MMD use the 40 source slices.
* **MS-SSIM:** Kwon et al.'s 3D implementation (``kwon_msssim``).  The notebook computes it
  differently for the two kinds of set, and so do we.  *Real set* (``msssim_by_epoch``):
  the 2 scans of each batch, epochs of ``n // 2`` pairs until ``msssim_comparisons`` pairs,
  mean and std of the epoch averages.  *Synthetic set* (``msssim_running``): one pair per
  iteration (the notebook generated 2 fresh scans; we draw 2 distinct scans of the set at
  random), and after every pair the running mean of all pairs so far is appended to a list;
  the reported value is the mean of that list and the ± its std (n - 1), which is small
  because consecutive running means barely differ (about 0.05 x the per-pair std at 1,750
  pairs), so it says nothing about the spread of the set.

Kept from our preparation: every volume rescaled to [0, 1] on its own (the notebook rescaled
each batch of 2 jointly, which only matters for synthetic scans with different ranges).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ratgan.evaluation.metrics import WANG_WEIGHTS
from ratgan.evaluation.pairs import sample_std, unique_pairs
from ratgan.evaluation.prepare import ScanSet
from ratgan.evaluation.settings import EvaluationSettings, stream

KWON_SIGMA = 1.5
KWON_C1 = 0.01**2
KWON_C2 = 0.03**2


def _kwon_ssim(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Whole-volume mean SSIM and mean contrast-structure term with a Gaussian filter of sigma
    1.5 (scipy, reflecting borders, truncated at 4 sigma) and constants for data range 1."""
    f = ndimage.gaussian_filter
    mu_x, mu_y = f(x, KWON_SIGMA), f(y, KWON_SIGMA)
    var_x = f(x * x, KWON_SIGMA) - mu_x * mu_x
    var_y = f(y * y, KWON_SIGMA) - mu_y * mu_y
    cov = f(x * y, KWON_SIGMA) - mu_x * mu_y
    v1 = 2 * cov + KWON_C2
    v2 = var_x + var_y + KWON_C2
    ssim_map = (2 * mu_x * mu_y + KWON_C1) * v1 / ((mu_x**2 + mu_y**2 + KWON_C1) * v2)
    return float(ssim_map.mean()), float((v1 / v2).mean())


def _halve(v: np.ndarray) -> np.ndarray:
    """2x2x2 average pooling, odd trailing voxels dropped (as torch's avg_pool3d)."""
    x, y, z = (s // 2 * 2 for s in v.shape)
    v = v[:x, :y, :z]
    return v.reshape(x // 2, 2, y // 2, 2, z // 2, 2).mean(axis=(1, 3, 5))


def kwon_msssim(x: np.ndarray, y: np.ndarray) -> float:
    """MS-SSIM of two volumes as Kwon et al.'s 3D code computes it (``msssim_3d``).

    Reproduced with its known defects, which our own MS-SSIM does not copy:
    * five scales whatever the volume size (a 64x64x40 volume ends at 4x4x2 voxels, smaller
      than the filter), each scale's SSIM taken over the whole volume with reflected borders;
    * the scales are mixed wrongly: ``prod(cs[:-1]^w[:-1] * ssim[-1]^w[-1])`` multiplies the
      last scale's SSIM term into each of the other four factors (Wang et al.: once);
    * the constants assume a data range of 1 whatever the intensities;
    * a negative contrast term raised to a fractional power gives NaN (as in the original).
    """
    a = np.asarray(x, dtype=np.float32)
    b = np.asarray(y, dtype=np.float32)
    ssims, css = [], []
    for _ in WANG_WEIGHTS:
        s, cs = _kwon_ssim(a, b)
        ssims.append(s)
        css.append(cs)
        a, b = _halve(a), _halve(b)
    w = np.asarray(WANG_WEIGHTS)
    with np.errstate(invalid="ignore"):
        terms = np.power(np.asarray(css[:-1]), w[:-1]) * np.power(ssims[-1], w[-1])
    return float(np.prod(terms))


def _padded_side(shape: tuple[int, ...]) -> int:
    """The cube the authors padded to: 64^3 for 64x64x40 (the longest axis in general)."""
    return max(shape)


class _Gram:
    """Sums, squared norms and dot products of prepared volumes, in float64."""

    def __init__(self, a: np.ndarray, b: np.ndarray, device: str) -> None:
        dev = torch.device(device)
        ta = torch.from_numpy(a).to(dev).reshape(len(a), -1).double()
        tb = torch.from_numpy(b).to(dev).reshape(len(b), -1).double()
        self.sum_a, self.sum_b = ta.sum(1).cpu().numpy(), tb.sum(1).cpu().numpy()
        self.sq_a, self.sq_b = (ta * ta).sum(1).cpu().numpy(), (tb * tb).sum(1).cpu().numpy()
        self.ab = (ta @ tb.T).cpu().numpy()
        self.aa = (ta @ ta.T).cpu().numpy()
        self.bb = (tb @ tb.T).cpu().numpy()
        self.sad = torch.cdist(ta[None], tb[None], p=1)[0].cpu().numpy()
        self.n = ta.shape[1]

    def sse(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Sum of squared differences of pairs (a_i, b_j)."""
        return np.clip(self.sq_a[i] + self.sq_b[j] - 2 * self.ab[i, j], 0, None)

    def padded_ncc(self, i: np.ndarray, j: np.ndarray, n_padded: int) -> np.ndarray:
        """NCC of pairs (a_i, b_j) after zero-padding both to ``n_padded`` voxels."""
        cross = self.ab[i, j] - self.sum_a[i] * self.sum_b[j] / n_padded
        va = self.sq_a[i] - self.sum_a[i] ** 2 / n_padded
        vb = self.sq_b[j] - self.sum_b[j] ** 2 / n_padded
        den = np.sqrt(np.clip(va * vb, 0, None))
        return np.where(den > 0, cross / np.where(den > 0, den, 1), 0.0)

    def batch_mmd(self, r0, r1, s0, s1) -> np.ndarray:
        """||mean(a_r0, a_r1) - mean(b_s0, b_s1)||^2 for each batch."""
        rr = self.sq_a[r0] + self.sq_a[r1] + 2 * self.aa[r0, r1]
        ss = self.sq_b[s0] + self.sq_b[s1] + 2 * self.bb[s0, s1]
        rs = self.ab[r0, s0] + self.ab[r0, s1] + self.ab[r1, s0] + self.ab[r1, s1]
        return np.clip(rr + ss - 2 * rs, 0, None) / 4


def _batches(n_real: int, n_syn: int | None, epochs: int, rng: np.random.Generator) -> np.ndarray:
    """(epochs, n_real // 2, 4) indices r0, r1, s0, s1 of every batch.  ``n_syn`` None draws
    the two comparison scans from the real set, never one of the batch's own."""
    per = n_real // 2
    out = np.empty((epochs, per, 4), dtype=np.int64)
    for e in range(epochs):
        out[e, :, :2] = rng.permutation(n_real)[: 2 * per].reshape(per, 2)
    if n_syn is not None:
        need = epochs * per * 2
        cyc = np.concatenate([rng.permutation(n_syn) for _ in range(-(-need // n_syn))])
        out[:, :, 2:] = cyc[:need].reshape(epochs, per, 2)
        return out
    for e in range(epochs):
        for k in range(per):
            others = np.setdiff1d(np.arange(n_real), out[e, k, :2])
            out[e, k, 2:] = rng.choice(others, 2, replace=False)
    return out


def _over_epochs(per_batch: np.ndarray, distinct: int | None = None) -> dict[str, Any]:
    """Mean and std over the epoch averages of an (epochs, batches) array."""
    epoch_means = np.nanmean(per_batch, axis=1)
    out = {
        "mean": float(np.mean(epoch_means)),
        "std": sample_std(epoch_means),
        "std_over": "epoch averages",
        "epochs": int(per_batch.shape[0]),
        "comparisons": int(per_batch.size),
        "min": float(np.nanmin(per_batch)),
        "max": float(np.nanmax(per_batch)),
    }
    if distinct is not None:
        out["distinct_pairs"] = int(distinct)
    return out


def pair_metrics_by_epoch(
    real: np.ndarray,
    other: np.ndarray | None,
    epochs: int,
    rng: np.random.Generator,
    device: str = "cpu",
) -> dict[str, dict]:
    """NCC, MAE, MMD, PSNR, RMSE as the authors' notebook computes them (module docstring);
    ``other`` None compares real scans with other real scans."""
    b = real if other is None else other
    g = _Gram(real, b, device)
    idx = _batches(len(real), None if other is None else len(other), epochs, rng)
    r0, r1, s0, s1 = (idx[..., k] for k in range(4))
    n_pad = _padded_side(real.shape[1:]) ** 3
    mse_00, mse_10, mse_11 = g.sse(r0, s0) / g.n, g.sse(r1, s0) / g.n, g.sse(r1, s1) / g.n
    per_batch = {
        "ncc": (g.padded_ncc(r0, s0, n_pad) + g.padded_ncc(r1, s1, n_pad)) / 2,
        "mae": (g.sad[r0, s0] + g.sad[r1, s0]) / (2 * n_pad),
        "mmd": g.batch_mmd(r0, r1, s0, s1),
        "psnr": -10 * np.log10(np.maximum((mse_00 + mse_11) / 2, 1e-10)),
        "rmse": np.sqrt((mse_00 + mse_10) / 2),
    }
    return {k: _over_epochs(v) for k, v in per_batch.items()}


def msssim_by_epoch(
    volumes: np.ndarray,
    comparisons: int,
    rng: np.random.Generator,
    progress: bool = False,
    desc: str = "MS-SSIM",
) -> dict[str, Any]:
    """Kwon's MS-SSIM over consecutive pairs of shuffled epochs of one set."""
    from tqdm.auto import tqdm

    per = len(volumes) // 2
    if per < 1 or comparisons < 1:
        return {"mean": float("nan"), "std": float("nan"), "comparisons": 0}
    epochs = max(2, round(comparisons / per))
    pairs = np.concatenate(
        [rng.permutation(len(volumes))[: 2 * per].reshape(per, 2) for _ in range(epochs)]
    )
    uniq, inverse = unique_pairs(pairs, symmetric=True)
    vals = np.array(
        [
            kwon_msssim(volumes[i], volumes[j])
            for i, j in tqdm(uniq, desc=desc, disable=not progress, leave=False)
        ]
    )
    out = _over_epochs(vals[inverse].reshape(epochs, per), len(uniq))
    out["nan_pairs"] = int(np.isnan(vals[inverse]).sum())
    return out


def msssim_running(
    volumes: np.ndarray,
    comparisons: int,
    rng: np.random.Generator,
    progress: bool = False,
    desc: str = "MS-SSIM",
) -> dict[str, Any]:
    """Kwon's MS-SSIM of a synthetic set as the notebook's ``ms_ssim_generated`` reports it:
    ``comparisons`` random pairs of distinct scans, the running mean after each pair, and
    the mean and std (n - 1) of those running means (module docstring)."""
    from tqdm.auto import tqdm

    if len(volumes) < 2 or comparisons < 1:
        return {"mean": float("nan"), "std": float("nan"), "comparisons": 0}
    pairs = np.stack([rng.choice(len(volumes), 2, replace=False) for _ in range(comparisons)])
    uniq, inverse = unique_pairs(pairs, symmetric=True)
    vals = np.array(
        [
            kwon_msssim(volumes[i], volumes[j])
            for i, j in tqdm(uniq, desc=desc, disable=not progress, leave=False)
        ]
    )[inverse]
    running = np.cumsum(vals) / np.arange(1, len(vals) + 1)
    return {
        "mean": float(np.mean(running)),
        "std": sample_std(running),
        "std_over": "running means (the notebook's synthetic-set computation)",
        "per_pair_std": float(np.nanstd(vals, ddof=1)) if len(vals) > 1 else float("nan"),
        "comparisons": int(len(vals)),
        "distinct_pairs": int(len(uniq)),
        "min": float(np.nanmin(vals)),
        "max": float(np.nanmax(vals)),
        "nan_pairs": int(np.isnan(vals).sum()),
    }


def authors_metrics(
    real: ScanSet, heldout: ScanSet | None, synthetic: list[ScanSet], settings: EvaluationSettings
) -> tuple[dict[str, dict], dict[str, Any]]:
    """The paper's metrics of every row by the authors' computation, and its parameters."""
    seed, epochs = settings.seed, settings.authors_epochs
    rows: dict[str, dict] = {}
    rows["reference"] = {
        "msssim": msssim_by_epoch(
            real.volumes,
            settings.msssim_comparisons,
            stream(seed, "authors", "msssim", "reference"),
            settings.progress,
            "Kwon MS-SSIM real",
        )
    }
    ref_rng = stream(seed, "authors", "pairs", "reference")
    rows["reference"].update(
        pair_metrics_by_epoch(real.volumes, None, epochs, ref_rng, settings.device)
        if heldout is None
        else pair_metrics_by_epoch(real.volumes, heldout.volumes, epochs, ref_rng, settings.device)
    )
    for s in synthetic:
        rows[s.name] = {
            "msssim": msssim_running(
                s.volumes,
                settings.msssim_comparisons,
                stream(seed, "authors", "msssim", s.name),
                settings.progress,
                f"Kwon MS-SSIM {s.name}",
            )
        }
        rows[s.name].update(
            pair_metrics_by_epoch(
                real.volumes,
                s.volumes,
                epochs,
                stream(seed, "authors", "pairs", s.name),
                settings.device,
            )
        )
    side = _padded_side(real.shape)
    details = {
        "name": "authors",
        "epochs": epochs,
        "batch_size": 2,
        "batches_per_epoch": len(real) // 2,
        "padded_shape": [side] * 3,
        "msssim": "Kwon et al. 3D MS-SSIM: 5 scales, Gaussian sigma 1.5 (scipy), "
        "data range 1, last scale's SSIM in every factor; real set: mean ± std of epoch "
        "averages; synthetic sets: mean ± std of the running means of random pairs",
    }
    return rows, details
