"""Figures a training run writes: loss curves (paper Fig. 8) and sample montages (Fig. 9)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ratgan.config import Config

# Which logged terms go in which panel of the loss-curve figure.
_PANELS = {
    "encoder / generator": ["eg_total", "eg_l_gd", "eg_c_enc"],
    "reconstruction": ["eg_l1", "eg_mse", "eg_gdl"],
    "discriminator": ["d_total", "d_gp"],
    "code discriminator": ["c_total", "c_gp"],
}


def plot_loss_curves(metrics_path: Path, out_png: Path) -> Path | None:
    """Plot every logged loss against the iteration; None when nothing is logged yet."""
    from matplotlib.figure import Figure

    from ratgan.viz import save_figure

    if not Path(metrics_path).is_file():
        return None
    rows = [json.loads(ln) for ln in Path(metrics_path).read_text().splitlines() if ln.strip()]
    if not rows:
        return None
    its = [r["iteration"] for r in rows]
    fig = Figure(figsize=(4.2 * len(_PANELS), 3.4))
    axes = fig.subplots(1, len(_PANELS))
    for ax, (title, keys) in zip(axes, _PANELS.items()):
        for key in keys:
            if key in rows[0]:
                ax.plot(its, [r[key] for r in rows], label=key, linewidth=1.2)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out_png, dpi=100)


@torch.no_grad()
def generate_source_space(generator: torch.nn.Module, z: torch.Tensor, info, cfg: Config,
                          device: torch.device) -> list[np.ndarray]:
    """Scans (channel 0) from latent codes, mapped back to the source grid and intensities."""
    from ratgan.data.transforms import inverse_preprocess

    was_training = generator.training
    generator.eval()
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16,
                            enabled=cfg.train.precision == "bf16"):
            out = generator(z.to(device)).float().cpu().numpy()
    finally:
        generator.train(was_training)
    return [inverse_preprocess(v[0], info) for v in out]


def save_sample_montage(generator: torch.nn.Module, z: torch.Tensor, info, cfg: Config,
                        out_png: Path, device: torch.device) -> Path:
    """Axial slices of scans generated from fixed codes, one row per scan."""
    from ratgan.viz import montage

    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    volumes = generate_source_space(generator, z, info, cfg, device)
    return montage([[v] for v in volumes], out_png,
                   row_titles=[f"sample {i}" for i in range(len(volumes))], axis=2, n_slices=8)
