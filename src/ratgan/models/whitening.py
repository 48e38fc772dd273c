"""Decorrelate the encoder's codes with running statistics (``model.e_whiten``).

Per-dimension standardisation (``model.e_standardise``) gives every code dimension the prior's
mean and variance over a batch, but not the prior's *joint* distribution: measured on the demo
architecture, E's codes of the 64 training scans put 90 % of their variance on one direction
after 1,000 iterations (a line through the code space; the pairwise cosine stays near 0
because codes fall on both sides of the origin).  G then learns anatomy along one axis of the
128 it is sampled from.

A batch of 4 codes cannot estimate a 128 x 128 covariance, so this whitens with a running
estimate instead: the running correlation R of the (already standardised) codes, updated
without gradient from every training batch with ``momentum``, and codes mapped through
(R + eps I)^(-1/2) (ZCA: the symmetric inverse square root, so a code changes as little as
whitening allows).  Gradients flow through the codes, not the statistics.  Decorrelated batch
normalisation (Huang et al. 2018) whitens with batch statistics and keeps running ones for
evaluation; here both modes use the running ones, as the batch is far smaller than the code.
PyTorch has no whitening layer, hence this module.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RunningWhitening(nn.Module):
    """Codes (B, L) -> codes decorrelated by the running correlation matrix (float32)."""

    running_corr: Tensor

    def __init__(self, dim: int, momentum: float = 0.01, eps: float = 1e-2) -> None:
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.register_buffer("running_corr", torch.eye(dim))

    @torch.no_grad()
    def _update(self, z: Tensor) -> None:
        second = z.T @ z / len(z)  # the codes are standardised: mean 0, variance 1
        self.running_corr.lerp_(second, self.momentum)

    def inverse_sqrt(self) -> Tensor:
        """(R + eps I)^(-1/2) of the running correlation R."""
        eye = torch.eye(len(self.running_corr), device=self.running_corr.device)
        values, vectors = torch.linalg.eigh(self.running_corr + self.eps * eye)
        out: Tensor = (vectors * values.clamp_min(self.eps).rsqrt()) @ vectors.T
        return out

    def forward(self, z: Tensor) -> Tensor:
        """Whitened codes; in training mode the running correlation first takes in ``z``."""
        with torch.autocast(z.device.type, enabled=False):
            z = z.float()
            if self.training:
                self._update(z.detach())
            return z @ self.inverse_sqrt()
