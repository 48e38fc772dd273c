"""The latent diffusion family (docs/diffusion.md): MONAI's networks built from a config.

Stage 1 is MONAI's ``AutoencoderKL`` (with an optional ``PatchDiscriminator``), stage 2 its
``DiffusionModelUNet`` on the autoencoder's latents scaled to unit variance; the noise
schedules are MONAI's ``DDPMScheduler`` and ``DDIMScheduler``.  :func:`sample_latent_diffusion`
is the one sampling entry that training (montages, quality tracking) and generation share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet, PatchDiscriminator
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from torch import nn

from ratgan.config import Config, DiffusionSection
from ratgan.errors import RatganError
from ratgan.seeds import derived_seed

Scheduler = DDPMScheduler | DDIMScheduler


def build_autoencoder(cfg: Config) -> AutoencoderKL:
    """Stage 1: a 3D AutoencoderKL with one input and one output channel (the scan)."""
    ae = cfg.ldm.autoencoder
    levels = len(ae.channels)
    return AutoencoderKL(
        spatial_dims=3,
        in_channels=1,
        out_channels=1,
        num_res_blocks=ae.num_res_blocks,
        channels=tuple(ae.channels),
        attention_levels=(False,) * levels,
        latent_channels=ae.latent_channels,
        norm_num_groups=ae.norm_num_groups,
        with_encoder_nonlocal_attn=ae.attention,
        with_decoder_nonlocal_attn=ae.attention,
        include_fc=False,
    )


def build_discriminator(cfg: Config) -> PatchDiscriminator:
    """The patch discriminator of stage 1's optional adversarial term."""
    ae = cfg.ldm.autoencoder
    return PatchDiscriminator(
        spatial_dims=3,
        channels=ae.disc_channels,
        in_channels=1,
        out_channels=1,
        num_layers_d=ae.disc_layers,
    )


def build_unet(cfg: Config) -> DiffusionModelUNet:
    """Stage 2: the noise-predicting UNet on the latent (as many channels in as out)."""
    un = cfg.ldm.diffusion
    c = cfg.ldm.autoencoder.latent_channels
    return DiffusionModelUNet(
        spatial_dims=3,
        in_channels=c,
        out_channels=c,
        num_res_blocks=un.num_res_blocks,
        channels=tuple(un.channels),
        attention_levels=tuple(un.attention_levels),
        norm_num_groups=un.norm_num_groups,
        num_head_channels=un.num_head_channels,
        include_fc=False,
    )


def build_scheduler(section: DiffusionSection, sampler: str | None = None) -> Scheduler:
    """The noise schedule (DDPM for training and ``ddpm`` sampling, DDIM for ``ddim``).

    ``clip_sample`` is off: the latents are scaled to unit variance, not bounded to [-1, 1].
    """
    kind = sampler or "ddpm"
    common: dict[str, Any] = {
        "num_train_timesteps": section.train_timesteps,
        "schedule": section.schedule,
        "clip_sample": False,
        "prediction_type": section.prediction,
    }
    if section.schedule != "cosine":
        common |= {"beta_start": section.beta_start, "beta_end": section.beta_end}
    if kind == "ddim":
        return DDIMScheduler(**common)
    if kind == "ddpm":
        return DDPMScheduler(**common)
    raise RatganError(f"--sampler must be ddim or ddpm (got {sampler!r}).")


def latent_shape(cfg: Config) -> tuple[int, int, int, int]:
    """(channels, X, Y, Z) of the latent of a ``data.target_shape`` volume."""
    ae = cfg.ldm.autoencoder
    f = 2 ** (len(ae.channels) - 1)
    x, y, z = (int(s) // f for s in cfg.data.target_shape)
    return (ae.latent_channels, x, y, z)


@dataclass
class LatentDiffusion:
    """The networks of a latent diffusion run."""

    autoencoder: AutoencoderKL
    unet: DiffusionModelUNet
    discriminator: PatchDiscriminator | None = None

    def as_dict(self) -> dict[str, nn.Module]:
        """Networks by checkpoint key."""
        nets: dict[str, nn.Module] = {"autoencoder": self.autoencoder, "unet": self.unet}
        if self.discriminator is not None:
            nets["discriminator"] = self.discriminator
        return nets

    def parameter_counts(self) -> dict[str, int]:
        """Exact number of parameters of each network."""
        return {k: sum(p.numel() for p in v.parameters()) for k, v in self.as_dict().items()}


def build_latent_diffusion(cfg: Config) -> LatentDiffusion:
    """Every network of ``cfg`` (the discriminator only with an adversarial term)."""
    disc = build_discriminator(cfg) if cfg.ldm.autoencoder.adv_weight > 0 else None
    return LatentDiffusion(build_autoencoder(cfg), build_unet(cfg), disc)


def initial_noise(seeds: list[int], shape: tuple[int, ...]) -> torch.Tensor:
    """One N(0, I) latent per seed, drawn on the CPU so that every device starts alike."""
    return torch.stack(
        [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
    )


def step_noise_seed(seed: int) -> int:
    """The seed of the DDPM per-step noise of the scan whose initial noise has ``seed``.

    A stream apart from the initial noise's.  It was ``seed + 2**33``, which torch's CPU
    generator cuts to the seed: on a CPU that was the initial noise's own stream, and DDPM's
    first step added the scan's initial noise to itself again (a chain too noisy from its
    second step on).
    """
    return derived_seed(seed, 1)


@torch.no_grad()
def sample_latent_diffusion(
    autoencoder: AutoencoderKL,
    unet: nn.Module,
    scheduler: Scheduler,
    noise: torch.Tensor,
    scale: float,
    steps: int,
    bf16: bool = False,
    seeds: list[int] | None = None,
) -> torch.Tensor:
    """Volumes (B, 1, X, Y, Z) in network space from the initial latent ``noise``.

    Reverse diffusion with ``steps`` steps of ``scheduler`` (MONAI's ``step``), then
    :func:`decode` on ``latent / scale``.  The loop is written here rather than taken from MONAI's
    ``LatentDiffusionInferer.sample`` so that DDPM's per-step noise comes from each scan's
    own generator (``seeds``): a scan is then the same whatever the batch it is sampled in.
    DDIM (eta 0) draws nothing.  Both step between the timesteps actually visited
    (:func:`_ddim_step`, :func:`_ddpm_step`).
    """
    device = next(unet.parameters()).device
    scheduler.set_timesteps(steps, device=device)
    x = noise.to(device)
    gens = None
    if isinstance(scheduler, DDPMScheduler):
        if seeds is None or len(seeds) != len(x):
            raise ValueError("DDPM sampling needs one seed per scan")
        # on the CPU, as the initial noise: CUDA's generator gives other numbers for one seed
        gens = [torch.Generator().manual_seed(step_noise_seed(s)) for s in seeds]
    timesteps = [int(t) for t in scheduler.timesteps]
    for k, t in enumerate(timesteps):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            eps = unet(x, timesteps=torch.full((len(x),), t, device=device)).float()
        prev = timesteps[k + 1] if k + 1 < len(timesteps) else -1
        if gens is None:
            assert isinstance(scheduler, DDIMScheduler)
            x = _ddim_step(scheduler, eps, t, prev, x)
        else:
            assert isinstance(scheduler, DDPMScheduler)
            x = torch.cat(
                [
                    _ddpm_step(scheduler, eps[i : i + 1], t, prev, x[i : i + 1], gens[i])
                    for i in range(len(x))
                ]
            )
    return decode(autoencoder, x / scale, bf16)


def _alphas_and_x0(
    scheduler: Scheduler, output: torch.Tensor, t: int, prev: int, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """abar_t, abar_prev (1 for x0, ``prev`` -1) and the x0 that the network's ``output``
    (epsilon or v, the schedule's prediction type) implies for ``x`` at timestep ``t``."""
    abar: torch.Tensor = scheduler.alphas_cumprod.to(x.device)
    a_t = abar[t]
    a_prev = abar[prev] if prev >= 0 else torch.ones_like(a_t)
    if scheduler.prediction_type == "v_prediction":
        x0 = a_t.sqrt() * x - (1 - a_t).sqrt() * output
    else:  # epsilon
        x0 = (x - (1 - a_t).sqrt() * output) / a_t.sqrt()
    return a_t, a_prev, x0


def _ddim_step(
    scheduler: DDIMScheduler, output: torch.Tensor, t: int, prev: int, x: torch.Tensor
) -> torch.Tensor:
    """DDIM's deterministic step (eta 0, eq. 12 of the DDIM paper) from timestep ``t`` to the
    next one sampled, ``prev`` (-1: x0).

    MONAI's ``DDIMScheduler.step`` goes to ``t - num_train_timesteps // steps`` while its
    ``set_timesteps`` visits ``linspace(999, 0, steps)``: the UNet was then handed a latent
    noisier than the timestep it was told (with 10 steps, t=11's noise as t=0), and the scans
    kept the difference.
    """
    a_t, a_prev, x0 = _alphas_and_x0(scheduler, output, t, prev, x)
    eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


def _ddpm_step(
    scheduler: DDPMScheduler,
    output: torch.Tensor,
    t: int,
    prev: int,
    x: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """DDPM's ancestral step from timestep ``t`` to the next one sampled, ``prev`` (-1: x0).

    MONAI's ``DDPMScheduler.step`` always steps from t to t - 1 (it reads ``alphas_cumprod[t -
    1]`` and ``betas[t]``) whatever ``set_timesteps`` chose, so with fewer steps than training
    timesteps each step removed one training step's noise only and the scans ended far too
    noisy.  Between t and prev the forward process has beta = 1 - abar_t / abar_prev; the step
    is the posterior q(x_prev | x_t, x0) of DDPM's eq. 7 with that beta (the fixed small
    variance, as MONAI's).  The noise is drawn by ``generator`` on the CPU and moved to ``x``'s
    device, so that a seed gives the same scan on every device (MONAI's step draws on the
    model's device, whose generator gives other numbers for the same seed).
    """
    a_t, a_prev, x0 = _alphas_and_x0(scheduler, output, t, prev, x)
    beta = 1 - a_t / a_prev
    mean: torch.Tensor = a_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - a_prev) * x
    mean = mean / (1 - a_t)
    if prev < 0:
        return mean
    variance: torch.Tensor = ((1 - a_prev) / (1 - a_t) * beta).clamp(min=1e-20)
    noise = torch.randn(x.shape, dtype=x.dtype, generator=generator).to(x.device)
    return mean + variance.sqrt() * noise


def decode(autoencoder: AutoencoderKL, latent: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """The decoder's volumes clipped to [-1, 1], the network space of the scans.

    The decoder is unbounded (a GAN's tanh is not): without the clip a few overshooting
    voxels set the min/max of the exported scan and shift every intensity of it.
    """
    with torch.autocast(latent.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = autoencoder.decode(latent)
    out = out.float()
    # an infinite voxel (a diverged latent) is made NaN, which the clip keeps and generation
    # refuses; clipped, it became a plausible +-1 and the scan was written
    return out.masked_fill(~torch.isfinite(out), float("nan")).clamp(-1.0, 1.0)
