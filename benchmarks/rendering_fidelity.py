"""Benchmark: how faithfully a generator renders scans it was shown, tissue by tissue.

    python benchmarks/rendering_fidelity.py --real REAL --rendered RENDERED
        [--atlas-real LABELS --atlas-rendered LABELS] [--blur SIGMA ...] [--shifts]

``REAL`` is a folder with ``images/`` and ``labels/`` (true GM/WM/CSF maps, 1/2/3); ``RENDERED``
a folder of the same subjects rendered by a generator, for example its reconstructions
G(E(x)) (``benchmarks/latent_codes.py --sets recon-train``), paired with the real scans in
sorted file-name order (the counts must match).  Because a rendering is of the same subject,
the real scan's true label map says where each tissue is in both, so the two can be compared
tissue by tissue with no labeller in between.

Per set it prints, averaged over the scans, scale-free measures (each scan's intensities
divided by the standard deviation of its brain voxels, so a scan's overall brightness and its
min/max rescaling do not enter):

- the contrasts CSF - GM and GM - WM (differences of the tissues' mean intensities);
- the spread inside each tissue (its standard deviation);

and the rendered set's values as a share of the real set's.  Segmentation needs the contrast
between tissues to be well above the spread inside them.

With ``--blur SIGMA ...`` it also measures the real scans blurred by a Gaussian of each SIGMA
(voxels, every axis) and says, for each contrast, what blur of the real scans loses as much
of it as the rendering does (linear interpolation between the given SIGMAs; "beyond" when the
rendering loses more than the largest). That reads a rendering's loss as a resolution.

With ``--shifts`` it also measures where the rendering draws the anatomy: each 8^3 block of
the scan that lies inside the brain is matched against the rendering shifted by every
integer offset up to 3 voxels per axis; it prints the share of blocks that match best at a
non-zero offset and the mean length of the best offsets (a blur or noise leaves them at 0;
a rendering that draws the subject's structures a voxel off moves them).

With ``--atlas-real`` and ``--atlas-rendered`` (the label maps ``ratgan segbench --labels
atlas`` wrote for the real pool and for the rendered pool, in ``OUT/atlas/labels/``), it also
prints the Dice of each set's atlas labels against the true labels: how much worse the atlas
labeller does on the renderings, i.e. how much noisier the labels of a synthetic pool are.
"""

from __future__ import annotations

import argparse
from itertools import product
from itertools import pairwise
from pathlib import Path

import numpy as np

TISSUES = {1: "GM", 2: "WM", 3: "CSF"}


def tissue_measures(volume: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Scale-free tissue measures of one scan: contrasts and within-tissue spreads, in units of
    the standard deviation of its brain voxels (labels > 0)."""
    v = np.asarray(volume, dtype=np.float64)
    lab = np.asarray(labels)
    brain = lab > 0
    if v.shape != lab.shape:
        raise ValueError(f"scan shape {v.shape} and label map shape {lab.shape} differ")
    scale = float(v[brain].std()) if brain.any() else 0.0
    if scale == 0:
        raise ValueError("the scan is constant inside the brain (or the label map is empty)")
    mean = {}
    out: dict[str, float] = {}
    for k, name in TISSUES.items():
        m = lab == k
        if not m.any():
            raise ValueError(f"the label map has no {name} (label {k})")
        mean[name] = float(v[m].mean()) / scale
        out[f"{name}_spread"] = float(v[m].std()) / scale
    out["CSF-GM"] = mean["CSF"] - mean["GM"]
    out["GM-WM"] = mean["GM"] - mean["WM"]
    return out


def equivalent_blur(sigmas: list[float], shares: list[float], share: float) -> float | None:
    """The blur whose contrast share equals ``share``, interpolated linearly in the table of
    ``sigmas`` (ascending, starting at 0 with share 1) and their ``shares`` (falling); None
    when ``share`` lies beyond the table's last share (more lost than the largest blur)."""
    if share >= shares[0]:
        return sigmas[0]
    for (s0, v0), (s1, v1) in pairwise(zip(sigmas, shares, strict=True)):
        if v1 <= share <= v0:
            return s0 + (s1 - s0) * (v0 - share) / (v0 - v1) if v0 != v1 else s0
    return None


def _shares(rows: list[dict[str, float]], real: dict[str, float]) -> dict[str, float]:
    """The mean of each measure over ``rows``, as a share of the real scans' mean."""
    return {k: float(np.mean([r[k] for r in rows])) / real[k] for k in real}


def local_shifts(
    rendered: np.ndarray, real: np.ndarray, labels: np.ndarray, block: int = 8, radius: int = 3
) -> list[tuple[int, int, int]]:
    """For each ``block``^3 block of ``real`` at least 90 % inside the brain (labels > 0), the
    integer offset (at most ``radius`` per axis) of ``rendered`` whose block correlates best
    with it (Pearson)."""
    x = np.pad(np.asarray(rendered, dtype=np.float64), radius, mode="edge")
    y = np.asarray(real, dtype=np.float64)
    offsets = list(product(range(-radius, radius + 1), repeat=3))
    found = []
    for i, j, k in product(*(range(0, n - block + 1, block) for n in y.shape)):
        if (labels[i : i + block, j : j + block, k : k + block] > 0).mean() < 0.9:
            continue
        ref = y[i : i + block, j : j + block, k : k + block].ravel()
        ref = (ref - ref.mean()) / (ref.std() + 1e-12)
        scores = []
        for a, b, c in offsets:
            i0, j0, k0 = i + radius + a, j + radius + b, k + radius + c
            cand = x[i0 : i0 + block, j0 : j0 + block, k0 : k0 + block].ravel()
            scores.append(float(ref @ (cand - cand.mean())) / (cand.std() + 1e-12))
        found.append(offsets[int(np.argmax(scores))])
    return found


def _print_shifts(found: list[tuple[int, int, int]]) -> None:
    """Share of brain blocks the rendering draws off their place, and the mean offset."""
    if not found:
        print("local shifts: no 8^3 block lies inside the brain")
        return
    arr = np.array(found, dtype=np.float64)
    moved = float(np.mean(np.any(arr != 0, axis=1)))
    length = float(np.mean(np.linalg.norm(arr, axis=1)))
    print(
        f"local shifts: {len(found)} brain blocks of 8^3, {moved:.2f} best matched off their "
        f"place, mean offset {length:.2f} voxels (per axis mean "
        + ", ".join(f"{m:+.2f}" for m in arr.mean(0))
        + ")"
    )


def _atlas_labels(real: Path | None, rendered: Path | None, n: int) -> dict[str, list[Path]]:
    """The two sets' atlas label files (none when neither folder is given), n in each."""
    folders = {"real": real, "rendered": rendered}
    atlas = {name: _niftis(f) for name, f in folders.items() if f is not None}
    if len(atlas) == 1:
        raise SystemExit("error: give both --atlas-real and --atlas-rendered, or neither.")
    for name, found in atlas.items():
        if len(found) != n:
            raise SystemExit(f"error: {folders[name]} holds {len(found)} label maps, not {n}.")
    return atlas


def _print_blur_table(
    blurred_rows: dict[float, list[dict[str, float]]],
    real: dict[str, float],
    ren: dict[str, float],
) -> None:
    """The real scans' measures under each blur, and the blur each contrast's loss equals."""
    sigmas = sorted(blurred_rows)
    blurred = [_shares(blurred_rows[sg], real) for sg in sigmas]
    print("real scans blurred by a Gaussian of sigma voxels, share of the unblurred values")
    print(f"{'measure':<12} " + " ".join(f"{sg:>7.2f}" for sg in sigmas) + "  rendered ~ blur")
    for k in real:
        shares = [b[k] for b in blurred]
        line = f"{k:<12} " + " ".join(f"{v:7.2f}" for v in shares)
        if k in ("CSF-GM", "GM-WM"):
            eq = equivalent_blur([0.0, *sigmas], [1.0, *shares], ren[k] / real[k])
            line += f"  {eq:.2f}" if eq is not None else f"  beyond {sigmas[-1]:.2f}"
        print(line)


def _niftis(folder: Path) -> list[Path]:
    from ratgan.data.io import is_nifti_path

    files = sorted(p for p in folder.iterdir() if is_nifti_path(p) and not p.name.startswith("."))
    if not files:
        raise SystemExit(f"error: {folder} holds no NIfTI scans.")
    return files


def _paired_files(real: Path, rendered: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """The real scans, their label maps and the renderings, paired in sorted name order."""
    images, truths = _niftis(real / "images"), _niftis(real / "labels")
    renders = _niftis(rendered)
    if not len(images) == len(truths) == len(renders):
        raise SystemExit(
            f"error: {len(images)} real scans, {len(truths)} label maps and {len(renders)} "
            "renderings: the sets must pair one to one."
        )
    return images, truths, renders


def _read(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(str(path)).dataobj)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", type=Path, required=True, help="folder with images/ and labels/")
    ap.add_argument("--rendered", type=Path, required=True, help="the same subjects, rendered")
    ap.add_argument("--atlas-real", type=Path, help="atlas labels of the real scans")
    ap.add_argument("--atlas-rendered", type=Path, help="atlas labels of the renderings")
    ap.add_argument(
        "--blur", type=float, nargs="+", default=[], metavar="SIGMA",
        help="also measure the real scans blurred by these Gaussian sigmas (voxels)",
    )  # fmt: skip
    ap.add_argument(
        "--shifts", action="store_true",
        help="also measure how far off its place the rendering draws each brain block",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if any(not s > 0 for s in args.blur):
        raise SystemExit(f"error: --blur takes positive sigmas in voxels, not {args.blur}.")
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    from ratgan.segmentation.metrics import dice_scores

    images, truths, rendered = _paired_files(args.real, args.rendered)
    atlas = _atlas_labels(args.atlas_real, args.atlas_rendered, len(images))
    from scipy.ndimage import gaussian_filter

    rows: dict[str, list[dict[str, float]]] = {"real": [], "rendered": []}
    dices: dict[str, list[list[float]]] = {"real": [], "rendered": []}
    blurred_rows: dict[float, list[dict[str, float]]] = {sg: [] for sg in sorted(set(args.blur))}
    offsets: list[tuple[int, int, int]] = []
    for i, (img, lab, ren) in enumerate(zip(images, truths, rendered, strict=True)):
        truth = _read(lab)
        volumes = {"real": _read(img), "rendered": _read(ren)}  # each file read once
        for name, scan in (("real", img), ("rendered", ren)):
            try:
                rows[name].append(tissue_measures(volumes[name], truth))
            except ValueError as err:
                raise SystemExit(f"error: {scan} with label map {lab}: {err}.") from None
        for name, found in atlas.items():
            scores = dice_scores(_read(found[i]), truth)
            dices[name].append([float(scores[t][0]) for t in TISSUES.values()])
        for sg, blurred in blurred_rows.items():
            smooth = gaussian_filter(volumes["real"].astype(np.float64), sg)
            blurred.append(tissue_measures(smooth, truth))
        if args.shifts:
            offsets += local_shifts(volumes["rendered"], volumes["real"], truth)

    keys = list(rows["real"][0])
    real = {k: float(np.mean([r[k] for r in rows["real"]])) for k in keys}
    ren = {k: float(np.mean([r[k] for r in rows["rendered"]])) for k in keys}
    print(f"{len(images)} subjects; intensities in units of each scan's brain standard deviation")
    print(f"{'measure':<12} {'real':>8} {'rendered':>9} {'share':>7}")
    for k in keys:
        print(f"{k:<12} {real[k]:8.3f} {ren[k]:9.3f} {ren[k] / real[k]:7.2f}")
    if blurred_rows:
        _print_blur_table(blurred_rows, real, ren)
    if args.shifts:
        _print_shifts(offsets)
    if atlas:
        print("Dice of atlas labels against the true labels (GM, WM, CSF)")
        for name in ("real", "rendered"):
            print(f"  {name:<9} " + "  ".join(f"{d:.3f}" for d in np.mean(dices[name], axis=0)))


if __name__ == "__main__":
    main()
