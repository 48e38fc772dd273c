"""Benchmark: how faithfully a generator renders scans it was shown, tissue by tissue.

    python benchmarks/rendering_fidelity.py --real REAL --rendered RENDERED
        [--atlas-real LABELS --atlas-rendered LABELS]

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

With ``--atlas-real`` and ``--atlas-rendered`` (the label maps ``ratgan segbench --labels
atlas`` wrote for the real pool and for the rendered pool, in ``OUT/atlas/labels/``), it also
prints the Dice of each set's atlas labels against the true labels: how much worse the atlas
labeller does on the renderings, i.e. how much noisier the labels of a synthetic pool are.
"""

from __future__ import annotations

import argparse
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


def _niftis(folder: Path) -> list[Path]:
    from ratgan.data.io import is_nifti_path

    files = sorted(p for p in folder.iterdir() if is_nifti_path(p) and not p.name.startswith("."))
    if not files:
        raise SystemExit(f"error: {folder} holds no NIfTI scans.")
    return files


def _read(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(str(path)).dataobj)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", type=Path, required=True, help="folder with images/ and labels/")
    ap.add_argument("--rendered", type=Path, required=True, help="the same subjects, rendered")
    ap.add_argument("--atlas-real", type=Path, help="atlas labels of the real scans")
    ap.add_argument("--atlas-rendered", type=Path, help="atlas labels of the renderings")
    args = ap.parse_args(argv)
    from ratgan.segmentation.metrics import dice_scores

    images, truths = _niftis(args.real / "images"), _niftis(args.real / "labels")
    rendered = _niftis(args.rendered)
    if not len(images) == len(truths) == len(rendered):
        raise SystemExit(
            f"error: {len(images)} real scans, {len(truths)} label maps and {len(rendered)} "
            "renderings: the sets must pair one to one."
        )
    atlas_folders = {"real": args.atlas_real, "rendered": args.atlas_rendered}
    atlas = {n: _niftis(f) for n, f in atlas_folders.items() if f is not None}
    if len(atlas) == 1:
        raise SystemExit("error: give both --atlas-real and --atlas-rendered, or neither.")
    for name, found in atlas.items():
        if len(found) != len(images):
            raise SystemExit(
                f"error: {atlas_folders[name]} holds {len(found)} label maps, not {len(images)}."
            )
    rows: dict[str, list[dict[str, float]]] = {"real": [], "rendered": []}
    dices: dict[str, list[list[float]]] = {"real": [], "rendered": []}
    for i, (img, lab, ren) in enumerate(zip(images, truths, rendered, strict=True)):
        truth = _read(lab)
        for name, scan in (("real", img), ("rendered", ren)):
            try:
                rows[name].append(tissue_measures(_read(scan), truth))
            except ValueError as err:
                raise SystemExit(f"error: {scan} with label map {lab}: {err}.") from None
        for name, found in atlas.items():
            scores = dice_scores(_read(found[i]), truth)
            dices[name].append([float(scores[t][0]) for t in TISSUES.values()])

    keys = list(rows["real"][0])
    real = {k: float(np.mean([r[k] for r in rows["real"]])) for k in keys}
    ren = {k: float(np.mean([r[k] for r in rows["rendered"]])) for k in keys}
    print(f"{len(images)} subjects; intensities in units of each scan's brain standard deviation")
    print(f"{'measure':<12} {'real':>8} {'rendered':>9} {'share':>7}")
    for k in keys:
        print(f"{k:<12} {real[k]:8.3f} {ren[k]:9.3f} {ren[k] / real[k]:7.2f}")
    if atlas:
        print("Dice of atlas labels against the true labels (GM, WM, CSF)")
        for name in ("real", "rendered"):
            print(f"  {name:<9} " + "  ".join(f"{d:.3f}" for d in np.mean(dices[name], axis=0)))


if __name__ == "__main__":
    main()
