"""Benchmark: which term of E and G's objective moves the generator, at a checkpoint.

    python benchmarks/loss_gradients.py RUN [--checkpoint latest] [--batches 4] [--seed 0]
        [--device cpu] [--csv FILE]

E and G minimise one sum (docs/method.md section 3):

    -mean D(G(z_e)) - mean D(G(z_r)) - mean C(z_e) + l1 * L1 + mse * MSE + gdl * GDL

whose terms have unrelated scales (a Wasserstein critic's score, a mean squared error, a sum of
squared gradient differences), so their weights say little about what each term does to the
networks.  This prints, for each term with its preset weight, the norm of its gradient on G's
parameters and on E's (the raw weights of the checkpoint, every network in training mode as a
training step holds them, float32, no critic augmentation), averaged over ``--batches`` batches
of train.batch_size of the run's own training scans (data.json, read as training reads them),
with prior codes drawn from ``--seed``.  The terms' gradients add up to the gradient of the
objective the trainer minimises (``losses.encoder_generator_loss``); the last row is that
total.  Not part of pass/fail (tests/training/test_loss_gradients.py checks the sum and the
weights' scaling on a tiny run).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TERMS = ("adv_rec", "adv_gen", "code", "l1", "mse", "gdl")
"""-mean D(G(z_e)), -mean D(G(z_r)), -mean C(z_e), then the weighted reconstruction terms."""


def term_losses(nets: Any, cfg: Any, x: Tensor, z_r: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """Every weighted term of E/G's objective on one batch, and the trainer's own total."""
    from ratgan.training import losses

    z_e = nets.encoder(x).reshape(len(x), -1)
    x_rec, x_rec_clean = nets.generator(z_e, return_clean=True)
    x_gen = nets.generator(z_r)
    d_rec, d_gen = nets.discriminator(x_rec), nets.discriminator(x_gen)
    c_enc = nets.code_discriminator(z_e)
    w = cfg.loss
    terms = {
        "adv_rec": -d_rec.mean(),
        "adv_gen": -d_gen.mean(),
        "code": -c_enc.mean(),
        "l1": w.l1 * F.l1_loss(x_rec_clean, x),
        "mse": w.mse * F.mse_loss(x_rec_clean, x),
        "gdl": w.gdl * losses.gradient_difference_loss(x, x_rec_clean),
    }
    total, _ = losses.encoder_generator_loss(d_rec, d_gen, c_enc, x, x_rec_clean, w)
    return terms, total


def gradient(value: Tensor, params: list[nn.Parameter]) -> Tensor:
    """The gradient of ``value`` on ``params`` as one flat vector (zeros where unused)."""
    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).reshape(-1)
            for p, g in zip(params, grads, strict=True)
        ]
    )


def batch_norms(nets: Any, cfg: Any, x: Tensor, z_r: Tensor) -> dict[str, dict[str, float]]:
    """{network: {term: gradient norm}} of one batch, "total" included, for G and E."""
    terms, total = term_losses(nets, cfg, x, z_r)
    out: dict[str, dict[str, float]] = {}
    for name, net in (("G", nets.generator), ("E", nets.encoder)):
        params = [p for p in net.parameters() if p.requires_grad]
        row = {k: float(gradient(v, params).norm()) for k, v in terms.items()}
        row["total"] = float(gradient(total, params).norm())
        out[name] = row
    return out


def load(run: Path, which: str, device: torch.device) -> tuple[Any, Any, int]:
    """The checkpoint's four networks (raw weights, training mode), its config and iteration."""
    from ratgan.config import config_from_dict
    from ratgan.models.build import build_networks
    from ratgan.runs import read_run_config
    from ratgan.training import checkpoint as ckpt

    path = ckpt.resolve_checkpoint(run, which)
    state = ckpt.load_checkpoint(path, map_location="cpu")
    cfg = config_from_dict(state["config"]) if "config" in state else read_run_config(run)
    nets = build_networks(cfg.model)
    for key, net in nets.as_dict().items():
        net.load_state_dict(state["networks"][key])
        net.to(device).train()
    return nets, cfg, int(state["iteration"])


def measure(
    run: Path, which: str, batches: int, seed: int, device: torch.device
) -> tuple[int, dict[str, dict[str, float]]]:
    """The checkpoint's iteration and {network: {term: mean gradient norm over batches}}."""
    sys.path.insert(0, str(Path(__file__).parent))
    from ada_signal import load_scans  # noqa: E402 - the benchmark's sibling, read as training

    from ratgan.runs import read_run_data

    nets, cfg, iteration = load(run, which, device)
    batch = cfg.train.batch_size
    entries = read_run_data(run).entries[: batch * batches]
    if len(entries) < batch * batches:
        raise SystemExit(
            f"{run}: {len(entries)} training scans, fewer than {batches} batches of {batch}"
        )
    scans = load_scans([(e.image, e.label) for e in entries], cfg).to(device)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # G's output noise is drawn from the global stream, as in training
    sums: dict[str, dict[str, float]] = {}
    for x in scans.split(batch):
        z_r = torch.randn(len(x), cfg.model.latent_dim, generator=gen).to(device)
        for net, row in batch_norms(nets, cfg, x, z_r).items():
            for term, value in row.items():
                sums.setdefault(net, {}).setdefault(term, 0.0)
                sums[net][term] += value / batches
    return iteration, sums


def table(iteration: int, norms: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per term, a column per network."""
    nets = list(norms)
    lines = [
        f"| term (iteration {iteration}) | " + " | ".join(f"‖∇{n}‖" for n in nets) + " |",
        "|---|" + "---|" * len(nets),
    ]
    for term in (*TERMS, "total"):
        lines.append(f"| {term} | " + " | ".join(f"{norms[n][term]:.4g}" for n in nets) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--checkpoint", default="latest")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--csv", type=Path, help="also write the table as CSV")
    args = parser.parse_args(argv)
    if args.batches < 1:
        parser.error("--batches must be at least 1")
    iteration, norms = measure(
        args.run, args.checkpoint, args.batches, args.seed, torch.device(args.device)
    )
    print(table(iteration, norms))
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.csv.with_name(args.csv.name + ".tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["iteration", "network", "term", "gradient_norm"])
            for net, row in norms.items():
                writer.writerows([iteration, net, term, value] for term, value in row.items())
        tmp.replace(args.csv)
    return norms


if __name__ == "__main__":
    main()
