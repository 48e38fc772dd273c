"""Codes from a kernel density of the training scans' codes (``ratgan generate --codes kde``).

An alpha-GAN's encoder E maps each training scan x_j to a code E(x_j), and the reconstruction
loss teaches G to draw x_j from it.  Sampling G at ``E(x_j) + w z`` (j drawn per scan, z the
scan's prior code) samples a Gaussian kernel density of those codes instead of the prior
N(0, I): "ex-post density estimation" (Ghosh et al. 2020, with a mixture in place of one
Gaussian).  On the built-in cohort it reaches more of the held-out anatomy than prior codes do
(docs/quality.md, "Codes from the training scans' codes").  Small widths reconstruct training
scans, so a set drawn this way must pass the memorisation check of ``ratgan evaluate``; the
width is the user's privacy dial, and w -> infinity is the prior again (G ignores a code's
length).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ratgan.config import Config
from ratgan.errors import RatganError
from ratgan.models.discriminator import Encoder
from ratgan.training import checkpoint as ckpt

DEFAULT_KDE_WIDTH = 1.5
"""The kernel width of ``--codes kde`` when none is given, in prior standard deviations."""


def kde_width_for(codes: str, kde_width: float | None) -> float:
    """The kernel width to draw ``codes`` with: ``kde_width``, or :data:`DEFAULT_KDE_WIDTH`
    when it is None.

    A width given with codes other than ``kde`` raises RatganError instead of being dropped:
    prior codes have no width, so it would change nothing without a word.  The one check of
    ``ratgan generate``, ``ratgan demo`` and :func:`ratgan.demo.run_demo`.
    """
    if kde_width is None:
        return DEFAULT_KDE_WIDTH
    if codes != "kde":
        raise RatganError(
            f"--kde-width {kde_width:g} is for --codes kde; these scans would be drawn "
            "from the prior regardless, so add --codes kde or leave the width out."
        )
    return float(kde_width)


@torch.no_grad()
def training_codes(
    run_dir: Path, checkpoint: Path, cfg: Config, device: torch.device, batch: int = 8
) -> torch.Tensor:
    """E's codes (N, L) of the run's training scans (as data.json records them), E from
    ``checkpoint`` in evaluation mode, read and preprocessed as training reads them."""
    from ratgan.training.inputs import model_input
    from ratgan.training.run_folder import load_recorded_cohort

    state = ckpt.load_checkpoint(checkpoint, map_location="cpu", mmap=True)
    encoder = Encoder(cfg.model)
    encoder.load_state_dict(state["networks"]["E"])
    encoder.to(device).eval()
    cohort = load_recorded_cohort(
        run_dir,
        cfg.data,
        require_labels=bool(cfg.data.label_channels),
        progress=False,
        purpose="kde",
    )
    scans = model_input(cohort.images, cohort.labels, cfg)
    bf16 = cfg.train.precision == "bf16"
    codes = []
    for part in scans.split(batch):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            codes.append(encoder(part.to(device)).reshape(len(part), -1).float().cpu())
    return torch.cat(codes)


def kde_codes(
    centres: torch.Tensor, seeds: list[int], prior: torch.Tensor, width: float
) -> torch.Tensor:
    """One code per seed: ``centres[j] + width * prior[i]``, j drawn from the scan's seed.

    ``prior`` holds the scans' prior codes (``latent_codes(seeds, L)``), so a scan's code
    follows from its manifest seed alone.
    """
    pick = [int(np.random.default_rng(s).integers(len(centres))) for s in seeds]
    return centres[pick] + width * prior
