"""`ratgan demo`: the whole pipeline on the built-in phantom cohort, with a report.

phantom cohort -> train the `demo` preset -> generate scans -> evaluate -> report.md.
Like the CLI, this module sits on top of every stage; re-running it on the same folder
continues an interrupted training run instead of starting again.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from ratgan.atomic import atomic_write_text
from ratgan.config import load_config
from ratgan.data.io import list_scans, read_scan
from ratgan.runs import run_paths
from ratgan.training import checkpoint as ckpt


@contextlib.contextmanager
def _stage(name: str, timings: dict[str, float], progress: bool) -> Iterator[None]:
    """Time a stage into ``timings`` and announce it."""
    if progress:
        print(f"[ratgan demo] {name} ...", flush=True)
    t0 = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - t0


def run_demo(out: str | Path, subjects: int = 64, iterations: int | None = None,
             n_synthetic: int = 32, seed: int = 0, device: str = "auto",
             progress: bool = True) -> Path:
    """Run the demo into ``out`` and return the path of its Markdown report."""
    from ratgan.data.phantom import write_cohort
    from ratgan.generation import generate_scans
    from ratgan.training.figures import plot_loss_curves
    from ratgan.training.run import train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    data_dir, run_dir, synth_dir = out / "phantom", out / "run", out / "synthetic"

    with _stage("phantom cohort", timings, progress):
        images = data_dir / "images"
        if not images.is_dir() or len(list(images.iterdir())) != subjects:
            write_cohort(data_dir, subjects=subjects, seed=seed, progress=progress)

    overrides: dict = {"train.seed": seed, "train.device": device}
    if iterations is not None:
        overrides["train.iterations"] = iterations
    cfg = load_config("demo", overrides)
    with _stage("training", timings, progress):
        resume = bool(ckpt.list_checkpoints(run_dir))
        train(cfg, data_dir, run_dir, resume=resume, progress=progress)
        plot_loss_curves(run_paths(run_dir).metrics, run_paths(run_dir).loss_curves)

    with _stage("generation", timings, progress):
        generate_scans(run_dir, n_synthetic, synth_dir, seed=seed, device=device,
                       progress=progress)

    with _stage("figures", timings, progress):
        figures = _figures(data_dir, synth_dir, out / "figures")

    with _stage("evaluation", timings, progress):
        evaluation = _evaluate(data_dir, synth_dir, out / "evaluation", seed, progress)

    report = out / "report.md"
    _write_report(report, cfg, run_dir, figures, evaluation, timings, subjects, n_synthetic)
    return report


def _figures(data_dir: Path, synth_dir: Path, fig_dir: Path) -> dict[str, Path]:
    from ratgan.viz import montage, orthogonal_views

    fig_dir.mkdir(parents=True, exist_ok=True)
    real = [read_scan(e.image) for e in list_scans(data_dir)[:3]]
    synth = [read_scan(e.image) for e in list_scans(synth_dir)[:3]]
    zooms = tuple(float(z) for z in real[0].header.get_zooms()[:3])
    views = orthogonal_views([s.data for s in real + synth], fig_dir / "real_vs_synthetic.png",
                             titles=[f"real {i + 1}" for i in range(len(real))]
                             + [f"synthetic {i + 1}" for i in range(len(synth))], zooms=zooms)
    axial = montage([[s.data] for s in real + synth], fig_dir / "axial_montage.png",
                    row_titles=[f"real {i + 1}" for i in range(len(real))]
                    + [f"synthetic {i + 1}" for i in range(len(synth))], axis=2, n_slices=8)
    return {"views": views, "axial": axial}


def _evaluate(data_dir: Path, synth_dir: Path, eval_dir: Path, seed: int,
              progress: bool) -> dict:
    """The paper's metrics for the demo (quick settings)."""
    from ratgan.evaluation import evaluate_sets

    return evaluate_sets(real=data_dir, synthetic={"demo": synth_dir}, out=eval_dir,
                         seed=seed, progress=progress, quick=True)


def _rel(path: Path, root: Path) -> str:
    return os.path.relpath(path, root)


def _write_report(report: Path, cfg, run_dir: Path, figures: dict[str, Path],
                  evaluation: dict, timings: dict[str, float], subjects: int,
                  n_synthetic: int) -> None:
    root = report.parent
    rows = [json.loads(ln) for ln in run_paths(run_dir).metrics.read_text().splitlines()]
    last = rows[-1]
    lines = [
        "# ratgan demo report",
        "",
        (f"Built-in phantom cohort of {subjects} rat-brain EPI scans (64x64x40), the `demo` "
         f"preset ({cfg.model.volume_size}^3, latent {cfg.model.latent_dim}, "
         f"{cfg.train.iterations} iterations, batch {cfg.train.batch_size}, "
         f"{cfg.train.precision}), {n_synthetic} synthetic scans."),
        "",
        "## Real and synthetic scans",
        "",
        f"![orthogonal views]({_rel(figures['views'], root)})",
        "",
        f"![axial slices]({_rel(figures['axial'], root)})",
        "",
        "## Training",
        "",
        f"![loss curves]({_rel(run_paths(run_dir).loss_curves, root)})",
        "",
        f"Last logged losses (iteration {last['iteration']}): "
        + ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k not in ("iteration", "seconds"))
        + ".",
        "",
    ]
    lines += ["## Evaluation", "", evaluation.get("table_markdown", ""), ""]
    for title, path in evaluation.get("figures", {}).items():
        lines += [f"![{title}]({_rel(Path(path), root)})", ""]
    lines += ["## Time", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in timings.items()]
    lines += [f"| total | {sum(timings.values()):.1f} |", ""]
    atomic_write_text(report, "\n".join(lines))
