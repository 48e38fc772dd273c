"""Benchmark: how well does atlas labelling (ANTs) label real scans of the phantom cohort?

    python benchmarks/atlas_labels.py [--cohort DIR] [--subjects 64] [--k 5] [--workers 2]
        [--syn-iterations 20 10 5] [--warp MEAN]

Splits the cohort as ``ratgan segbench`` does (``--split-seed``, 20 % test, 15 % of the rest
validation), draws ``--k`` atlases from the training split as segbench does, labels every test
scan with them (the code of ``ratgan label`` and of ``segbench --labels atlas``) and prints
the Dice per tissue against the true label maps, and the CPU time of one registration.  A
missing ``--cohort`` is written with ``ratgan phantom``'s code (seed 0).  Not pass/fail.

``--warp MEAN`` also asks whether the labeller follows anatomy that sits off its usual place,
as a generator's local distortions put it: every test scan is warped by a smooth random
displacement of mean length MEAN voxels (``degraded_pool.py``'s field, smoothed by 3 voxels;
one field per scan, seeded by its position), labelled again, and scored against its true label
map warped by the same field (nearest label) and against the unwarped one.  A labeller that
follows the warp scores as on the unwarped scans against the first, and worse against the
second; one that does not scores alike against both.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", type=Path)
    ap.add_argument("--subjects", type=int, default=64)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="folder for the label maps (default: temporary)")
    ap.add_argument("--syn-iterations", type=int, nargs="+", default=[20, 10, 5], metavar="N")
    ap.add_argument("--warp", type=float, metavar="MEAN", help="also label warped test scans")
    args = ap.parse_args()

    from ratgan.segmentation.atlas import AtlasParams, atlas_label, label_scans, make_atlases
    from ratgan.segmentation.data import find_entries
    from ratgan.segmentation.plan import make_split

    tmp = Path(tempfile.mkdtemp(prefix="atlas-bench-"))
    cohort = args.cohort
    if cohort is None or not cohort.exists():
        from ratgan.data.phantom import write_cohort

        cohort = cohort or tmp / "cohort"
        write_cohort(cohort, args.subjects, seed=0, progress=False)
    entries = [e for e in find_entries(cohort) if e.label is not None]
    split = make_split(len(entries), args.split_seed)
    atlases = make_atlases([entries[i] for i in split.train], args.k, seed=args.split_seed)
    params = AtlasParams(k=args.k, seed=args.split_seed, syn_iterations=tuple(args.syn_iterations))
    tests = [entries[i] for i in split.test]
    print(
        f"cohort {cohort}: {len(entries)} labelled scans, {len(split.train)} training, "
        f"{len(tests)} test; atlases {[a.image.name for a in atlases]}"
    )

    t = time.process_time()
    atlas_label(tests[0].image, atlases[:1], replace(params, k=1))
    print(f"one registration (+ warping its labels): {time.process_time() - t:.2f} CPU s")

    t = time.perf_counter()
    out = args.out or tmp / "labels"
    images = [Path(e.image) for e in tests]
    truths = [Path(e.label) for e in tests]
    paths = label_scans(
        images, atlases, out, params, cache_dir=tmp / "cache", workers=args.workers,
        progress=False,
    )  # fmt: skip
    print(
        f"labelled {len(tests)} test scans with {args.k} atlases in "
        f"{time.perf_counter() - t:.0f} s wall ({args.workers} workers)"
    )
    print("Dice of the atlas labels against the true labels (mean, std, min over test scans):")
    print(json.dumps(summarise(paths, images, truths), indent=1))
    if args.warp:
        warped, warped_truths = write_warped(images, truths, args.warp, tmp / "warped")
        paths = label_scans(
            warped, atlases, tmp / "warped-labels", params, cache_dir=tmp / "cache",
            workers=args.workers, progress=False,
        )  # fmt: skip
        print(f"the same scans warped by a smooth field of mean length {args.warp} voxels:")
        print("Dice against the warped true labels (follows the warp: as unwarped above):")
        print(json.dumps(summarise(paths, warped, warped_truths), indent=1))
        print("Dice against the unwarped true labels (does not follow: as high or higher):")
        print(json.dumps(summarise(paths, warped, truths), indent=1))


def summarise(labels: list[Path], images: list[Path], truths: list[Path]) -> dict:
    """Mean, std and minimum over the scans of each Dice score of ``labels`` against ``truths``."""
    from ratgan.data.io import read_label, read_scan
    from ratgan.segmentation.metrics import dice_scores

    scores: dict[str, list[float]] = {}
    for lab, image, truth in zip(labels, images, truths, strict=True):
        scan = read_scan(image)
        for k, v in dice_scores(read_label(lab, scan), read_label(truth, scan)).items():
            scores.setdefault(k, []).append(float(v[0]))
    return {
        k: {
            "mean": round(float(np.mean(v)), 4),
            "std": round(float(np.std(v, ddof=1)), 4),
            "min": round(float(np.min(v)), 4),
        }
        for k, v in scores.items()
        if k in ("global", "GM", "WM", "CSF")
    }


def write_warped(
    images: list[Path], truths: list[Path], mean: float, folder: Path
) -> tuple[list[Path], list[Path]]:
    """Each scan warped by its own smooth random field (seeded by its position) and its true
    label map warped by the same field (nearest label), written under ``folder``."""
    import sys

    from scipy.ndimage import map_coordinates

    from ratgan.data.io import read_label, read_scan, write_nifti

    sys.path.insert(0, str(Path(__file__).parent))
    from degraded_pool import displacement, warp

    out_images, out_truths = [], []
    for i, (image, truth) in enumerate(zip(images, truths, strict=True)):
        scan = read_scan(image)
        field = displacement(scan.data.shape, mean, 3.0, np.random.default_rng([7, i]))
        grid = np.indices(scan.data.shape, dtype=np.float64) + field
        labels = read_label(truth, scan).astype(np.float64)
        moved = map_coordinates(labels, grid, order=0, mode="nearest").astype(np.uint8)
        moved_image = warp(scan.data, field).astype(np.float32)
        out_images.append(write_nifti(folder / "images" / image.name, moved_image, scan.affine))
        out_truths.append(
            write_nifti(folder / "labels" / image.name, moved, scan.affine, dtype=np.uint8)
        )
    return out_images, out_truths


if __name__ == "__main__":
    main()
