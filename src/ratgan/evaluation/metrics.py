"""Pairwise image metrics of the paper's protocol, batched in torch.

All functions take two batches ``x`` and ``y`` of prepared volumes, shape (B, X, Y, Z) (or
(B, 1, X, Y, Z) for MS-SSIM), values in [0, 1], and return one value per pair, shape (B,).

* NCC: the global normalised cross-correlation (Pearson's r over all voxels).
* MAE, MSE, RMSE: mean absolute / squared error and its root.
* PSNR: 10 log10(data_range^2 / MSE) with data_range 1, MSE floored at 1e-10 (<= 100 dB).
* MMD (Kwon et al. 2019's linear-kernel form): ||mean_b(x) - mean_b(y)||^2 summed over voxels;
  for one pair (b = 1) it is the sum of squared differences, N * MSE.
* MS-SSIM: MONAI's ``compute_ms_ssim`` with settings chosen for 64x64x40 (see MSSSIMSettings).

NCC, MAE, MSE and the MMD are one-line formulas written here; MS-SSIM is MONAI's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

WANG_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""Wang, Simoncelli and Bovik (2003)'s five scale weights."""
PSNR_MSE_FLOOR = 1e-10


def _flat(v: torch.Tensor) -> torch.Tensor:
    """(B, N) float64 view of a batch: differences and sums of any input dtype (bfloat16,
    float16, integer masks) are then exact enough and cannot wrap around."""
    return v.reshape(v.shape[0], -1).double()


def ncc(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Global normalised cross-correlation of each pair, in [-1, 1] (0 when one is constant)."""
    a = _flat(x)
    b = _flat(y)
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    den = torch.sqrt((a * a).sum(1) * (b * b).sum(1))
    num = (a * b).sum(1)
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num)).float()


def mae(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of each pair (accumulated in float64)."""
    return (_flat(x) - _flat(y)).abs().mean(dim=1).float()


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each pair (accumulated in float64)."""
    d = _flat(x) - _flat(y)
    return (d * d).mean(dim=1).float()


def rmse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Root mean squared error of each pair."""
    return mse(x, y).sqrt()


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio (dB) of each pair; identical pairs give 100 dB, not inf."""
    m = mse(x, y).double().clamp_min(PSNR_MSE_FLOOR)
    return (10 * torch.log10(data_range**2 / m)).float()


def mmd_linear(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Kwon's linear-kernel MMD of one batch against another: ||mean(x) - mean(y)||^2 (scalar).

    The linear kernel k(a, b) = a.b makes MMD^2 the squared distance between the two mean
    images, so it sees neither blur nor texture; for single scans it is sum((x - y)^2).
    """
    d = _flat(x).mean(0) - _flat(y).mean(0)
    return (d * d).sum().float()


def mmd_linear_pairs(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Kwon's linear MMD for each pair taken as a batch of one: sum of squared differences."""
    d = _flat(x) - _flat(y)
    return (d * d).sum(dim=1).float()


def pair_metrics(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """NCC, MAE, MMD, PSNR, RMSE (and MSE) of each pair, sharing one float64 difference image."""
    a = _flat(x)
    b = _flat(y)
    d = a - b
    sse = (d**2).sum(dim=1)
    n = a.shape[1]
    m = sse / n
    return {
        "ncc": ncc(a, b),
        "mae": d.abs().mean(dim=1).float(),
        "mmd": sse.float(),
        "psnr": (10 * torch.log10(1.0 / m.clamp_min(PSNR_MSE_FLOOR))).float(),
        "rmse": m.sqrt().float(),
        "mse": m.float(),
    }


@dataclass(frozen=True)
class MSSSIMSettings:
    """MS-SSIM settings, chosen for 64x64x40 volumes (docs/evaluation.md explains why).

    ``scales`` None picks the most scales (at most ``max_scales``) that the volume's shortest
    axis allows for the kernel: 4 for 64x64x40 (coarsest scale 8x8x5 voxels).  The weights
    are the first ``scales`` of Wang et al.'s five, renormalised to sum to 1.
    """

    kernel_size: int = 3
    kernel_sigma: float = 1.5
    scales: int | None = None
    max_scales: int = 4
    data_range: float = 1.0
    k1: float = 0.01
    k2: float = 0.03

    def scales_for(self, shape: tuple[int, ...]) -> int:
        """Number of scales used for volumes of ``shape``."""
        if self.scales is not None:
            if not fits(shape, self.scales, self.kernel_size):
                raise ValueError(
                    f"MS-SSIM with {self.scales} scales and kernel "
                    f"{self.kernel_size} does not fit volumes of shape "
                    f"{list(shape)}"
                )
            return self.scales
        for n in range(min(self.max_scales, len(WANG_WEIGHTS)), 0, -1):
            if fits(shape, n, self.kernel_size):
                return n
        raise ValueError(
            f"volumes of shape {list(shape)} are too small for MS-SSIM with "
            f"kernel {self.kernel_size}"
        )

    def weights_for(self, shape: tuple[int, ...]) -> tuple[float, ...]:
        """The renormalised scale weights used for volumes of ``shape``."""
        w = WANG_WEIGHTS[: self.scales_for(shape)]
        total = sum(w)
        return tuple(v / total for v in w)

    def describe(self, shape: tuple[int, ...]) -> dict:
        """Every setting, with the scale count and weights resolved for ``shape``."""
        n = self.scales_for(shape)
        coarsest = [s // 2 ** (n - 1) for s in shape]
        return {
            **asdict(self),
            "scales": n,
            "weights": list(self.weights_for(shape)),
            "coarsest_scale_shape": coarsest,
            "kernel": "gaussian",
            "implementation": "monai.metrics.regression.compute_ms_ssim",
        }


def fits(shape: tuple[int, ...], scales: int, kernel_size: int) -> bool:
    """Whether MS-SSIM with ``scales`` scales and ``kernel_size`` fits ``shape``.

    Two conditions: the coarsest scale keeps at least ``kernel_size`` voxels on every axis
    (the SSIM window needs a valid position), and MONAI's own size check passes.
    """
    monai_div = max(1, scales - 1) ** 2
    return all(
        s // 2 ** (scales - 1) >= kernel_size and s // monai_div > kernel_size - 1 for s in shape
    )


def ms_ssim(
    x: torch.Tensor, y: torch.Tensor, settings: MSSSIMSettings = MSSSIMSettings()
) -> torch.Tensor:
    """MS-SSIM of each pair of volumes (B, X, Y, Z) or (B, 1, X, Y, Z), values in [0, 1]."""
    from monai.metrics.regression import compute_ms_ssim

    if x.ndim == 4:
        x, y = x[:, None], y[:, None]
    shape = tuple(x.shape[2:])
    out = compute_ms_ssim(
        x.float(),
        y.float(),
        spatial_dims=3,
        data_range=settings.data_range,
        kernel_type="gaussian",
        kernel_size=settings.kernel_size,
        kernel_sigma=settings.kernel_sigma,
        k1=settings.k1,
        k2=settings.k2,
        weights=settings.weights_for(shape),
    )
    return out.reshape(-1)
