"""Figures a training run writes: loss curves (paper Fig. 8) and sample montages (Fig. 9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ratgan.arrays import FloatArray
from ratgan.config import Config

if TYPE_CHECKING:
    from ratgan.data.transforms import PreprocessInfo

# Which logged terms go in which panel of the loss-curve figure.
_PANELS = {
    "encoder / generator": ["eg_total", "eg_l_gd", "eg_c_enc"],
    "reconstruction": ["eg_l1", "eg_mse", "eg_gdl"],
    "discriminator": ["d_total", "d_gp"],
    "code discriminator": ["c_total", "c_gp"],
}


def read_metrics(metrics_path: Path, kind: str | None) -> list[dict[str, Any]]:
    """The lines of metrics.jsonl of one kind: None for the loss lines, "quality" for the
    feature-space metrics that ``train.eval_every`` writes."""
    path = Path(metrics_path)
    if not path.is_file():
        return []
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return [r for r in rows if r.get("kind") == kind]


def plot_quality_curves(metrics_path: Path, out_png: Path) -> Path | None:
    """Feature-space metrics and the encoder's health against the iteration (one panel each,
    the mean-scan baseline beside the reconstruction error); None before any."""
    from matplotlib.figure import Figure

    from ratgan.viz import save_figure

    rows = read_metrics(metrics_path, "quality")
    if not rows:
        return None
    panels = [
        ("frechet", "Fréchet distance ↓", True),
        ("rbf_mmd2", "RBF-MMD² ↓", False),
        ("precision", "precision ↑", False),
        ("recall", "recall ↑", False),
        ("code_cosine", "encoder: code cosine ↓ (prior: 0)", False),
        ("code_top_share", "encoder: variance on 1st axis ↓", False),
        ("rec_mse", "encoder: reconstruction MSE ↓", True),
    ]
    panels = [p for p in panels if p[0] in rows[0]]
    baselines = {
        "rec_mse": ("mean_scan_mse", "mean scan"),
        "code_top_share": ("prior_top_share", "prior codes"),
    }
    cols = min(len(panels), 4)
    n_rows = -(-len(panels) // cols)
    fig = Figure(figsize=(3.6 * cols, 3.2 * n_rows))
    its = [r["iteration"] for r in rows]
    for i, (key, title, log) in enumerate(panels):
        ax = fig.add_subplot(n_rows, cols, i + 1)
        ax.plot(its, [r[key] for r in rows], marker="o", markersize=3, linewidth=1.2)
        best = [r for r in rows if r.get("best")]
        if best and key in ("frechet", "rbf_mmd2", "precision", "recall"):
            ax.plot(
                [r["iteration"] for r in best],
                [r[key] for r in best],
                "o",
                color="C3",
                markersize=4,
                label="new best",
            )
            ax.legend(fontsize=7)
        if key in baselines and baselines[key][0] in rows[0]:
            base_key, label = baselines[key]
            ax.plot(its, [r[base_key] for r in rows], "--", color="k", linewidth=1, label=label)
            ax.legend(fontsize=7)
        if log and min(r[key] for r in rows) > 0:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out_png, dpi=100)


def plot_loss_curves(metrics_path: Path, out_png: Path) -> Path | None:
    """Plot every logged loss against the iteration; None when nothing is logged yet."""
    return plot_loss_panels(metrics_path, out_png, _PANELS, panel_width=4.2)


def plot_loss_panels(
    metrics_path: Path,
    out_png: Path,
    panels: dict[str, list[str]],
    panel_width: float,
    log_when_positive: bool = False,
) -> Path | None:
    """One panel per entry of ``panels`` (title -> logged keys), each key against the
    iteration over the lines that carry it; a log axis where ``log_when_positive`` and every
    plotted value is positive.  None when nothing is logged yet."""
    from matplotlib.figure import Figure

    from ratgan.viz import save_figure

    rows = read_metrics(metrics_path, kind=None)
    if not rows:
        return None
    fig = Figure(figsize=(panel_width * len(panels), 3.4))
    axes = fig.subplots(1, len(panels))
    for ax, (title, keys) in zip(axes, panels.items(), strict=True):
        for key in keys:
            have = [r for r in rows if key in r]
            if have:
                ax.plot([r["iteration"] for r in have], [r[key] for r in have], label=key, lw=1.2)
        if ax.lines:
            positive = all(v > 0 for ln in ax.lines for v in ln.get_ydata())
            if log_when_positive and positive:
                ax.set_yscale("log")
            ax.legend(fontsize=7)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out_png, dpi=100)


@torch.no_grad()
def generate_source_space(
    generator: torch.nn.Module,
    z: torch.Tensor,
    info: PreprocessInfo,
    cfg: Config,
    device: torch.device,
) -> list[FloatArray]:
    """Scans (channel 0) from latent codes, mapped back to the source grid and intensities."""
    from ratgan.data.transforms import inverse_preprocess

    was_training = generator.training
    generator.eval()
    try:
        with torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16"
        ):
            # Fixed output noise (when G has it), so montages do not consume the training's
            # random stream.
            shape = (len(z), cfg.model.channels, *cfg.model.volume_shape)
            noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
            out = generator(z.to(device), noise=noise.to(device)).float().cpu().numpy()
    finally:
        generator.train(was_training)
    return [inverse_preprocess(v[0], info) for v in out]


def save_sample_montage(
    generator: torch.nn.Module,
    z: torch.Tensor,
    info: PreprocessInfo,
    cfg: Config,
    out_png: Path,
    device: torch.device,
) -> Path:
    """Axial slices of scans generated from fixed codes, one row per scan."""
    from ratgan.viz import montage

    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    volumes = generate_source_space(generator, z, info, cfg, device)
    return montage(
        [[v] for v in volumes],
        out_png,
        row_titles=[f"sample {i}" for i in range(len(volumes))],
        axis=2,
        n_slices=8,
    )
