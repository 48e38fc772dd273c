"""Non-leaking differentiable augmentation of the critic's inputs, with an adaptive strength.

Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data" (ADA): with few
training scans the critic D memorises them and its feedback to G degrades.  Augmenting D's
inputs fights that, and it does not leak into the generated scans when (a) every volume D sees,
real or generated, goes through the same random transforms, (b) the transforms are
differentiable so G is trained through them, and (c) each is applied with a probability p low
enough (below ~0.8) that the augmented distribution still determines the clean one.  Nothing
else sees augmented volumes: the reconstruction losses, E, and the code discriminator work on
the clean scans, which anchors G's output further.

Transforms, each applied per volume with probability p (3-D grayscale versions of ADA's
'bgc' pipeline): left-right flip (then with a fair coin, as ADA's xflip, so at most
p/2 < 0.5 of the volumes are mirrored); integer translation in-plane (one decision per volume,
reflected at the edges); brightness (additive offset); contrast (factor 2^N(0, s) about the
volume mean).  Brightness and contrast act on the scan's channel only (a joint model's tissue
channels are label maps; flips and translations move them with the scan).

The adaptive rule needs a signal of overfitting.  ADA uses r_t = E[sign(D(x_real))] for a
logistic loss whose zero means 'undecided'; a Wasserstein critic's scores have no such zero (the
loss is unchanged by a constant shift), so here the real scores are centred on the batch's mean
generated score: r_t = E[sign(D(x) - mean D(x~))], which is 0 when D cannot tell the two apart
and 1 when every real volume scores above the generated mean.  Every ``interval`` iterations p
moves by batch x interval / speed_images towards the side that brings r_t to its target.
Everything stays on the device: no host synchronisation per step.

Not validated for this critic: checked offline against held-out scans (benchmarks/ada_signal.py,
docs/quality.md), r_t sits at 0.9-1.0 from early in training because the critic scores the
reconstructions G(E(x)) well below real scans, so with the target 0.6 p rises almost steadily
whatever the overfitting.

Written by hand: MONAI's transforms are per-sample, on the CPU side and not differentiable
through their random parameters in batches; DiffAugment/ADA's reference code is 2-D.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ratgan.config import DiscriminatorAugmentConfig


class DiscriminatorAugment(nn.Module):
    """Augments (B, C, X, Y, Z) batches for the critic; ``p`` adapts when configured."""

    # Registered buffers (declared so that the type checker sees tensors, not Module attributes).
    p: Tensor
    sign_sum: Tensor
    sign_count: Tensor

    def __init__(self, cfg: DiscriminatorAugmentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("p", torch.tensor(float(cfg.p)))
        self.register_buffer("sign_sum", torch.zeros(()))
        self.register_buffer("sign_count", torch.zeros(()))
        self.steps = 0  # host-side, so that checking the interval never waits for the device

    def get_extra_state(self) -> dict[str, Any]:
        """Checkpointed with the buffers: the iteration counter of the adjustment interval."""
        return {"steps": self.steps}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what ``get_extra_state`` saved."""
        self.steps = int(state["steps"])

    def _mask(self, n: int, like: Tensor, rng: torch.Generator | None) -> Tensor:
        draw = torch.rand(n, device=like.device, generator=rng)
        return (draw < self.p).view(n, *([1] * (like.dim() - 1)))

    def _translate(self, x: Tensor, axis: int, shift: Tensor) -> Tensor:
        """Shift each volume along ``axis`` by its integer ``shift``, filling in by reflection
        (ADA pads with reflection: repeating the edge voxel draws streaks a critic can use)."""
        size = x.shape[axis]
        idx = torch.arange(size, device=x.device)[None, :] - shift[:, None]
        period = 2 * (size - 1)
        idx = idx.remainder(period)
        idx = torch.where(idx >= size, period - idx, idx)
        view = [x.shape[0]] + [1] * (x.dim() - 1)
        view[axis] = size
        return torch.gather(x, axis, idx.view(view).expand_as(x))

    def forward(self, x: Tensor, rng: torch.Generator | None = None) -> Tensor:
        """The augmented batch (a new tensor; ``x`` unchanged); identity when disabled."""
        cfg = self.cfg
        if not cfg.enabled:
            return x
        n = x.shape[0]
        if cfg.flip:
            # Selected with probability p, then a fair coin decides the flip (as ADA's xflip):
            # a volume is flipped with probability p / 2 < 0.5, so the augmented distribution
            # (1 - p/2) P + p/2 flip(P) still determines P.  Flipping with probability 0.5
            # would make P and flip(P) indistinguishable to the critic: G could draw mirrored
            # anatomy unpunished.
            coin = torch.rand(n, device=x.device, generator=rng) < 0.5
            chosen = self._mask(n, x, rng) & coin.view(n, *([1] * (x.dim() - 1)))
            x = torch.where(chosen, x.flip(2), x)
        if cfg.translate > 0:
            # One decision per volume (as ADA's integer translation): a selected volume is
            # shifted along both in-plane axes, so at most p of the volumes move.
            on = (torch.rand(n, device=x.device, generator=rng) < self.p).long()
            for axis in (2, 3):
                limit = cfg.translate * x.shape[axis]
                draw = torch.rand(n, device=x.device, generator=rng) * 2 - 1
                x = self._translate(x, axis, torch.round(draw * limit).long() * on)
        if cfg.brightness > 0 or cfg.contrast > 0:
            # Intensity transforms act on the scan (channel 0) only: a joint model's tissue
            # channels are binary maps in {-1, 1}, and a brightness offset or a contrast factor
            # would teach the critic that label maps come in other values, one more thing for
            # it to weigh against the scan.  One channel: the same as the whole volume.
            scan = self._colour(x[:, :1], rng)
            x = torch.cat([scan, x[:, 1:]], dim=1) if x.shape[1] > 1 else scan
        return x

    def _colour(self, x: Tensor, rng: torch.Generator | None) -> Tensor:
        """Brightness (additive offset) then contrast (factor about the volume mean)."""
        cfg = self.cfg
        n = x.shape[0]
        if cfg.brightness > 0:
            offset = torch.randn(n, device=x.device, generator=rng, dtype=x.dtype)
            offset = offset.view(n, *([1] * (x.dim() - 1))) * cfg.brightness
            x = x + offset * self._mask(n, x, rng)
        if cfg.contrast > 0:
            factor = torch.exp2(torch.randn(n, device=x.device, generator=rng) * cfg.contrast)
            factor = factor.to(x.dtype).view(n, *([1] * (x.dim() - 1)))
            mean = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
            x = torch.where(self._mask(n, x, rng), (x - mean) * factor + mean, x)
        return x

    @torch.no_grad()
    def observe(self, real_scores: Tensor, fake_scores: Tensor) -> None:
        """Accumulate the overfitting signal from one critic step's scores."""
        centred = real_scores.detach().float() - fake_scores.detach().float().mean()
        self.sign_sum += torch.sign(centred).sum()
        self.sign_count += real_scores.numel()

    @torch.no_grad()
    def adjust(self, batch_size: int) -> None:
        """After an iteration: every ``interval`` iterations move p towards the target."""
        cfg = self.cfg
        self.steps += 1
        if not (cfg.enabled and cfg.adaptive):
            return
        if self.steps % cfg.interval:
            return
        signs = torch.stack([self.sign_sum, self.sign_count])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(signs)
        r_t = signs[0] / signs[1].clamp(min=1)
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        step = batch_size * world * cfg.interval / cfg.speed_images
        self.p.copy_((self.p + torch.sign(r_t - cfg.target) * step).clamp(0, cfg.max_p))
        self.sign_sum.zero_()
        self.sign_count.zero_()

    def r_t(self) -> Tensor:
        """The current interval's overfitting signal (for logging)."""
        return self.sign_sum / self.sign_count.clamp(min=1)
