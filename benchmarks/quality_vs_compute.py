"""Benchmark: quality against CPU time, measured on scans the GAN never saw.

    python benchmarks/quality_vs_compute.py RUN [RUN ...] --real HELDOUT --out DIR
        [--n 64] [--every 1] [--seeds 1 [2 ...]] [--threads 2] [--device cpu] [--no-anatomy]
        [--archive DIR]

For every kept checkpoint of each run (``train.keep_checkpoints`` large enough to keep them),
generate ``--n`` scans with its EMA weights (raw where the run has no EMA) and evaluate them
with ``ratgan evaluate``'s code against ``--real``: held-out real scans with label maps
(``images/`` + ``labels/``), so that both feature spaces are measured (the anatomy network is
fitted once and cached).  The reference row splits the held-out scans in halves: what a perfect
generator scores.  The CPU time of a checkpoint is the run's ``cpu_seconds`` (process CPU
time, cumulative across resumes) at that iteration in metrics.jsonl.

Writes ``DIR/quality_vs_compute.csv`` (one row per checkpoint, plus the reference rows) and
``DIR/quality_vs_compute.png`` (each metric against CPU hours, the reference level dashed), and
prints the table.  A checkpoint already evaluated (its report exists) is not evaluated again,
so the benchmark can be rerun as a run grows.  ``--seeds 1 2 3`` generates each checkpoint's
scans with each generation seed and reports the mean over seeds, with the standard deviation of
both Fréchet distances (``*_fd_sd``, a band in the plot): with 64 scans, a checkpoint's
random-space Fréchet has a standard deviation of 8-15 % over generation seeds, about as much
as it moves between checkpoints.  ``--archive DIR`` also reads checkpoints of a run from
``DIR/<run folder name>/`` (copies kept before the run's rotation removed them).  A latent
diffusion run's checkpoints are evaluated from its second stage on: in the first there is no
sampler yet (its reconstruction floor: ``benchmarks/ldm_reconstruction.py``).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = (
    "run",
    "iteration",
    "cpu_hours",
    "random_fd",
    "random_precision",
    "random_recall",
    "random_density",
    "random_coverage",
    "anatomy_fd",
    "anatomy_precision",
    "anatomy_recall",
    "anatomy_density",
    "anatomy_coverage",
    "msssim",
    "spectral_x",
    "spectral_y",
    "spectral_z",
    "band_power_vs_real",
    "seeds",
    "random_fd_sd",
    "anatomy_fd_sd",
)


def cpu_hours_at(run: Path, iteration: int) -> float:
    """The run's cumulative process CPU time at ``iteration``, in hours (NaN if not logged)."""
    best = float("nan")
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line) if line.strip() else {}
        if row.get("iteration") == iteration and "cpu_seconds" in row:
            best = row["cpu_seconds"] / 3600
    return best


def checkpoints(run: Path, archive: Path | None = None) -> list[tuple[int, Path]]:
    """(iteration, path) of the run's checkpoints that can sample, oldest first: its rotating
    ones and those copied to ``archive/<run name>/``; an ldm run's from stage 2 on."""
    from ratgan.runs import read_run_config
    from ratgan.training.checkpoint import checkpoints_in

    cfg = read_run_config(run)
    first = cfg.ldm.autoencoder.iterations + 1 if cfg.family == "ldm" else 0
    found: dict[int, Path] = {}
    folders = [run / "checkpoints"] + ([archive / run.name] if archive is not None else [])
    for folder in folders:
        for iteration, path in checkpoints_in(folder):
            if iteration >= first:
                found.setdefault(iteration, path)
    return sorted(found.items())


def every_kth(kept: list[tuple[int, Path]], k: int) -> list[tuple[int, Path]]:
    """Every ``k``-th checkpoint from the first, and the last one always (the run's end)."""
    chosen = kept[::k]
    return chosen + [kept[-1]] if kept and chosen[-1] != kept[-1] else chosen


def _stat(value: Any) -> float:
    """A metric's mean whether it is stored as a number or a {mean, std} record."""
    if isinstance(value, dict):
        return float(value.get("mean", float("nan")))
    return float("nan") if value is None else float(value)


def summarise(metrics: dict[str, Any], row_name: str) -> dict[str, float]:
    """The curve's numbers of one row of an evaluation's metrics.json."""
    out: dict[str, float] = {}
    spaces = {s["name"]: s["rows"] for s in metrics["feature_spaces"]}
    for prefix, space in (("random", "random 3D conv"), ("anatomy", "anatomy")):
        rows = spaces.get(space, {})
        row = rows.get(row_name, {})
        out[f"{prefix}_fd"] = _stat(row.get("fd"))
        out[f"{prefix}_precision"] = _stat(row.get("precision"))
        out[f"{prefix}_recall"] = _stat(row.get("recall"))
        out[f"{prefix}_density"] = _stat(row.get("density"))  # NaN in reports older than it
        out[f"{prefix}_coverage"] = _stat(row.get("coverage"))
    out["msssim"] = _stat(metrics["rows"][row_name].get("msssim"))
    spectra = metrics.get("spectra", {})
    key = "real" if row_name == metrics["reference_row"] else row_name
    if key in spectra:
        for axis in ("x", "y", "z"):
            out[f"spectral_{axis}"] = spectra[key]["axis_to_diagonal"][axis]
        out["band_power_vs_real"] = spectra[key]["band_power"] / spectra["real"]["band_power"]
    return out


def combine_seeds(rows: list[dict[str, float]]) -> dict[str, float]:
    """One checkpoint's row from its rows of several generation seeds: the mean of each metric,
    the number of seeds and the sample standard deviation (ddof 1; NaN for one seed) of both
    Fréchet distances."""
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    out = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    out["seeds"] = float(len(rows))
    for space in ("random", "anatomy"):
        values = [r[f"{space}_fd"] for r in rows]
        out[f"{space}_fd_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return out


def set_name(run: Path, iteration: int, seed: int) -> str:
    """A checkpoint's set name; seed 1 keeps the name of reports written before --seeds."""
    return f"{run.name}@{iteration}" + ("" if seed == 1 else f"~seed{seed}")


def evaluate_checkpoint(
    run: Path,
    iteration: int,
    path: Path,
    real: Path,
    out: Path,
    n: int,
    anatomy: bool = True,
    device: str = "cpu",
    seed: int = 1,
) -> dict[str, Any]:
    """Generate and evaluate one checkpoint (reusing an earlier report); its metrics.json."""
    from ratgan.evaluation import EvaluationSettings, run_evaluation
    from ratgan.generation import generate_scans

    name = set_name(run, iteration, seed)
    report = out / "eval" / name
    if not (report / "metrics.json").is_file():
        gen = out / "gen" / name
        if not (gen / "manifest.json").is_file():
            generate_scans(
                run,
                n,
                gen,
                seed=seed,
                checkpoint=path,
                device=device,
                progress=False,
                precision="bf16",
            )
        settings = EvaluationSettings(
            seed=0,
            comparisons=300,
            msssim_comparisons=105,
            progress=False,
            anatomy=anatomy,
            device=device,
        )
        run_evaluation(real, {name: gen}, report, settings=settings, figures=False)
    metrics: dict[str, Any] = json.loads((report / "metrics.json").read_text())
    return metrics


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Each metric against CPU hours, one line per run, the held-out reference dashed."""
    from matplotlib.figure import Figure

    panels = [
        ("random_fd", "random space: Fréchet ↓", True),
        ("random_precision", "random space: precision ↑", False),
        ("random_recall", "random space: recall ↑", False),
        ("anatomy_fd", "anatomy space: Fréchet ↓", True),
        ("anatomy_precision", "anatomy space: precision ↑", False),
        ("anatomy_recall", "anatomy space: recall ↑", False),
        ("msssim", "MS-SSIM (≈ real)", False),
        ("spectral_y", "axis/diagonal power, y (≈ real)", True),
    ]
    fig = Figure(figsize=(16, 7))
    axes = fig.subplots(2, 4).ravel()
    runs = sorted({r["run"] for r in rows if r["run"] != "reference"})
    ref = next((r for r in rows if r["run"] == "reference"), None)
    for ax, (key, title, log) in zip(axes, panels, strict=True):
        for run in runs:
            mine = sorted((r for r in rows if r["run"] == run), key=lambda r: r["cpu_hours"])
            hours = [r["cpu_hours"] for r in mine]
            line = ax.plot(hours, [r[key] for r in mine], marker="o", ms=3, label=run)[0]
            sds = [r.get(f"{key}_sd", float("nan")) for r in mine]
            if any(sd == sd for sd in sds):  # ± one sd over generation seeds (--seeds)
                lo = [r[key] - sd for r, sd in zip(mine, sds, strict=True)]
                hi = [r[key] + sd for r, sd in zip(mine, sds, strict=True)]
                ax.fill_between(hours, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
        if ref is not None and ref.get(key) == ref.get(key):
            ax.axhline(ref[key], color="k", ls="--", lw=1, label="held-out real")
        if log:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("CPU hours (process time)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--real", type=Path, required=True, help="held-out scans with labels")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument(
        "--every", type=int, default=1, help="every K-th checkpoint (the last one always)"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[1],
        help="generation seeds per checkpoint (default 1); rows are means over them",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--device", default="cpu", help="cpu (default) or cuda: generation and features"
    )
    parser.add_argument("--archive", type=Path, help="also read checkpoints from DIR/<run name>/")
    parser.add_argument(
        "--no-anatomy",
        action="store_true",
        help="skip the anatomy space (its network trains until Dice 0.8 on first use)",
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    reference: dict[str, Any] | None = None
    for run in args.runs:
        for iteration, path in every_kth(checkpoints(run, args.archive), args.every):
            per_seed = []
            for seed in dict.fromkeys(args.seeds):  # a repeated seed would count twice
                metrics = evaluate_checkpoint(
                    run,
                    iteration,
                    path,
                    args.real,
                    args.out,
                    args.n,
                    not args.no_anatomy,
                    args.device,
                    seed,
                )
                per_seed.append(summarise(metrics, set_name(run, iteration, seed)))
            row = {
                "run": run.name,
                "iteration": iteration,
                "cpu_hours": cpu_hours_at(run, iteration),
                **combine_seeds(per_seed),
            }
            rows.append(row)
            if reference is None:
                reference = {
                    "run": "reference",
                    "iteration": 0,
                    "cpu_hours": float("nan"),
                    **summarise(metrics, metrics["reference_row"]),
                }
            print(
                " ".join(
                    f"{k}={row.get(k, float('nan')):.4g}"
                    if isinstance(row.get(k), float)
                    else f"{k}={row.get(k)}"
                    for k in COLUMNS
                ),
                flush=True,
            )
    if reference is not None:
        rows.append(reference)
    with open(args.out / "quality_vs_compute.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, args.out / "quality_vs_compute.png")
    print(f"wrote {args.out / 'quality_vs_compute.csv'} and quality_vs_compute.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
