"""The evaluation report: report.md (tables shaped like the paper's Table 2), metrics.json
(every number) and figures (montage, mean/std maps, intensity histograms, memorisation)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ratgan.atomic import atomic_write_json
from ratgan.evaluation.results import EvaluationResult, FeatureSpaceResult

STAGING_DIR = ".report-partial"
"""Hidden folder in which a report is written before it is moved into place."""

# metric key -> (column title, direction): "max", "min", "target" (closest to the real
# value) or "one" (closest to 1: k-NN density, whose expectation for a set drawn from the real
# distribution is exactly 1; above 1 means samples crowd where real scans are dense)
PAPER_COLUMNS = {
    "msssim": ("MS-SSIM (≈ real)", "target"),
    "ncc": ("NCC ↑", "max"),
    "mae": ("MAE ↓", "min"),
    "mmd": ("MMD ↓", "min"),
    "psnr": ("PSNR ↑", "max"),
    "rmse": ("RMSE ↓", "min"),
}
SET_COLUMNS = {
    "rbf_mmd": ("RBF-MMD² ↓", "min"),
    "fd": ("Fréchet ↓", "min"),
    "precision": ("precision ↑", "max"),
    "recall": ("recall ↑", "max"),
    "density": ("density (≈ 1)", "one"),
    "coverage": ("coverage ↑", "max"),
}
EXTRA_COLUMNS = {
    **SET_COLUMNS,
    "intensity_w1": ("intensity W1 ↓", "min"),
    "mean_map_rmse": ("mean-map RMSE ↓", "min"),
    "std_map_rmse": ("std-map RMSE ↓", "min"),
    "tail_gap": ("brightest-voxel gap ↓", "min"),
}
DECIMALS = {
    "msssim": 4,
    "ncc": 4,
    "mae": 4,
    "mmd": 2,
    "psnr": 2,
    "rmse": 4,
    "rbf_mmd": 4,
    "fd": 2,
    "precision": 3,
    "recall": 3,
    "density": 3,
    "coverage": 3,
    "intensity_w1": 4,
    "mean_map_rmse": 4,
    "std_map_rmse": 4,
    "tail_gap": 3,
    "mmd_p": 3,
}
P_COLUMN = {"mmd_p": ("p vs held-out", "none")}
"""The permutation p-value of RBF-MMD² against the held-out scans (only with --heldout).  Never
ranked or bolded: a large p is only a failure to tell the set from real scans, not evidence
that it is closer to them than a set with a smaller p."""
FIGURES = (
    "montage.png",
    "mean_std_maps.png",
    "intensity_histograms.png",
    "memorisation.png",
    "spectra.png",
)


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
    if direction == "one":
        return -abs(v - 1.0)
    return -abs(v - (target if target is not None else v))


def beats(
    better: dict,
    worse: dict,
    real_msssim: float | None,
    keys: tuple[str, ...] = (*PAPER_COLUMNS, *EXTRA_COLUMNS),
) -> dict[str, bool]:
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
        std = v.get("std", math.nan)
        text = f"{v['mean']:.{d}f}" + ("" if math.isnan(std) else f" ± {std:.{d}f}")
    else:
        text = f"{v:.{d}f}"
    return f"**{text}**" if bold else text


def row_metrics(
    result: EvaluationResult, name: str, space: FeatureSpaceResult | None = None
) -> dict:
    """Every metric of row ``name``: its own and those of feature space ``space`` (default:
    the first one, whose distances fill the main distance table)."""
    if space is None and result.feature_spaces:
        space = result.feature_spaces[0]
    extra = space.rows.get(name, {}) if space is not None else {}
    return {**result.rows[name].metrics, **extra}


def table(
    result: EvaluationResult,
    columns: dict[str, tuple[str, str]],
    space: FeatureSpaceResult | None = None,
) -> str:
    """A Markdown table: the real reference row, then one row per synthetic set, best bold
    (columns of direction "none" are never bolded)."""
    ref = result.reference_row
    rows = {n: row_metrics(result, n, space) for n in result.rows}
    target = value(rows[ref], "msssim")
    synth = [r.name for r in result.synthetic_rows()]
    best: dict[str, set[str]] = {}
    for key, (_, direction) in columns.items():
        if direction == "none":
            continue
        values = {n: value(rows[n], key) for n in synth}
        scored = [(score(key, v, direction, target), n) for n, v in values.items() if v is not None]
        if len(scored) > 1:
            top = max(s for s, _ in scored)
            best[key] = {n for s, n in scored if s == top}
    lines = [
        "| set | " + " | ".join(t for t, _ in columns.values()) + " |",
        "|---|" + "---|" * len(columns),
    ]
    lines.append(
        f"| *{ref}* | "
        + " | ".join(
            f"*{_fmt(rows[ref], k, False)}*" if rows[ref].get(k) is not None else "—"
            for k in columns
        )
        + " |"
    )
    for n in synth:
        lines.append(
            f"| {n} | "
            + " | ".join(_fmt(rows[n], k, n in best.get(k, set())) for k in columns)
            + " |"
        )
    return "\n".join(lines)


def memorisation_table(result: EvaluationResult) -> str:
    """Nearest-training-scan similarity of each synthetic set beside the real scans, with the
    share of each flagged as near-copies.  The real leave-one-out row is what the threshold
    was fitted on; the held-out row (when there is one) was not, so its share is the
    threshold's realised false-positive rate."""
    ref = result.memorisation.reference
    rows = [("real, leave-one-out (the threshold was fitted on these)", ref)]
    if "heldout" in ref:
        rows.append(("held-out real (not fitted on: realised false positives)", ref["heldout"]))
    lines = [
        "| set | nearest training similarity: median | max | near-copies |",
        "|---|---|---|---|",
    ]
    for label, r in rows:
        lines.append(
            f"| *{label}* | *{np.median(r['nn_ncc']):.4f}* | *{r['nn_ncc_max']:.4f}* | "
            f"*{r['near_copies']} / {len(r['nn_ncc'])} ({100 * r['fraction']:.1f}%)* |"
        )
    for n, m in result.memorisation.synthetic.items():
        lines.append(
            f"| {n} | {m['nn_ncc_median']:.4f} | {m['nn_ncc_max']:.4f} | "
            f"{m['near_copies']} / {len(m['nn_ncc'])} ({100 * m['fraction']:.1f}%) |"
        )
    return "\n".join(lines)


def pair_counts_table(result: EvaluationResult) -> str:
    """Draws and distinct pairs behind each row's paper metrics."""
    lines = [
        "| set | MS-SSIM draws | distinct MS-SSIM pairs | pair draws | distinct pairs |",
        "|---|---|---|---|---|",
    ]
    for name, row in result.rows.items():
        ms, nc = (row.metrics.get(key) for key in ("msssim", "ncc"))
        ms, nc = (v if isinstance(v, dict) else {} for v in (ms, nc))
        lines.append(
            f"| {name} | {ms.get('comparisons', '—')} | "
            f"{ms.get('distinct_pairs', '—')} | {nc.get('comparisons', '—')} | "
            f"{nc.get('distinct_pairs', '—')} |"
        )
    return "\n".join(lines)


def _paper_section(result: EvaluationResult) -> str:
    s = result.settings
    ms = s["msssim"]
    ref_text = (
        "held-out real scans paired with the real scans"
        if result.heldout is not None
        else "pairs of distinct real scans"
    )
    head = (
        f"The first row, *{result.reference_row}*, is the target: the same metrics for "
        f"{ref_text}. Bold: the best synthetic set (MS-SSIM: closest to the real value)."
    )
    if result.protocol == "authors":
        d = result.protocol_details
        side = d["padded_shape"][0]
        return f"""## Paper metrics — the authors' protocol

Protocol **authors**: the published test code's computation (docs/evaluation.md). Each of
{d["epochs"]} epochs shuffles the real scans into {d["batches_per_epoch"]} batches of 2, each
compared with 2 scans of the other set; MMD is the linear-kernel MMD of the 2 against the 2
(distance between the two 2-scan mean images); NCC and MAE on volumes zero-padded to
{side}^3; RMSE, PSNR, MMD on the source slices. MS-SSIM: Kwon et al.'s 3D code (5 scales,
data range 1, scales mixed as that code does), about {s["msssim_comparisons"]} pairs per set:
for the real set the pairs of each shuffled epoch, **± = std over the epoch averages**; for
each synthetic set random pairs, value and **± = mean and std of the running means** after
each pair (the notebook's computation; that ± is far smaller than the spread of the pairs).
The other columns' ± = std over the epoch averages, not over single comparisons. {head}

{table(result, PAPER_COLUMNS)}
"""
    return f"""## Paper metrics (Table 2 protocol)

Protocol **ratgan** (ours; `--protocol authors` gives the published code's computation).
MS-SSIM: {s["msssim_comparisons"]} random pairs of distinct scans *inside* each set (diversity:
the synthetic value should be close to the real one, not close to 1). NCC, MAE, MMD, PSNR,
RMSE: {s["comparisons"]} random (real, synthetic) pairs. Mean ± std over the comparisons.
{head}

{table(result, PAPER_COLUMNS)}

MS-SSIM: MONAI, {ms["scales"]} scales (coarsest {"x".join(map(str, ms["coarsest_scale_shape"]))}
voxels), Gaussian window {ms["kernel_size"]} voxels, sigma {ms["kernel_sigma"]}, data range
{ms["data_range"]}, weights {", ".join(f"{w:.4f}" for w in ms["weights"])} (Wang et al.'s first
{ms["scales"]} weights renormalised). MMD is Kwon et al.'s linear-kernel form per pair: the
sum of squared voxel differences (a linear kernel compares mean images only). PSNR uses data
range 1.

Random draws repeat pairs when a set is small; the distinct pairs behind each row:

{pair_counts_table(result)}
"""


def _with_p(columns: dict[str, tuple[str, str]], space: FeatureSpaceResult) -> dict:
    """``columns`` plus the permutation p-value column when the space has one."""
    has_p = any("mmd_p" in row for row in space.rows.values())
    return {**columns, **P_COLUMN} if has_p else columns


def _uncertainty_note(space: FeatureSpaceResult) -> str:
    """What the ± and p of a space's table mean, when they come from a held-out set."""
    text = space.info.get("uncertainty")
    if not text:
        return ""
    if not any("mmd_p" in row for row in space.rows.values()):
        return f" With a held-out set: {text}."
    return (
        f" With a held-out set: {text}. p is small when the set is distinguishable from "
        "held-out real scans; for real scans it is uniform between 0 and 1."
    )


def _small_sample_note(space: FeatureSpaceResult) -> str:
    if not space.unstable:
        return ""
    n = min(space.info["subset_size"], space.info["reference_size"])
    return (
        f"\n\n**Unstable estimate:** these distances compare sets of {n} scans in "
        f"{space.dim} features — fewer scans than features, so covariances are singular, "
        "the Fréchet distance is strongly biased upwards and the kernel estimates are "
        "noisy. Read only differences to the first row, and prefer more scans."
    )


def _subset_note(info: dict) -> str:
    """Which synthetic sets lowered the common subset size below the reference pool's."""
    small = info.get("subset_limited_by")
    if not small:
        return ""
    sets = ", ".join(f"*{n}* ({k} scans)" for n, k in small.items())
    return (
        f" (not the reference pool's {info['reference_pool_size']}: lowered by the smaller "
        f"synthetic set(s) {sets}, for every set and the first row alike, so these numbers "
        "change when such a set is added or left out)"
    )


def feature_section(result: EvaluationResult) -> str:
    """The report's distribution-distance section: every feature space's table."""
    if not result.feature_spaces:
        return ""
    first = result.feature_spaces[0]
    f = {**first.description, **first.info}
    level = (
        "the real set against a held-out real set"
        if f.get("split") == "real vs held-out"
        else "one random half of the real set against the other half"
    )
    maps_ref = (
        "held-out vs real"
        if result.heldout is not None
        else "one half of the real set vs the other half"
    )
    skipped = f"\n\n*Set-level distances skipped: {f['skipped']}.*" if f.get("skipped") else ""
    tail_text = ", ".join(f"{n} {v:.3f}" for n, v in result.voxel.tails.items()) or "—"
    subsets = f"{f.get('subset_size', '—')} scans{_subset_note(f)}"
    text = f"""## Beyond the paper: distribution distances

In a fixed random 3D convolutional feature space ({f["dim"]} features, seed {f["seed"]}; not
trained on anything, so it sees intensity, edges and texture, not anatomy). Each set is
compared with a reference real subset of {f.get("reference_size", "—")} scans; the first row
is {level} (what a perfect generator scores). Subsets of {subsets},
{f.get("repeats", "—")} repeats, mean ± std over repeats; k = {f.get("knn_k", "—")} for
precision/recall and density/coverage (Naeem et al. 2020: only the real scans' k-NN balls, so
outlying synthetic scans cannot raise them as they raise recall; density is 1 in expectation
for real scans). Intensity W1: Wasserstein-1 distance between the voxel intensity histograms
of the set and of the real set; mean/std-map RMSE: between their per-voxel mean (std) maps
(first row: {maps_ref}). Brightest-voxel gap: how far the set's mean 99.9th percentile,
after each scan's min/max rescaling, lies from the real scans' (per set: {tail_text}); every
scan is scaled by its brightest voxel, a noise extreme in a real scan, so a set whose
brightest voxel sits too close to its bright tissue comes out brighter in every
voxel.{_uncertainty_note(first)}{skipped}{_small_sample_note(first)}

{table(result, _with_p(EXTRA_COLUMNS, first), first)}
"""
    for space in result.feature_spaces[1:]:
        info = space.info
        if not space.rows:  # nothing measured: say why instead of an empty table
            reason = info.get("skipped", "no set-level distances")
            text += f"\n### Feature space: {space.name}\n\n*Skipped: {reason}.*\n"
            continue
        about = space.description.get("about")
        about = f" {about}" if about else ""
        text += f"""
### Feature space: {space.name}

{space.description.get("kind", space.name)} ({space.dim} features); same splits and subset
sizes as above.{about}{_small_sample_note(space)}

{table(result, _with_p(SET_COLUMNS, space), space)}
"""
    return text


def spectra_table(result: EvaluationResult) -> str:
    """Axis-to-diagonal power ratios of every set, with each set's largest ratio to real's."""
    if not result.spectra:
        return "*Not measured.*"
    real = result.spectra["real"].ratios
    real_band = result.spectra["real"].band_power
    lines = [
        "| set | x | y | z | largest factor from real | fine-detail power vs real |",
        "|---|---|---|---|---|---|",
    ]
    for name, sp in result.spectra.items():
        r = sp.ratios
        worst = max(max(r[a] / real[a], real[a] / r[a]) for a in ("x", "y", "z"))
        cell = "—" if name == "real" else f"{worst:.2f}x"
        label = f"*{name}*" if name in ("real", "held-out real") else name
        lines.append(
            f"| {label} | {r['x']:.2f} | {r['y']:.2f} | {r['z']:.2f} | {cell} "
            f"| {sp.band_power / real_band:.2f} |"
        )
    return "\n".join(lines)


def spectra_section(result: EvaluationResult) -> str:
    """The report's section on directional (grid) artefacts."""
    return f"""## Beyond the paper: directional artefacts

Power of fine-scale patterns (radial frequency 0.3–0.5 cycles/voxel) that run along one axis,
over the power along the diagonals, in the slices of the two planes that contain the axis
(docs/evaluation.md, Spectral artefacts). Nearest-neighbour up-sampling in a generator draws
an axis-aligned grid that raises these numbers; a set close to real scans has ratios close to
the real ones (held-out real scans show how close). The last column is the mean power in the
same frequency band over the real scans' (below 1: blurrier than real; above: noisier).

{spectra_table(result)}
"""


FIGURES_SECTION = """## Figures

- `montage.png`: the central axial slice of scans from every set
- `mean_std_maps.png`: per-voxel mean and standard deviation of each set
- `intensity_histograms.png`: voxel intensity distributions
- `memorisation.png`: nearest-training-scan similarity of synthetic vs real scans
- `spectra.png`: the 1-D power spectrum along each axis of every set

"""


def markdown(result: EvaluationResult, figures: bool = True) -> str:
    """The whole report.md text (without the Figures section when ``figures`` is False)."""
    s = result.settings
    sets = result.sets()
    set_lines = "\n".join(
        f"- **{name}**: {info['n']} scans from `{info['generated_from'] or info['source']}`"
        + (" (generated from this run)" if info["generated_from"] else "")
        + ("; " + "; ".join(info["notes"]) if info["notes"] else "")
        for name, info in sets.items()
    )
    shape = result.shape
    time_s = result.timing_s["total"]
    return f"""# ratgan evaluation report

Protocol: **{result.protocol}**. Volumes: {shape[0]}x{shape[1]}x{shape[2]}, each rescaled to
[0, 1] (min/max) and cropped to the real scans' slices (docs/evaluation.md, Preparation).
Seed {s["seed"]}.

{set_lines}

{_paper_section(result)}
{feature_section(result)}
{spectra_section(result)}
{memorisation_section(result, "##")}
{FIGURES_SECTION if figures else ""}Every number is in `metrics.json`. Time: {time_s:.0f} s.
"""


def memorisation_section(result: EvaluationResult, heading: str = "##") -> str:
    """The near-copy check as Markdown: how the threshold was set, and the table."""
    memo = result.memorisation.reference
    return f"""{heading} Memorisation

For each synthetic scan, its most similar training (real) scan, by {memo["similarity"]}. A
scan more similar to a training scan than the threshold ({memo["threshold"]:.4f}:
{threshold_rule(result)}) is flagged as a near-copy. The threshold is fitted on
{memo["rule"]}, so that row's share cannot reveal a threshold set too low;
{_heldout_sentence(result)}{_duplicates_sentence(result)}

{memorisation_table(result)}
"""


def threshold_rule(result: EvaluationResult) -> str:
    """How the near-copy threshold was chosen."""
    return result.memorisation.reference["threshold_rule"]


def _duplicates_sentence(result: EvaluationResult) -> str:
    """Which real scans were left out of the calibration as duplicates of another."""
    dups = result.memorisation.reference.get("duplicates") or []
    if not dups:
        return ""
    pairs = "; ".join(
        f"{', '.join(f'`{Path(p).name}`' for p in d['left_out'])} (= `{Path(d['kept']).name}`, "
        f"similarity {d['similarity']:.4f})"
        for d in dups
    )
    n = sum(len(d["left_out"]) for d in dups)
    return (
        f" **{n} real scans are duplicates of another real scan** (a copied file or a "
        f"rescan) and were left out of the calibration, whose leave-one-out values they "
        f"would have pushed to 1: {pairs}."
    )


def _heldout_sentence(result: EvaluationResult) -> str:
    """What the held-out real scans say about the threshold, or that there are none."""
    held = result.memorisation.reference.get("heldout")
    if held is None:
        return (
            "without `--heldout` there are no real scans it was not fitted on, so its "
            "false-positive rate is not checked here."
        )
    return (
        f"the held-out real scans were not: {held['near_copies']} of {len(held['nn_ncc'])} "
        f"({100 * held['fraction']:.1f}%) pass it, the threshold's realised false-positive "
        "rate."
    )


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


def write_json(result: EvaluationResult, path: Path) -> None:
    """metrics.json: every number of the result (figures' arrays left out), atomically."""
    atomic_write_json(path, _json_safe(result.to_json()), ensure_ascii=False)


# --------------------------------------------------------------------------- figures


def _slices(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central axial (slice axis 2) and coronal (axis 1) planes, oriented for imshow."""
    _, y, z = volume.shape
    return volume[:, :, z // 2].T, volume[:, y // 2, :].T


def _extents(shape: tuple[int, ...], zooms: tuple[float, ...]) -> tuple[tuple, tuple]:
    """imshow extents (mm) of the axial and coronal planes, so that pixels keep their size."""
    x, y, z = (s * float(v) for s, v in zip(shape, zooms, strict=True))
    return (0, x, 0, y), (0, x, 0, z)


def figure_montage(result: EvaluationResult, path: Path, per_set: int = 8) -> None:
    """Central axial slice of up to ``per_set`` scans of every set."""
    from matplotlib.figure import Figure

    from ratgan.viz import save_figure

    sets = [("real", result.real)]
    if result.heldout is not None:
        sets.append(("held-out real", result.heldout))
    sets += [(s.name, s) for s in result.synthetic]
    ext = _extents(result.real.shape, result.real.zooms)[0]
    cols = min(per_set, max(len(s) for _, s in sets))
    fig = Figure(figsize=(1.6 * cols, 1.5 * len(sets)))
    axes = fig.subplots(len(sets), cols, squeeze=False)
    for r, (name, s) in enumerate(sets):
        for c in range(cols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(s):
                ax.imshow(
                    _slices(s.volumes[c])[0],
                    cmap="gray",
                    vmin=0,
                    vmax=1,
                    origin="lower",
                    extent=ext,
                )
        axes[r, 0].set_title(name, loc="left", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def figure_maps(result: EvaluationResult, path: Path) -> None:
    """Per-voxel mean and std maps (axial and coronal) of every set, and |mean - real mean|."""
    from matplotlib.figure import Figure

    from ratgan.viz import save_figure

    maps = result.voxel.maps
    ref = result.reference_row
    real_mean = maps[ref][0]
    names = list(maps)
    ext_ax, ext_cor = _extents(real_mean.shape, result.real.zooms)
    mean_max = float(real_mean.max()) or 1.0
    std_max = max(float(m[1].max()) for m in maps.values()) or 1.0
    diff_max = max(
        [0.05]
        + [
            float(np.percentile(np.abs(m[0] - real_mean), 99.5))
            for n, m in maps.items()
            if n != ref
        ]
    )
    titles = [
        "mean (axial)",
        "mean (coronal)",
        "std (axial)",
        "std (coronal)",
        "|mean - real mean| (axial)",
    ]
    fig = Figure(figsize=(12, 2.3 * len(names)))
    axes = fig.subplots(len(names), 5, squeeze=False)
    for r, name in enumerate(names):
        mean, std = maps[name]
        panels = [
            (_slices(mean)[0], mean_max, "gray", ext_ax),
            (_slices(mean)[1], mean_max, "gray", ext_cor),
            (_slices(std)[0], std_max, "magma", ext_ax),
            (_slices(std)[1], std_max, "magma", ext_cor),
            (_slices(np.abs(mean - real_mean))[0], diff_max, "viridis", ext_ax),
        ]
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


def figure_histograms(result: EvaluationResult, path: Path) -> None:
    """Voxel intensity distributions of every set (log density)."""
    from matplotlib.figure import Figure

    from ratgan.viz import save_figure

    bins = result.voxel.bins
    centres = (np.arange(bins) + 0.5) / bins
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    for name, h in result.voxel.histograms.items():
        style = {"color": "k", "lw": 2} if name == result.reference_row else {"lw": 1.2}
        label = "real" if name == result.reference_row else name
        ax.plot(centres, np.asarray(h) * bins, label=label, **style)
    ax.set_yscale("log")
    ax.set_xlabel("intensity (rescaled to [0, 1])")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def figure_memorisation(result: EvaluationResult, path: Path) -> None:
    """Histograms of nearest-training-scan NCC, real reference vs each synthetic set: the
    whole range (left) and zoomed on the real reference's range (right)."""
    from matplotlib.figure import Figure

    from ratgan.viz import save_figure

    ref = np.asarray(result.memorisation.reference["nn_ncc"])
    synth = result.memorisation.synthetic
    lo_all = min([float(ref.min())] + [float(np.min(m["nn_ncc"])) for m in synth.values()])
    zoom_lo = max(-1.0, float(ref.min()) - 2 * (1 - float(ref.min())) - 1e-3)
    fig = Figure(figsize=(10, 3.6))
    axes = fig.subplots(1, 2)
    for ax, lo in zip(axes, (min(lo_all, zoom_lo), zoom_lo), strict=True):
        edges = np.linspace(lo, 1.0, 41)
        ax.hist(
            np.clip(ref, lo, 1),
            bins=edges,
            density=True,
            histtype="stepfilled",
            alpha=0.35,
            color="k",
            label="real reference",
        )
        for name, m in synth.items():
            ax.hist(
                np.clip(m["nn_ncc"], lo, 1),
                bins=edges,
                density=True,
                histtype="step",
                lw=1.5,
                label=f"{name} ({m['near_copies']} near-copies)",
            )
        ax.axvline(
            result.memorisation.reference["threshold"],
            color="r",
            ls="--",
            lw=1,
            label="near-copy threshold",
        )
        ax.set_xlabel("similarity (NCC) with the most similar training scan")
        ax.set_ylabel("density")
    axes[0].set_title("all", fontsize=9)
    axes[1].set_title("zoom on the real range (lower values piled at the left edge)", fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def figure_spectra(result: EvaluationResult, path: Path) -> None:
    """The mean 1-D power spectrum along each axis of every set (log scale), one panel each."""
    from matplotlib.figure import Figure

    from ratgan.viz import save_figure

    fig = Figure(figsize=(10.5, 3.4))
    axes = fig.subplots(1, 3)
    for i, axis in enumerate(("x", "y", "z")):
        ax = axes[i]
        for name, sp in result.spectra.items():
            freqs, power = sp.spectra[axis]
            style = {"color": "k", "lw": 2} if name == "real" else {"lw": 1.2}
            ax.plot(freqs[1:], power[1:], label=name, **style)
        ax.set_yscale("log")
        ax.set_title(f"along {axis}", fontsize=9)
        ax.set_xlabel("frequency (cycles/voxel)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean power")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def write_report(result: EvaluationResult, out_dir: Path, figures: bool = True) -> dict[str, Path]:
    """Write report.md, metrics.json and the figures into ``out_dir``; returns their paths.

    Without ``figures``, the figure files of an earlier report in ``out_dir`` are removed
    and report.md has no Figures section.

    They are written into a hidden staging folder first and moved into place only when all are
    complete, report.md last (an older report.md is removed first): a process killed while
    writing leaves no partial report, and report.md is always from one complete run.  The next
    run removes a staging folder left behind.
    """
    import shutil

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = out_dir / STAGING_DIR
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    names = []
    if figures:
        for fn, name in zip(
            (figure_montage, figure_maps, figure_histograms, figure_memorisation, figure_spectra),
            FIGURES,
            strict=True,
        ):
            fn(result, stage / name)
            names.append(name)
    write_json(result, stage / "metrics.json")
    (stage / "report.md").write_text(markdown(result, figures))
    (out_dir / "report.md").unlink(missing_ok=True)
    if not figures:  # an earlier run's figures would sit beside a report they do not match
        for name in FIGURES:
            (out_dir / name).unlink(missing_ok=True)
    for name in names + ["metrics.json", "report.md"]:
        os.replace(stage / name, out_dir / name)
    stage.rmdir()
    paths = {"report": out_dir / "report.md", "metrics": out_dir / "metrics.json"}
    return paths | {name: out_dir / name for name in names}
