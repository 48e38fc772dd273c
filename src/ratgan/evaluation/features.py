"""A 3D feature space and the distribution distances computed in it.

No pretrained 3D network can be downloaded here, and a network of our own GAN (its encoder or
discriminator) would judge the generator by the yardstick it was trained against.  The feature
space is therefore a *fixed random* 3D convolutional network, seeded, never trained:

    4 stages of [Conv3d(k3, p1, no bias, He-normal weights) -> LeakyReLU(0.2) -> AvgPool3d(2)]
    with 16, 32, 64, 64 channels; the feature vector is each stage's per-channel spatial mean
    of the activation (16 + 32 + 64 + 64 = 176 numbers per volume).

Random convolution features respond to intensity, edges and texture at four scales (receptive
fields of 3, 8, 18 and 38 voxels), so blur, noise and missing fine structure move the vector,
which the paper's linear MMD on raw voxels (a mean-image distance) cannot see.  Caveat: the
features are not semantic — they are not trained to recognise anatomy, so a scan with
plausible texture but implausible anatomy can sit close to real ones; the numbers only compare
sets evaluated with the same ``feature_seed``, and say nothing across seeds or datasets.

Distances (all on features standardised with the reference real set's mean and std):
* Fréchet distance between Gaussians fitted to the two sets (as FID, without Inception);
* RBF-kernel MMD^2, unbiased estimator, bandwidth = median pairwise distance of the
  reference set (fixed per reference, so every set is judged with the same kernel);
* k-nearest-neighbour precision and recall (Kynkäänniemi et al. 2019);
* k-nearest-neighbour density and coverage (Naeem et al. 2020), which use only the real
  points' k-NN balls, so that outlying generated points cannot inflate them as they inflate
  recall.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial.distance import cdist

FEATURE_WIDTHS = (16, 32, 64, 64)


class RandomConvFeatures:
    """The fixed random 3D convolutional feature extractor (weights drawn from ``seed``)."""

    def __init__(
        self,
        seed: int = 0,
        widths: tuple[int, ...] = FEATURE_WIDTHS,
        slope: float = 0.2,
        device: str | torch.device = "cpu",
    ) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.weights = []
        c_in = 1
        for c_out in widths:
            fan_in = c_in * 27
            std = (2.0 / ((1 + slope**2) * fan_in)) ** 0.5
            w = torch.randn(c_out, c_in, 3, 3, 3, generator=gen) * std
            self.weights.append(w.to(device))
            c_in = c_out
        self.slope = slope
        self.seed = seed
        self.widths = tuple(widths)
        self.device = torch.device(device)

    @property
    def dim(self) -> int:
        """Length of a feature vector."""
        return sum(self.widths)

    @torch.no_grad()
    def __call__(self, volumes: torch.Tensor) -> torch.Tensor:
        """Features (B, dim) of volumes (B, X, Y, Z) in [0, 1]."""
        x = volumes.to(self.device, torch.float32)[:, None]
        out = []
        for w in self.weights:
            x = F.leaky_relu(F.conv3d(x, w, padding=1), self.slope)
            out.append(x.mean(dim=(2, 3, 4)))
            x = F.avg_pool3d(x, 2, ceil_mode=True)
        return torch.cat(out, dim=1).cpu()

    def describe(self) -> dict:
        """The extractor's definition, for the report."""
        return {
            "kind": "fixed random 3D conv features",
            "seed": self.seed,
            "widths": list(self.widths),
            "dim": self.dim,
            "kernel": 3,
            "activation": f"leaky_relu({self.slope})",
            "pooling": "avg 2 per stage",
            "feature": "per-stage per-channel spatial mean",
            "standardisation": "z-score with the reference real set's mean and std",
        }


def extract(
    volumes: np.ndarray,
    extractor: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "features",
) -> np.ndarray:
    """Features (n, dim) float64 of prepared volumes (n, X, Y, Z)."""
    from tqdm.auto import tqdm

    out = []
    for start in tqdm(
        range(0, len(volumes), batch_size),
        desc=desc,
        unit="batch",
        disable=not progress,
        leave=False,
    ):
        out.append(extractor(torch.from_numpy(volumes[start : start + batch_size])))
    return torch.cat(out).double().numpy()


def standardiser(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (floored) std of the reference features, to z-score every set alike."""
    mu = reference.mean(axis=0)
    sd = reference.std(axis=0, ddof=1) if len(reference) > 1 else np.ones_like(mu)
    floor = 1e-3 * float(np.median(sd)) + 1e-12
    return mu, np.maximum(sd, floor)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (n, d) and b (m, d).

    ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2), where the last
    trace equals tr((S_a S_b)^1/2) and is computed from symmetric eigendecompositions, which
    stay exact for the rank-deficient covariances of small sets.
    """
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a = np.atleast_2d(np.cov(a, rowvar=False))
    s_b = np.atleast_2d(np.cov(b, rowvar=False))
    vals, vecs = np.linalg.eigh(s_a)
    root_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    middle = root_a @ s_b @ root_a
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2 * cross)


def sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between every row of ``a`` and every row of ``b``.

    Summed from the coordinate differences, so the distance of two points does not depend on
    which matrices they sit in: a fake copy of a real point is exactly as far from another
    real point as the original is, and ties on a closed k-NN ball's boundary count (the
    expansion |a|^2 + |b|^2 - 2 a.b rounded them differently for a @ a.T and a @ b.T).
    """
    return cdist(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), "sqeuclidean")


def median_bandwidth(reference: np.ndarray) -> float:
    """Median pairwise Euclidean distance within the reference set (the RBF's sigma)."""
    d = np.sqrt(sq_dists(reference, reference))
    iu = np.triu_indices(len(reference), k=1)
    med = float(np.median(d[iu])) if len(iu[0]) else 1.0
    return med if med > 0 else 1.0


def rbf_mmd2(a: np.ndarray, b: np.ndarray, sigma: float) -> float:
    """Unbiased MMD^2 between sets a and b with k(u, v) = exp(-||u - v||^2 / (2 sigma^2))."""
    gamma = 1.0 / (2 * sigma**2)
    k_aa = np.exp(-gamma * sq_dists(a, a))
    k_bb = np.exp(-gamma * sq_dists(b, b))
    k_ab = np.exp(-gamma * sq_dists(a, b))
    n, m = len(a), len(b)
    t_aa = (k_aa.sum() - np.trace(k_aa)) / (n * (n - 1))
    t_bb = (k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
    return float(t_aa + t_bb - 2 * k_ab.mean())


def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each point of x to its k-th nearest other point of x."""
    d = np.sqrt(sq_dists(x, x))
    np.fill_diagonal(d, np.inf)
    k = min(k, len(x) - 1)
    return np.sort(d, axis=1)[:, k - 1]


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """k-NN precision and recall of ``fake`` against ``real`` (Kynkäänniemi et al. 2019).

    Precision: the fraction of fake points inside some real point's k-NN ball (fidelity).
    Recall: the fraction of real points inside some fake point's k-NN ball (coverage).
    """
    r_real = knn_radii(real, k)
    r_fake = knn_radii(fake, k)
    d = np.sqrt(sq_dists(fake, real))  # (n_fake, n_real)
    precision = float((d <= r_real[None, :]).any(axis=1).mean())
    recall = float((d <= r_fake[:, None]).any(axis=0).mean())
    return precision, recall


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """k-NN density and coverage of ``fake`` against ``real`` (Naeem et al. 2020).

    With r_i the distance from real point i to its k-th nearest other real point and B_i the
    closed ball of radius r_i around it:

    * density = sum over fake points of the number of balls B_i holding it, / (k * n_fake):
      fidelity, 1 in expectation for a fake set from the real distribution, above 1 when
      fake points crowd where real ones are dense (not bounded by 1);
    * coverage = the fraction of real points whose ball B_i holds at least one fake point:
      diversity in the right places.  Only real balls are used, so fake outliers (whose own
      huge k-NN balls make recall 1) cannot raise it.

    k is capped at ``len(real) - 1`` as in ``knn_radii`` (density divides by that k).
    """
    inside, k = _in_real_balls(real, fake, k)
    density = float(inside.sum() / (k * len(fake)))
    coverage = float(inside.any(axis=0).mean())
    return density, coverage


def covered_real_points(real: np.ndarray, fake: np.ndarray, k: int = 3) -> np.ndarray:
    """Boolean (n_real,): whether real point i's closed k-NN ball holds a fake point, the
    per-point form of ``density_coverage``'s coverage (which is its mean)."""
    inside, _ = _in_real_balls(real, fake, k)
    return np.asarray(inside.any(axis=0))


def _in_real_balls(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """(n_fake, n_real) booleans: fake point j lies in real point i's closed k-NN ball; and the
    k used (capped at ``len(real) - 1``)."""
    if len(real) < 2 or len(fake) < 1:
        raise ValueError("density and coverage need at least 2 real and 1 fake points.")
    k = min(k, len(real) - 1)
    r_real = knn_radii(real, k)
    return np.sqrt(sq_dists(fake, real)) <= r_real[None, :], k
