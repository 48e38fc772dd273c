"""The evaluation report: report.md (tables shaped like the paper's Table 2), metrics.json
(every number) and figures (montage, mean/std maps, intensity histograms, memorisation)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ratgan.atomic import atomic_write_json, atomic_write_text
from ratgan.evaluation.anatomy_stage import anatomy_markdown

# metric key -> (column title, direction): "max", "min" or "target" (closest to the real value)
PAPER_COLUMNS = {
    "msssim": ("MS-SSIM (≈ real)", "target"),
    "ncc": ("NCC ↑", "max"),
    "mae": ("MAE ↓", "min"),
    "mmd": ("MMD ↓", "min"),
    "psnr": ("PSNR ↑", "max"),
    "rmse": ("RMSE ↓", "min"),
}
EXTRA_COLUMNS = {
    "rbf_mmd": ("RBF-MMD² ↓", "min"),
    "fd": ("Fréchet ↓", "min"),
    "precision": ("precision ↑", "max"),
    "recall": ("recall ↑", "max"),
    "intensity_w1": ("intensity W1 ↓", "min"),
    "mean_map_rmse": ("mean-map RMSE ↓", "min"),
    "std_map_rmse": ("std-map RMSE ↓", "min"),
}
DECIMALS = {"msssim": 4, "ncc": 4, "mae": 4, "mmd": 2, "psnr": 2, "rmse": 4, "rbf_mmd": 4,
            "fd": 2, "precision": 3, "recall": 3, "intensity_w1": 4, "mean_map_rmse": 4,
            "std_map_rmse": 4}
FIGURES = ("montage.png", "mean_std_maps.png", "intensity_histograms.png", "memorisation.png")


def value(row: dict, key: str) -> float | None:
    """The mean of metric ``key`` in a row (None when absent)."""
    v = row.get(key)
    if v is None:
        return None
    if isinstance(v, dict):
        v = v.get("mean")
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def score(key: str, v: float, direction: str, target: float | None) -> float:
    """A number where larger is better, for ranking rows on one metric."""
    if direction == "max":
        return v
    if direction == "min":
        return -v
    return -abs(v - (target if target is not None else v))


def beats(better: dict, worse: dict, real_msssim: float | None,
          keys: tuple[str, ...] = (*PAPER_COLUMNS, *EXTRA_COLUMNS)) -> dict[str, bool]:
    """For each metric, whether row ``better`` scores strictly better than row ``worse``."""
    columns = {**PAPER_COLUMNS, **EXTRA_COLUMNS}
    out = {}
    for key in keys:
        a, b = value(better, key), value(worse, key)
        if a is None or b is None:
            continue
        direction = columns[key][1]
        out[key] = score(key, a, direction, real_msssim) > score(key, b, direction, real_msssim)
    return out


def _fmt(row: dict, key: str, bold: bool) -> str:
    v = row.get(key)
    if v is None:
        return "—"
    d = DECIMALS.get(key, 4)
    if isinstance(v, dict):
        if v.get("mean") is None or math.isnan(v["mean"]):
            return "—"
        text = f"{v['mean']:.{d}f} ± {v['std']:.{d}f}"
    else:
        text = f"{v:.{d}f}"
    return f"**{text}**" if bold else text


def table(results: dict, columns: dict[str, tuple[str, str]]) -> str:
    """A Markdown table: the real reference row, then one row per synthetic set, best bold."""
    rows = results["rows"]
    ref = results["reference_row"]
    target = value(rows[ref], "msssim")
    synth = [n for n, r in rows.items() if r["role"] == "synthetic"]
    best: dict[str, set[str]] = {}
    for key, (_, direction) in columns.items():
        scored = [(score(key, value(rows[n], key), direction, target), n)
                  for n in synth if value(rows[n], key) is not None]
        if len(scored) > 1:
            top = max(s for s, _ in scored)
            best[key] = {n for s, n in scored if s == top}
    lines = ["| set | " + " | ".join(t for t, _ in columns.values()) + " |",
             "|---|" + "---|" * len(columns)]
    lines.append(f"| *{ref}* | " + " | ".join(
        f"*{_fmt(rows[ref], k, False)}*" if rows[ref].get(k) is not None else "—"
        for k in columns) + " |")
    for n in synth:
        lines.append(f"| {n} | " + " | ".join(_fmt(rows[n], k, n in best.get(k, set()))
                                             for k in columns) + " |")
    return "\n".join(lines)


def memorisation_table(results: dict) -> str:
    """Nearest-training-scan NCC of each synthetic set beside the real reference."""
    rows = results["rows"]
    ref = rows[results["reference_row"]]["memorisation"]
    lines = ["| set | nearest training NCC: median | max | threshold | near-copies |",
             "|---|---|---|---|---|",
             (f"| *{results['reference_row']}* | *{np.median(ref['nn_ncc']):.4f}* | "
              f"*{ref['nn_ncc_max']:.4f}* | — | — |")]
    for n, r in rows.items():
        if r["role"] != "synthetic":
            continue
        m = r["memorisation"]
        lines.append(f"| {n} | {m['nn_ncc_median']:.4f} | {m['nn_ncc_max']:.4f} | "
                     f"{m['threshold']:.4f} | {m['near_copies']} / {len(m['nn_ncc'])} "
                     f"({100 * m['fraction']:.1f}%) |")
    return "\n".join(lines)


def markdown(results: dict) -> str:
    """The whole report.md text."""
    s = results["settings"]
    ms = s["msssim"]
    f = results["features"]
    sets = results["sets"]
    set_lines = "\n".join(
        f"- **{name}**: {info['n']} scans from `{info['generated_from'] or info['source']}`"
        + (" (generated from this run)" if info["generated_from"] else "")
        + ("; " + "; ".join(info["notes"]) if info["notes"] else "")
        for name, info in sets.items())
    ref = results["reference_row"]
    ref_text = ("held-out real scans paired with the real scans"
                if "held-out" in sets else "pairs of distinct real scans")
    level = ("the real set against a held-out real set" if f.get("split") == "real vs held-out"
             else "one random half of the real set against the other half")
    maps_ref = ("held-out vs real" if "held-out" in sets
                else "one half of the real set vs the other half")
    skipped = f"\n\n*Set-level distances skipped: {f['skipped']}.*" if f.get("skipped") else ""
    return f"""# ratgan evaluation report

Volumes: {results['shape'][0]}x{results['shape'][1]}x{results['shape'][2]}, each rescaled to
[0, 1] (min/max) and cropped to the real scans' slices (SPEC section 5). Seed {s['seed']}.

{set_lines}

## Paper metrics (Table 2 protocol)

MS-SSIM: {s['msssim_comparisons']} random pairs of distinct scans *inside* each set (diversity:
the synthetic value should be close to the real one, not close to 1). NCC, MAE, MMD, PSNR,
RMSE: {s['comparisons']} random (real, synthetic) pairs. Mean ± std over the comparisons.
The first row, *{ref}*, is the target: the same metrics for {ref_text}. Bold: the best
synthetic set (MS-SSIM: closest to the real value).

{table(results, PAPER_COLUMNS)}

MS-SSIM: MONAI, {ms['scales']} scales (coarsest {'x'.join(map(str, ms['coarsest_scale_shape']))}
voxels), Gaussian window {ms['kernel_size']} voxels, sigma {ms['kernel_sigma']}, data range
{ms['data_range']}, weights {', '.join(f'{w:.4f}' for w in ms['weights'])} (Wang et al.'s first
{ms['scales']} weights renormalised). MMD is Kwon et al.'s linear-kernel form per pair: the
sum of squared voxel differences (a linear kernel compares mean images only). PSNR uses data range 1.

## Beyond the paper: distribution distances

In a fixed random 3D convolutional feature space ({f['dim']} features, seed {f['seed']}; not
trained on anything, so it sees intensity, edges and texture, not anatomy). Each set is
compared with a reference real subset of {f.get('reference_size', '—')} scans; the first row
is {level} (what a perfect generator scores). Subsets of {f.get('subset_size', '—')} scans,
{f.get('repeats', '—')} repeats, mean ± std over repeats; k = {f.get('knn_k', '—')} for
precision/recall. Intensity W1: Wasserstein-1 distance between the voxel intensity histograms of the set and of
the real set; mean/std-map RMSE: between their per-voxel mean (std) maps (first row:
{maps_ref}).{skipped}

{table(results, EXTRA_COLUMNS)}

{anatomy_markdown(results)}
## Memorisation

For each synthetic scan, its most similar training (real) scan by global NCC; the reference
is {rows_rule(results)}. A synthetic scan more similar to a training scan than the threshold
is flagged as a near-copy (threshold: {threshold_rule(results)}).

{memorisation_table(results)}

## Figures

- `montage.png`: the central axial slice of scans from every set
- `mean_std_maps.png`: per-voxel mean and standard deviation of each set
- `intensity_histograms.png`: voxel intensity distributions
- `memorisation.png`: nearest-training-scan NCC of synthetic vs real scans

Every number is in `metrics.json`. Time: {results['timing_s']['total']:.0f} s.
"""


def rows_rule(results: dict) -> str:
    """How the memorisation reference was formed."""
    return results["rows"][results["reference_row"]]["memorisation"]["rule"]


def threshold_rule(results: dict) -> str:
    """How the near-copy threshold was chosen."""
    t = results["settings"]["copy_threshold"]
    return ("the largest nearest-neighbour NCC among the real reference scans" if t is None
            else f"{t} (given)")


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(results: dict, path: Path) -> None:
    """metrics.json: every number of the results (figures' arrays left out), atomically."""
    data = {k: v for k, v in results.items() if not k.startswith("_")}
    atomic_write_json(path, _json_safe(data), ensure_ascii=False)


# --------------------------------------------------------------------------- figures


def _slices(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central axial (slice axis 2) and coronal (axis 1) planes, oriented for imshow."""
    _, y, z = volume.shape
    return volume[:, :, z // 2].T, volume[:, y // 2, :].T


def _extents(shape: tuple[int, ...], zooms: tuple[float, ...]) -> tuple[tuple, tuple]:
    """imshow extents (mm) of the axial and coronal planes, so that pixels keep their size."""
    x, y, z = (s * float(v) for s, v in zip(shape, zooms))
    return (0, x, 0, y), (0, x, 0, z)


def figure_montage(results: dict, path: Path, per_set: int = 8) -> None:
    """Central axial slice of up to ``per_set`` scans of every set."""
    from matplotlib.figure import Figure

    from ratgan.viz import save_figure

    arr = results["_arrays"]
    sets = [("real", arr["real"])]
    if arr["heldout"] is not None:
        sets.append(("held-out real", arr["heldout"]))
    sets += [(s.name, s) for s in arr["synthetic"]]
    ext = _extents(arr["real"].shape, arr["real"].zooms)[0]
    cols = min(per_set, max(len(s) for _, s in sets))
    fig = Figure(figsize=(1.6 * cols, 1.5 * len(sets)))
    axes = fig.subplots(len(sets), cols, squeeze=False)
    for r, (name, s) in enumerate(sets):
        for c in range(cols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(s):
                ax.imshow(_slices(s.volumes[c])[0], cmap="gray", vmin=0, vmax=1,
                          origin="lower", extent=ext)
        axes[r, 0].set_title(name, loc="left", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def figure_maps(results: dict, path: Path) -> None:
    """Per-voxel mean and std maps (axial and coronal) of every set, and |mean - real mean|."""
    from matplotlib.figure import Figure

    from ratgan.viz import save_figure

    arr = results["_arrays"]
    maps = arr["maps"]
    ref = results["reference_row"]
    real_mean = maps[ref][0]
    names = list(maps)
    ext_ax, ext_cor = _extents(real_mean.shape, arr["real"].zooms)
    mean_max = float(real_mean.max()) or 1.0
    std_max = max(float(m[1].max()) for m in maps.values()) or 1.0
    diff_max = max([0.05] + [float(np.percentile(np.abs(m[0] - real_mean), 99.5))
                             for n, m in maps.items() if n != ref])
    titles = ["mean (axial)", "mean (coronal)", "std (axial)", "std (coronal)",
              "|mean - real mean| (axial)"]
    fig = Figure(figsize=(12, 2.3 * len(names)))
    axes = fig.subplots(len(names), 5, squeeze=False)
    for r, name in enumerate(names):
        mean, std = maps[name]
        panels = [(_slices(mean)[0], mean_max, "gray", ext_ax),
                  (_slices(mean)[1], mean_max, "gray", ext_cor),
                  (_slices(std)[0], std_max, "magma", ext_ax),
                  (_slices(std)[1], std_max, "magma", ext_cor),
                  (_slices(np.abs(mean - real_mean))[0], diff_max, "viridis", ext_ax)]
        for c, (img, vmax, cmap, ext) in enumerate(panels):
            ax = axes[r, c]
            im = ax.imshow(img, cmap=cmap, vmin=0, vmax=vmax, origin="lower", extent=ext)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
            if r == len(names) - 1:
                fig.colorbar(im, ax=ax, orientation="horizontal", fraction=0.05, pad=0.04)
        axes[r, 0].set_ylabel("real" if name == ref else name, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def figure_histograms(results: dict, path: Path) -> None:
    """Voxel intensity distributions of every set (log density)."""
    from matplotlib.figure import Figure

    from ratgan.viz import save_figure

    bins = results["histogram_bins"]
    centres = (np.arange(bins) + 0.5) / bins
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    for name, h in results["intensity_histograms"].items():
        style = {"color": "k", "lw": 2} if name == results["reference_row"] else {"lw": 1.2}
        label = "real" if name == results["reference_row"] else name
        ax.plot(centres, np.asarray(h) * bins, label=label, **style)
    ax.set_yscale("log")
    ax.set_xlabel("intensity (rescaled to [0, 1])")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def figure_memorisation(results: dict, path: Path) -> None:
    """Histograms of nearest-training-scan NCC, real reference vs each synthetic set: the
    whole range (left) and zoomed on the real reference's range (right)."""
    from matplotlib.figure import Figure

    from ratgan.viz import save_figure

    rows = results["rows"]
    ref = np.asarray(rows[results["reference_row"]]["memorisation"]["nn_ncc"])
    synth = {n: r["memorisation"] for n, r in rows.items() if r["role"] == "synthetic"}
    lo_all = min([float(ref.min())] + [float(np.min(m["nn_ncc"])) for m in synth.values()])
    zoom_lo = max(-1.0, float(ref.min()) - 2 * (1 - float(ref.min())) - 1e-3)
    fig = Figure(figsize=(10, 3.6))
    axes = fig.subplots(1, 2)
    for ax, lo in zip(axes, (min(lo_all, zoom_lo), zoom_lo)):
        edges = np.linspace(lo, 1.0, 41)
        ax.hist(np.clip(ref, lo, 1), bins=edges, density=True, histtype="stepfilled",
                alpha=0.35, color="k", label="real reference")
        for name, m in synth.items():
            ax.hist(np.clip(m["nn_ncc"], lo, 1), bins=edges, density=True, histtype="step",
                    lw=1.5, label=f"{name} ({m['near_copies']} near-copies)")
        if synth:
            ax.axvline(next(iter(synth.values()))["threshold"], color="r", ls="--", lw=1,
                       label="near-copy threshold")
        ax.set_xlabel("NCC with the most similar training scan")
        ax.set_ylabel("density")
    axes[0].set_title("all", fontsize=9)
    axes[1].set_title("zoom on the real range (lower values piled at the left edge)", fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def write_report(results: dict, out_dir: Path, figures: bool = True) -> dict[str, Path]:
    """Write report.md, metrics.json and the figures into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"report": out_dir / "report.md", "metrics": out_dir / "metrics.json"}
    if figures:
        for fn, name in zip((figure_montage, figure_maps, figure_histograms,
                             figure_memorisation), FIGURES):
            fn(results, out_dir / name)
            paths[name] = out_dir / name
    write_json(results, paths["metrics"])
    atomic_write_text(paths["report"], markdown(results))
    return paths
