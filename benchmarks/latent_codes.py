"""Benchmark: do G's scans get closer to real ones when its codes come from the encoder's codes
of real scans instead of the prior?

    python benchmarks/latent_codes.py RUN --checkpoint CKPT --heldout HELD_IMAGES --out DIR
        [--n 64] [--seed 1] [--device cpu] [--prior-scales 1.2 1.4] [--kde-widths 0.5 1]
        [--sets prior prior-x1.2 kde-0.5] [--no-output-noise] [--optimise-codes STEPS]
        [--weights ema|raw]

An alpha-GAN trains G on two kinds of code: prior codes z ~ N(0, I) and the encoder's codes
E(x) of training scans (the reconstruction path).  With standardised codes
(``model.e_standardise``) every dimension of E(x) has the prior's mean and variance over a
batch, but the codes' joint distribution need not be the prior's, so G(z) may land where G
never learnt real anatomy.  This writes, from one checkpoint (EMA weights of G where the run
keeps them, or its trained weights with ``--weights raw``; E in evaluation mode), four sets of
``--n`` scans in the reference scan's space:

- ``prior/``: G(z), z ~ N(0, I), as ``ratgan generate`` samples (the same per-scan seeds);
- ``posterior/``: G(z), z ~ N(m, S), the Gaussian fitted to E's codes of the run's training
  scans (Ledoit-Wolf shrinkage of the covariance, as there are fewer scans than dimensions),
  with the same output noise as ``prior/``: "ex-post density estimation" (Ghosh et al. 2020);
- ``recon-held/``: G(E(x)) of ``--n`` held-out scans: what G makes of codes of scans it never
  saw (the reconstruction path's quality bound);
- ``recon-train/``: G(E(x)) of ``--n`` training scans;
- ``prior-x<s>/`` for each ``--prior-scales s``: G(s z), the prior codes of ``prior/`` scaled
  by s (s > 1 spreads the samples beyond the prior: the opposite of the truncation trick).
  ``--sets`` writes only the named sets;
- ``kde-<w>/`` for each ``--kde-widths w``: G(E(x_j) + w z), a training scan's code (j drawn
  per scan from the scan's seed) plus w times the scan's prior code: sampling from a kernel
  density of the training scans' codes instead of one Gaussian (ex-post density estimation
  with a mixture, as in Ghosh et al. 2020).  Small w reconstructs training scans, so read these
  sets with the memorisation check of ``ratgan evaluate``;
- ``recon-train-opt/`` with ``--optimise-codes STEPS``: the training scans' codes refined by
  STEPS Adam steps on the error of G's noise-free output (G frozen): is what G draws of a scan
  limited by E's code or by what G can draw at all?

``--no-output-noise`` writes every set without G's output noise (its noise-free output).
It also prints the code statistics (mean code length over the prior's, the largest eigenvalues
of the codes' covariance, the share of their variance on the first principal axis beside that
of as many prior codes); ``--codes-only`` stops there.  Evaluate the sets with ``ratgan evaluate
--real TRAIN --heldout HELD --synthetic prior=DIR/prior posterior=DIR/posterior ...``.  Not
part of pass/fail (tests/training/test_latent_codes.py runs it on a tiny run and checks the
Gaussian fit against a known covariance).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

SETS = ("prior", "posterior", "recon-held", "recon-train")


def fit_gaussian(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, covariance, shrinkage) of ``codes`` (N, L): Ledoit-Wolf shrinkage towards a scaled
    identity, well-conditioned even for N < L (scikit-learn's estimator)."""
    from sklearn.covariance import LedoitWolf

    fit = LedoitWolf().fit(np.asarray(codes, dtype=np.float64))
    return fit.location_, fit.covariance_, float(fit.shrinkage_)


def gaussian_codes(
    mean: np.ndarray, cov: np.ndarray, seeds: list[int], latent_dim: int
) -> torch.Tensor:
    """One code per seed from N(mean, cov): the prior code of that seed (``ratgan generate``'s)
    mapped through the Cholesky factor, so each scan pairs with its prior twin."""
    from ratgan.generation.sample import latent_codes

    white = latent_codes(seeds, latent_dim).double().numpy()
    factor = np.linalg.cholesky(cov)
    return torch.from_numpy(mean + white @ factor.T).float()


@torch.no_grad()
def encode(encoder: torch.nn.Module, scans: torch.Tensor, bf16: bool, batch: int = 8) -> Any:
    """E's codes (N, L) of network-space scans, E in evaluation mode."""
    encoder.eval()
    out = []
    for part in scans.split(batch):
        with torch.autocast(part.device.type, dtype=torch.bfloat16, enabled=bf16):
            out.append(encoder(part).reshape(len(part), -1).float())
    return torch.cat(out)


def _steps(text: str) -> int:
    """A number of optimisation steps, 0 or more (argparse type)."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"a number of steps, 0 or more, not {text!r}")
    return int(text)


def optimise_codes(
    generator: torch.nn.Module, scans: torch.Tensor, codes: torch.Tensor, steps: int, bf16: bool
) -> tuple[torch.Tensor, list[float]]:
    """Codes refined from ``codes`` by ``steps`` Adam steps (lr 0.02) on the mean squared error
    of G's noise-free output against ``scans``, G frozen: what G can draw of each scan when the
    code is not limited by what E extracts.  Returns the codes and the error before each step
    and after the last."""
    generator.eval()
    for param in generator.parameters():
        param.requires_grad_(False)
    zero = torch.zeros_like(scans)

    def error(z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(scans.device.type, dtype=torch.bfloat16, enabled=bf16):
            return ((generator(z, noise=zero).float() - scans) ** 2).mean()

    z = codes.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.02)
    history = []
    for _ in range(steps):
        opt.zero_grad()
        loss = error(z)
        history.append(float(loss.detach()))
        loss.backward()
        opt.step()
    with torch.no_grad():
        history.append(float(error(z)))
    return z.detach(), history


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from ratgan.data.io import list_scans
    from ratgan.generation.code_density import kde_codes
    from ratgan.generation.sample import (
        _export,
        _reference,
        latent_codes,
        load_generator,
        output_noise,
        sample_volumes,
        scan_seed,
    )
    from ratgan.models.discriminator import Encoder
    from ratgan.runs import read_run_data
    from ratgan.training import checkpoint as ckpt
    from ratgan.training.encoder_health import top_share

    sys.path.insert(0, str(Path(__file__).parent))
    from ada_signal import load_scans  # noqa: E402 - the benchmark's sibling, read as training

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--checkpoint", default="latest")
    parser.add_argument("--heldout", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--codes-only", action="store_true", help="only the code statistics")
    parser.add_argument("--prior-scales", type=float, nargs="*", default=[])
    parser.add_argument("--kde-widths", type=float, nargs="*", default=[])
    parser.add_argument("--sets", nargs="*", help="write only these sets (default: all)")
    parser.add_argument(
        "--no-output-noise", action="store_true",
        help="write G's noise-free output (a generator with output noise draws it as zero)",
    )  # fmt: skip
    parser.add_argument(
        "--optimise-codes", type=_steps, default=0, metavar="STEPS",
        help="also write recon-train-opt/: the training scans' codes refined by STEPS Adam steps",
    )  # fmt: skip
    parser.add_argument(
        "--weights", choices=("ema", "raw"), default="ema",
        help="G's moving average where the run keeps one (default), or its trained weights",
    )  # fmt: skip
    args = parser.parse_args(argv)

    loaded = load_generator(args.run, args.checkpoint, device=args.device, weights=args.weights)
    cfg = loaded.config
    if cfg.data.label_channels:
        raise SystemExit("joint image+label models are not supported by this benchmark")
    state = ckpt.load_checkpoint(loaded.checkpoint, map_location="cpu", mmap=True)
    encoder = Encoder(cfg.model)
    encoder.load_state_dict(state["networks"]["E"])
    encoder.to(loaded.device)
    bf16 = cfg.train.precision == "bf16"
    train_entries = read_run_data(args.run).entries
    held_entries = list_scans(args.heldout)
    train = load_scans([(e.image, e.label) for e in train_entries], cfg).to(loaded.device)
    held_files = [(Path(e.image).resolve(), None) for e in held_entries[: args.n]]
    held = load_scans(held_files, cfg).to(loaded.device)
    codes_train = encode(encoder, train, bf16)
    codes_held = encode(encoder, held, bf16)
    mean, cov, shrinkage = fit_gaussian(codes_train.cpu().numpy())

    latent = cfg.model.latent_dim
    n = args.n
    seeds = [scan_seed(args.seed, i) for i in range(n)]
    shape = (cfg.model.channels, *cfg.model.volume_shape)
    noise = output_noise(seeds, shape) if cfg.model.g_output_noise else None
    if noise is not None and args.no_output_noise:
        noise = torch.zeros_like(noise)
    codes = {
        "prior": latent_codes(seeds, latent),
        "posterior": gaussian_codes(mean, cov, seeds, latent),
        "recon-held": codes_held[:n].cpu(),
        "recon-train": codes_train[:n].cpu(),
    }
    if args.optimise_codes:
        refined, history = optimise_codes(
            loaded.generator, train[:n], codes_train[:n], args.optimise_codes, bf16
        )
        codes["recon-train-opt"] = refined.cpu()
        print(f"recon-train-opt: MSE {history[0]:.6f} with E's codes, {history[-1]:.6f} refined")
    for scale in args.prior_scales:
        codes[f"prior-x{scale:g}"] = scale * codes["prior"]
    for width in args.kde_widths:  # as `ratgan generate --codes kde --kde-width w` draws them
        codes[f"kde-{width:g}"] = kde_codes(codes_train.cpu(), seeds, codes["prior"], width)
    if args.sets:
        unknown = sorted(set(args.sets) - set(codes))
        if unknown:
            raise SystemExit(f"--sets: unknown set(s) {unknown}; known: {sorted(codes)}")
        codes = {name: codes[name] for name in args.sets}
    if not args.codes_only:
        scan, info = _reference(args.run, None, cfg)
        suffix = ".nii.gz" if str(scan.path).endswith(".gz") else ".nii"
        for name, z in codes.items():
            folder = args.out / name
            folder.mkdir(parents=True, exist_ok=True)
            k = len(z)
            for start in range(0, k, 8):
                part = slice(start, min(k, start + 8))
                vols = sample_volumes(loaded, z[part], None if noise is None else noise[part])
                for offset, vol in enumerate(vols):
                    file = f"synthetic_{start + offset:05d}{suffix}"
                    _export(vol, folder, file, scan, info, {}, False)
    prior_len = float(np.sqrt(latent))
    prior_seeds = [scan_seed(args.seed + 1, i) for i in range(len(codes_train))]  # as many
    eig = np.linalg.eigvalsh(np.cov(codes_train.cpu().numpy().T))[::-1]
    summary = {
        "checkpoint": str(loaded.checkpoint),
        "iteration": loaded.iteration,
        "weights": args.weights,
        "train_code_length_ratio": float(codes_train.norm(dim=1).mean()) / prior_len,
        "held_code_length_ratio": float(codes_held.norm(dim=1).mean()) / prior_len,
        "posterior_mean_length": float(np.linalg.norm(mean)),
        "ledoit_wolf_shrinkage": shrinkage,
        "covariance_top_eigenvalues": [round(float(v), 3) for v in eig[:8]],
        "covariance_trace_over_prior": float(np.trace(cov)) / latent,
        "train_code_top_share": top_share(codes_train.cpu()),
        "prior_code_top_share": top_share(latent_codes(prior_seeds, latent)),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "codes.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
