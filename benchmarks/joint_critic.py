"""Benchmark: what a joint model's critic judges, the scan or the label maps, at a checkpoint.

    python benchmarks/joint_critic.py RUN [--checkpoint latest] [--scans 8] [--seed 0]

A joint model (``model.channels: 4``, ``data.label_channels: true``) generates each scan with
its GM/WM/CSF channels, and its critic D sees all four.  This scores, with every network in
eval mode and the critic's view of the run (``model.d_label_scale``), ``--scans`` of the run's
own training scans and as many generated ones (prior codes from ``--seed``), then the same
volumes with channels swapped or altered, so that one reads where D's gap between real and
generated lies:

- D(generated scan + the real scans' labels) near D(real): the labels carry the gap;
- generated labels made one-hot, and real labels shrunk by 10 %: how much of it is the tanh's
  soft values (a real label map is exactly +-1);
- the norm of D's input gradient per channel: how much slope D spends on each;
- D(generated) with G's output noise scaled by 0, 0.5, 1, 2, 4: whether D rewards more noise.

The run's output noise must be on (``model.g_output_noise``) for the last block.  Not part of
pass/fail (tests/training/test_joint_critic.py runs it on a tiny joint run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

NOISE_SCALES = (0.0, 0.5, 1.0, 2.0, 4.0)

sys.path.insert(0, str(Path(__file__).parent))  # the sibling benchmarks imported below


@torch.no_grad()
def scores(nets: Any, cfg: Any, real: Tensor, generated: Tensor) -> dict[str, float]:
    """D's mean score of the real and generated batches and of their channel swaps."""
    from ratgan.models.generator import harden_tissue_channels
    from ratgan.training.alphagan import critic_view

    scale = cfg.model.d_label_scale

    def d(x: Tensor) -> float:
        return float(nets.discriminator(critic_view(x, scale)).mean())

    scan_r, lab_r = real[:, :1], real[:, 1:]
    scan_g, lab_g = generated[:, :1], generated[:, 1:]
    return {
        "real": d(real),
        "generated": d(generated),
        "generated scan + real labels": d(torch.cat([scan_g, lab_r], 1)),
        "real scan + generated labels": d(torch.cat([scan_r, lab_g], 1)),
        "generated labels one-hot": d(harden_tissue_channels(generated)),
        "real labels x 0.9": d(torch.cat([scan_r, lab_r * 0.9], 1)),
    }


def input_gradients(nets: Any, cfg: Any, x: Tensor) -> list[float]:
    """Mean over volumes of the norm of D's input gradient, channel by channel."""
    from ratgan.training.alphagan import critic_view

    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(
        nets.discriminator(critic_view(x, cfg.model.d_label_scale)).sum(), x
    )
    return [float(v) for v in grad.pow(2).flatten(2).sum(2).sqrt().mean(0)]


@torch.no_grad()
def noise_response(nets: Any, cfg: Any, z: Tensor, seed: int) -> dict[float, float]:
    """D's mean score of G(z) with G's output-noise std multiplied by each scale."""
    from ratgan.training.alphagan import critic_view

    noise = nets.generator.output_noise
    if noise is None:
        raise SystemExit("the run's generator has no output noise (model.g_output_noise)")
    std = noise.std
    out: dict[float, float] = {}
    try:
        for s in NOISE_SCALES:
            noise.std = lambda *a, s=s, **k: s * std(*a, **k)
            torch.manual_seed(seed)  # the same noise draw for every scale
            x = nets.generator(z)
            out[s] = float(nets.discriminator(critic_view(x, cfg.model.d_label_scale)).mean())
    finally:
        del noise.std  # back to the class's method
    return out


def load_networks(run: Path, which: str = "latest") -> tuple[Any, Any, int]:
    """The checkpoint's networks in eval mode, its config and iteration (a joint run only)."""
    from loss_gradients import load  # noqa: E402 - the benchmark's sibling

    nets, cfg, iteration = load(run, which, torch.device("cpu"))
    if not cfg.data.label_channels:
        raise SystemExit(f"{run}: not a joint model (data.label_channels is false)")
    for net in nets.as_dict().values():
        net.eval()
    return nets, cfg, iteration


def measure(run: Path, which: str, n: int, seed: int) -> dict[str, Any]:
    """Every block above, for one checkpoint."""
    from ada_signal import load_scans  # noqa: E402 - the benchmark's sibling, read as training

    from ratgan.runs import read_run_data

    nets, cfg, iteration = load_networks(run, which)
    entries = read_run_data(run).entries[:n]
    real = load_scans([(e.image, e.label) for e in entries], cfg)
    z = torch.randn(len(real), cfg.model.latent_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.manual_seed(seed)
        generated = nets.generator(z)
    return {
        "iteration": iteration,
        "scores": scores(nets, cfg, real, generated),
        "gradient real": input_gradients(nets, cfg, real),
        "gradient generated": input_gradients(nets, cfg, generated),
        "noise": noise_response(nets, cfg, z, seed + 1),
    }


def report(r: dict[str, Any]) -> str:
    """The measurements as a few readable lines."""
    lines = [f"iteration {r['iteration']}: the critic's mean scores"]
    lines += [f"  {k:32s} {v:9.2f}" for k, v in r["scores"].items()]
    for key in ("gradient real", "gradient generated"):
        values = " / ".join(f"{v:.3f}" for v in r[key])
        lines.append(f"  input gradient norm, {key.split()[1]} (scan / GM / WM / CSF): {values}")
    noise = ", ".join(f"x{s:g}: {v:.2f}" for s, v in r["noise"].items())
    lines.append(f"  D(generated) with G's output noise scaled: {noise}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--checkpoint", default="latest", help="latest, best or a .pt path")
    parser.add_argument("--scans", type=int, default=8, help="real and generated volumes each")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = measure(args.run, args.checkpoint, args.scans, args.seed)
    print(report(result))
    return result


if __name__ == "__main__":
    main()
