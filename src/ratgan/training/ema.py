"""An exponential moving average of the generator's weights (beyond the paper).

StyleGAN and most GANs since sample from an average of G's recent weights rather than the
latest ones: the average removes the step-to-step jitter of adversarial training and usually
gives better scans.  The decay per iteration follows StyleGAN2-ADA: the average's half-life is
given in images, ``beta = 0.5 ** (batch / half_life)``, optionally ramped up with the number of
images seen.  Buffers (batch-norm statistics, spectral-norm vectors) are copied, not averaged.
"""

from __future__ import annotations

import torch
from torch import nn


class GeneratorEMA:
    """Holds ``average``, a generator of the same architecture as the trained one."""

    def __init__(
        self, average: nn.Module, source: nn.Module, half_life_images: float, rampup: float = 0.0
    ) -> None:
        if half_life_images <= 0:
            raise ValueError("half_life_images must be positive")
        self.average = average
        self.average.load_state_dict(source.state_dict())
        self.average.requires_grad_(False)
        self.half_life_images = float(half_life_images)
        self.rampup = float(rampup)

    def beta(self, batch_size: int, images_seen: int) -> float:
        """The decay of one update after ``images_seen`` images (this batch included)."""
        half_life = self.half_life_images
        if self.rampup > 0:
            half_life = min(half_life, images_seen * self.rampup)
        return float(0.5 ** (batch_size / max(half_life, 1e-8)))

    @torch.no_grad()
    def update(self, source: nn.Module, batch_size: int, images_seen: int) -> None:
        """average <- beta * average + (1 - beta) * source (parameters); buffers copied."""
        beta = self.beta(batch_size, images_seen)
        for p_avg, p_src in zip(self.average.parameters(), source.parameters(), strict=True):
            p_avg.lerp_(p_src.detach(), 1.0 - beta)
        for b_avg, b_src in zip(self.average.buffers(), source.buffers(), strict=True):
            b_avg.copy_(b_src)
