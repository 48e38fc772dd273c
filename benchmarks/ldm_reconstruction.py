"""The autoencoder's reconstructions of real scans: the floor under a latent diffusion run.

    python benchmarks/ldm_reconstruction.py RUN --scans heldout/ --out recon/

A latent diffusion model can at best produce what its decoder can draw, so the distance of
the autoencoder's reconstructions of real scans to the real scans bounds its samples' scores.
This writes, for each scan of --scans, its reconstruction through the posterior mean (the
run's latest or --checkpoint autoencoder, clipped to [-1, 1] as generation does) with the
scan's own header, and prints the mean absolute error in network space; score the folder
with `ratgan evaluate --real heldout/ --synthetic recon=recon/` to get the floor in both
feature spaces.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ratgan.config import config_from_dict
from ratgan.data.io import list_scans, read_scan, write_nifti
from ratgan.data.transforms import inverse_preprocess, preprocess
from ratgan.models.ldm import build_autoencoder, decode
from ratgan.training import checkpoint as ckpt


def main() -> None:
    """Reconstruct every scan of --scans and write it to --out."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--scans", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    args = ap.parse_args()
    state = ckpt.load_checkpoint(ckpt.resolve_checkpoint(args.run, args.checkpoint))
    cfg = config_from_dict(state["config"])
    ae = build_autoencoder(cfg)
    ae.load_state_dict(state["networks"]["autoencoder"])
    ae.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    errors = []
    for entry in list_scans(args.scans):
        scan = read_scan(entry.image, cfg.data.volume_index)
        vol, info = preprocess(scan.data, cfg.data.target_shape, cfg.data.downsample)
        x = torch.from_numpy(vol)[None, None]
        bf16 = args.precision == "bf16"
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            mu = ae.encode(x)[0]
        with torch.no_grad():
            rec = decode(ae, mu.float(), bf16)[0, 0].numpy()
        errors.append(float(np.abs(rec - vol).mean()))
        write_nifti(
            args.out / Path(entry.image).name,
            inverse_preprocess(rec, info),
            scan.affine,
            scan.header,
        )
    print(
        json.dumps(
            {
                "iteration": int(state["iteration"]),
                "scans": len(errors),
                "l1_network_space_mean": round(float(np.mean(errors)), 5),
                "l1_network_space_std": round(float(np.std(errors)), 5),
            }
        )
    )


if __name__ == "__main__":
    main()
