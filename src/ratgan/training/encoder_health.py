"""Encoder health: does E give each scan its own code, and does G reconstruct the scan from it?

An alpha-GAN's reconstruction path only teaches G individual anatomy when E encodes: when
every scan gets nearly the same code, G learns one template.  Four numbers, measured on a
fixed set of training scans (no augmentation) in evaluation mode:

* ``code_cosine``: the mean cosine similarity between the codes of two different scans.
  Prior codes (standard normal, L dimensions) give about 0; an encoder that has collapsed, 1.
* ``code_length_ratio``: the mean code length over that of prior codes (sqrt(L)).
* ``rec_mse`` against ``mean_scan_mse``: the reconstruction error G(E(x)) vs x, beside the
  error of answering every scan with the set's mean scan; an encoder-decoder that encodes
  nothing individual cannot beat the mean scan.
* ``code_top_share`` against ``prior_top_share``: the share of the codes' total variance on
  their first principal axis, beside that of as many prior codes (a fixed draw).  Codes that
  lie on one line through the origin score near 1 while their pairwise cosine stays near 0
  (they fall on both sides): the standardised encoder was measured to do this.
* ``rec_std`` against ``real_std``: the voxel-wise standard deviation across subjects of the
  reconstructions and of the scans themselves (means over voxels); a single template gives 0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def encoder_health(
    encoder: nn.Module,
    generator: nn.Module,
    scans: Tensor,
    bf16: bool = False,
    batch: int = 8,
) -> dict[str, float]:
    """The four health numbers of the module docstring for ``scans`` (N >= 2, N, C, S, S, S)."""
    if len(scans) < 2:
        raise ValueError("encoder health needs at least two scans")
    device = scans.device
    was = encoder.training, generator.training
    encoder.eval()
    generator.eval()
    codes: list[Tensor] = []
    recs: list[Tensor] = []
    # A generator with output noise draws it from the global stream when given none: without
    # the fork, an evaluation that was due in one run and not in its resumed twin (another
    # --eval-every, an extended target) changed every later iteration's draws.
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        try:
            _encode_and_render(scans, encoder, generator, batch, bf16, codes, recs)
        finally:
            encoder.train(was[0])
            generator.train(was[1])
    z = torch.cat(codes)
    rec = torch.cat(recs)
    real = scans.float()
    unit = z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = unit @ unit.T
    n = len(z)
    off_diagonal = (cos.sum() - cos.diagonal().sum()) / (n * (n - 1))
    prior = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    return {
        "code_cosine": float(off_diagonal),
        "code_top_share": top_share(z.cpu()),
        "prior_top_share": top_share(prior),
        "code_length_ratio": float(z.norm(dim=1).mean() / z.shape[1] ** 0.5),
        "rec_mse": float((rec - real).pow(2).mean()),
        "mean_scan_mse": float((real - real.mean(0, keepdim=True)).pow(2).mean()),
        "rec_std": float(rec.std(0).mean()),
        "real_std": float(real.std(0).mean()),
    }


def _encode_and_render(
    scans: Tensor,
    encoder: nn.Module,
    generator: nn.Module,
    batch: int,
    bf16: bool,
    codes: list[Tensor],
    recs: list[Tensor],
) -> None:
    """Append each batch's codes E(x) and G's noise-free renderings G(E(x)) to the lists."""
    device = scans.device
    for start in range(0, len(scans), batch):
        x = scans[start : start + batch]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            z = encoder(x).reshape(len(x), -1)
            out = generator(z, return_clean=True)
        codes.append(z.float())
        recs.append(out[1].float())


def top_share(codes: Tensor) -> float:
    """The share of the total variance of ``codes`` (N, L) on their first principal axis."""
    values = torch.linalg.svdvals(codes.double() - codes.double().mean(0)) ** 2
    return float(values[0] / values.sum().clamp_min(1e-300))
