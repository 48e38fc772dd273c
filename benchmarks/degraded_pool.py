"""Benchmark helper: a pool of real scans degraded in one known way, with label maps, for
``ratgan segbench --labels joint``: which of G's faults costs the segmentation network?

    python benchmarks/degraded_pool.py --images IMAGES --labels LABELS --out OUT
        (--blur SIGMA | --warp MEAN [--warp-smooth S] | --contrast TISSUE=SHARE ...) [--seed N]

Every scan of ``IMAGES`` is written to ``OUT`` (same file name, the source's header and
affine, float32), and the label map of the same name in ``LABELS`` to ``OUT/labels/``
unchanged, so that only the images differ from a pool of the original scans with those labels
(``segbench --synthetic OUT --labels joint``):

- ``--blur SIGMA``: a Gaussian blur of SIGMA voxels along every axis (scipy's
  ``gaussian_filter``): G's renderings lose tissue contrast as a blur of 0.65-0.85 voxels would;
- ``--warp MEAN``: a smooth random displacement (per axis standard normal noise smoothed by a
  Gaussian of ``--warp-smooth`` voxels, scaled so that the mean displacement length is MEAN
  voxels; linear interpolation, edges repeated), one field per scan, drawn in file-name order
  from one generator seeded with ``--seed``: anatomy moved off its labels, as
  ``rendering_fidelity.py --shifts`` finds G draws it;
- ``--contrast CSF=0.40 WM=0.77``: every voxel of each named tissue (by the scan's own label
  map: GM 1, WM 2, CSF 3) shifted by one constant towards the scan's grey-matter mean, so that
  the tissue's contrast to grey matter (difference of the means) falls to SHARE of the scan's
  own; texture, grey matter, background and the other tissues unchanged: the tissue contrast
  ``rendering_fidelity.py`` measures in G's reconstructions, given to real scans.

docs/segbench-phantom.md has what they cost ("Is G's rendering a blur?" for the blur and the
warp, "Real scans with G's tissue contrasts" for the contrast). Not part of pass/fail
(tests/evaluation/test_degraded_pool.py checks each against known answers).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def blur(volume: np.ndarray, sigma: float) -> np.ndarray:
    """``volume`` blurred by a Gaussian of ``sigma`` voxels along every axis, in float32 (the
    type written; the pool measured in docs/segbench-phantom.md was made so)."""
    from scipy.ndimage import gaussian_filter

    return np.asarray(gaussian_filter(np.asarray(volume, dtype=np.float32), sigma))


def displacement(
    shape: tuple[int, ...], mean: float, smooth: float, rng: np.random.Generator
) -> np.ndarray:
    """A smooth random displacement field (3, *shape) whose mean length is ``mean`` voxels."""
    from scipy.ndimage import gaussian_filter

    field = np.stack([gaussian_filter(rng.standard_normal(shape), smooth) for _ in shape])
    return np.asarray(field * (mean / np.linalg.norm(field, axis=0).mean()))


def warp(volume: np.ndarray, field: np.ndarray) -> np.ndarray:
    """``volume`` sampled at each voxel plus ``field`` (linear interpolation, edges repeated)."""
    from scipy.ndimage import map_coordinates

    v = np.asarray(volume, dtype=np.float64)
    grid = np.indices(v.shape, dtype=np.float64) + field
    return np.asarray(map_coordinates(v, grid, order=1, mode="nearest"))


TISSUES = {"GM": 1, "WM": 2, "CSF": 3}
"""Label values of the tissues (the phantom's and segbench's numbering)."""


def parse_shares(items: list[str]) -> dict[int, float]:
    """``["CSF=0.4", "WM=0.77"]`` as {label value: share}; one clear sentence on a bad item."""
    shares = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in ("WM", "CSF"):
            raise SystemExit(f"error: --contrast {item}: the tissue must be WM or CSF.")
        try:
            share = float(value)
        except ValueError:
            share = float("nan")
        if not 0 <= share <= 1:
            raise SystemExit(f"error: --contrast {item}: the share must be a number in [0, 1].")
        shares[TISSUES[name]] = share
    return shares


def toward_grey_matter(
    volume: np.ndarray, labels: np.ndarray, shares: dict[int, float]
) -> np.ndarray:
    """``volume`` with each tissue of ``shares`` shifted by a constant towards the grey-matter
    mean, so that its mean minus the grey-matter mean is ``share`` times what it was."""
    out = np.array(volume, dtype=np.float64)
    grey = out[labels == TISSUES["GM"]].mean()
    for value, share in shares.items():
        mask = labels == value
        if mask.any():
            out[mask] -= (1.0 - share) * (out[mask].mean() - grey)
    return out


def main(argv: list[str] | None = None) -> None:
    import nibabel as nib

    from ratgan.data.io import is_nifti_path, write_nifti

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, required=True, help="folder of real scans")
    ap.add_argument("--labels", type=Path, required=True, help="their label maps, same names")
    ap.add_argument("--out", type=Path, required=True)
    how = ap.add_mutually_exclusive_group(required=True)
    how.add_argument("--blur", type=float, metavar="SIGMA", help="Gaussian blur, voxels")
    how.add_argument("--warp", type=float, metavar="MEAN", help="mean displacement, voxels")
    how.add_argument(
        "--contrast", nargs="+", metavar="TISSUE=SHARE", help="WM or CSF contrast to GM, a share"
    )
    ap.add_argument("--warp-smooth", type=float, default=3.0, help="field smoothness, voxels")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    shares = parse_shares(args.contrast) if args.contrast else {}
    amount = args.blur if args.blur is not None else args.warp
    if not (args.contrast or amount > 0) or not args.warp_smooth > 0:
        raise SystemExit("error: --blur, --warp and --warp-smooth take positive numbers of voxels.")
    scans = sorted(p for p in args.images.iterdir() if is_nifti_path(p))
    if not scans:
        raise SystemExit(f"error: {args.images} holds no NIfTI scans.")
    missing = [p.name for p in scans if not (args.labels / p.name).is_file()]
    if missing:
        raise SystemExit(f"error: {args.labels} has no label map for {missing[0]}.")
    for path in scans:  # before anything is written: headers only
        lab_shape, shape = nib.load(str(args.labels / path.name)).shape, nib.load(str(path)).shape
        if lab_shape != shape:
            raise SystemExit(
                f"error: {args.labels / path.name} has shape {lab_shape}, its scan {shape}."
            )
    rng = np.random.default_rng(args.seed)
    for path in scans:
        img = nib.load(str(path))
        volume = np.asarray(img.dataobj, dtype=np.float64)
        lab = nib.load(str(args.labels / path.name))
        labels = np.asarray(lab.dataobj)  # read once: shifted by, and written unchanged
        if args.contrast:
            out = toward_grey_matter(volume, labels, shares)
        elif args.blur is not None:
            out = blur(volume, args.blur)
        else:
            field = displacement(volume.shape, args.warp, args.warp_smooth, rng)
            out = warp(volume, field)
        write_nifti(args.out / path.name, out.astype(np.float32), img.affine, img.header,
                    dtype=np.float32)  # fmt: skip
        write_nifti(args.out / "labels" / path.name, labels, lab.affine, lab.header)
    print(f"wrote {len(scans)} scans and label maps to {args.out}")


if __name__ == "__main__":
    main()
