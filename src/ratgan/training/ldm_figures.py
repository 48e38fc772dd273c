"""Figures of a latent diffusion run: loss curves of both stages and its quality curves."""

from __future__ import annotations

from pathlib import Path

from ratgan.training.figures import plot_loss_panels, read_metrics

_LOSS_PANELS = {
    "autoencoder (stage 1)": ["ae_l1", "ae_kl", "ae_adv", "d_loss"],
    "diffusion (stage 2)": ["diff_mse"],
}
_QUALITY_PANELS = [
    ("frechet", "Fréchet distance ↓", True),
    ("rbf_mmd2", "RBF-MMD² ↓", False),
    ("precision", "precision ↑", False),
    ("recall", "recall ↑", False),
]


def plot_ldm_loss_curves(metrics_path: Path, out_png: Path) -> Path | None:
    """Each stage's logged losses against the iteration; None before any line."""
    return plot_loss_panels(
        metrics_path, out_png, _LOSS_PANELS, panel_width=4.4, log_when_positive=True
    )


def plot_ldm_quality_curves(metrics_path: Path, out_png: Path) -> Path | None:
    """Feature-space metrics of the samples against the iteration, with the autoencoder's
    reconstruction floor (its last value) as a dashed line; None before any evaluation."""
    from matplotlib.figure import Figure

    from ratgan.viz import save_figure

    samples = read_metrics(metrics_path, "quality")
    floor = read_metrics(metrics_path, "reconstruction")
    if not samples and not floor:
        return None
    fig = Figure(figsize=(3.6 * len(_QUALITY_PANELS), 3.2))
    for i, (key, title, log) in enumerate(_QUALITY_PANELS):
        ax = fig.add_subplot(1, len(_QUALITY_PANELS), i + 1)
        if samples:
            ax.plot(
                [r["iteration"] for r in samples],
                [r[key] for r in samples],
                marker="o",
                markersize=3,
                label="samples",
            )
            best = [r for r in samples if r.get("best")]
            ax.plot([r["iteration"] for r in best], [r[key] for r in best], "o", color="C3", ms=4)
        if floor:
            ax.axhline(floor[-1][key], color="C2", linestyle="--", label="autoencoder floor")
        values = [r[key] for r in samples + floor]
        if log and min(values) > 0:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out_png, dpi=100)
