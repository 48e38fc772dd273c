"""Sampling a latent diffusion run (docs/diffusion.md): its checkpoint alone rebuilds it.

Each scan's initial latent noise is drawn from its own seed (as a GAN scan's code is), DDIM
with eta 0 then makes the scan a deterministic function of that seed; DDPM draws its per-step
noise from another stream derived from the same seed (``ratgan.models.ldm.step_noise_seed``).
``generate_scans`` dispatches here by the run's config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.networks.nets import AutoencoderKL

from ratgan.config import Config, config_from_dict
from ratgan.devices import select_device
from ratgan.errors import RatganError
from ratgan.models.ldm import (
    Scheduler,
    build_autoencoder,
    build_scheduler,
    build_unet,
    initial_noise,
    latent_shape,
    sample_latent_diffusion,
)
from ratgan.training import checkpoint as ckpt


@dataclass
class LoadedLDM:
    """A trained latent diffusion model ready to sample, and where it came from."""

    autoencoder: AutoencoderKL
    unet: torch.nn.Module
    scheduler: Scheduler
    config: Config
    checkpoint: Path
    iteration: int
    device: torch.device
    scale: float
    steps: int
    sampler: str
    weights: str = "ema"
    extra: dict[str, Any] = field(default_factory=dict)

    def sample(self, seeds: list[int]) -> np.ndarray:
        """Network-space volumes (B, 1, X, Y, Z), one per seed."""
        noise = initial_noise(seeds, latent_shape(self.config))
        out = sample_latent_diffusion(
            self.autoencoder,
            self.unet,
            self.scheduler,
            noise,
            self.scale,
            self.steps,
            self.config.train.precision == "bf16",
            seeds,
        )
        return out.cpu().numpy()

    def record(self) -> dict[str, Any]:
        """What the manifest states about the model and the sampler."""
        return {
            "checkpoint": str(self.checkpoint.resolve()),
            "iteration": self.iteration,
            "weights": self.weights,
            "family": "ldm",
            "sampler": self.sampler,
            "steps": self.steps,
        }


def load_ldm(
    path: Path,
    state: dict[str, Any],
    device: str = "auto",
    precision: str | None = None,
    weights: str = "ema",
    sampler: str | None = None,
    steps: int | None = None,
) -> LoadedLDM:
    """Rebuild the autoencoder and the UNet (the EMA one by default) from a checkpoint's
    ``state``; ``sampler`` and ``steps`` default to the run's ``ldm.diffusion`` ones."""
    cfg = config_from_dict(state["config"])
    if "latents" not in state:
        raise RatganError(
            f"checkpoint {path} is from the autoencoder stage (iteration "
            f"{state['iteration']}); a latent diffusion run samples once its diffusion "
            "stage has a checkpoint."
        )
    if precision is not None:
        # as load_generator: anything but bf16 was silently fp32 (and recorded as such)
        if precision not in ("fp32", "bf16"):
            raise RatganError(f"precision must be fp32 or bf16 (got {precision!r}).")
        cfg.train.precision = "bf16" if precision == "bf16" else "fp32"
    section = cfg.ldm.diffusion
    sampler = sampler or section.sampler
    steps = section.steps if steps is None else steps
    limit = section.train_timesteps
    if not 1 <= steps <= limit:
        raise RatganError(f"--steps must be between 1 and {limit} (got {steps}).")
    dev = select_device(device)
    with torch.device("meta"):  # every tensor comes from the file
        ae, unet = build_autoencoder(cfg), build_unet(cfg)
    ae.load_state_dict(state["networks"]["autoencoder"], assign=True)
    use_ema = weights == "ema" and "ema" in state
    unet.load_state_dict(
        state["ema"]["unet"] if use_ema else state["networks"]["unet"], assign=True
    )
    return LoadedLDM(
        autoencoder=ae.to(dev).eval(),
        unet=unet.to(dev).eval(),
        scheduler=build_scheduler(section, sampler),
        config=cfg,
        checkpoint=path,
        iteration=int(state["iteration"]),
        device=dev,
        scale=float(state["latents"]["scale"]),
        steps=steps,
        sampler=sampler,
        weights="ema" if use_ema else "raw",
    )


def is_ldm_checkpoint(path: Path) -> tuple[bool, dict[str, Any]]:
    """Whether the checkpoint ``path`` holds a latent diffusion run, and its state (mapped)."""
    state = ckpt.load_checkpoint(path, map_location="cpu", mmap=True)
    family = (state.get("config") or {}).get("family", "alphagan")
    return family == "ldm", state
