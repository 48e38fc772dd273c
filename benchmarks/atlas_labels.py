"""Benchmark: how well does atlas labelling (ANTs) label real scans of the phantom cohort?

    python benchmarks/atlas_labels.py [--cohort DIR] [--subjects 64] [--k 5] [--workers 2]

Splits the cohort as ``ratgan segbench`` does (``--split-seed``, 20 % test, 15 % of the rest
validation), draws ``--k`` atlases from the training split as segbench does, labels every test
scan with them (the code of ``ratgan label`` and of ``segbench --labels atlas``) and prints
the Dice per tissue against the true label maps, and the CPU time of one registration.  A
missing ``--cohort`` is written with ``ratgan phantom``'s code (seed 0).  Not pass/fail.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
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
    args = ap.parse_args()

    from ratgan.data.io import read_label, read_scan
    from ratgan.segmentation.atlas import AtlasParams, atlas_label, label_scans, make_atlases
    from ratgan.segmentation.data import find_entries
    from ratgan.segmentation.metrics import dice_scores
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
    params = AtlasParams(k=args.k, seed=args.split_seed)
    tests = [entries[i] for i in split.test]
    print(
        f"cohort {cohort}: {len(entries)} labelled scans, {len(split.train)} training, "
        f"{len(tests)} test; atlases {[a.image.name for a in atlases]}"
    )

    t = time.process_time()
    atlas_label(tests[0].image, atlases[:1], AtlasParams(k=1, seed=args.split_seed))
    print(f"one registration (+ warping its labels): {time.process_time() - t:.2f} CPU s")

    t = time.perf_counter()
    out = args.out or tmp / "labels"
    paths = label_scans(
        [e.image for e in tests],
        atlases,
        out,
        params,
        cache_dir=tmp / "cache",
        workers=args.workers,
        progress=False,
    )
    wall = time.perf_counter() - t
    scores: dict[str, list[float]] = {}
    for e, p in zip(tests, paths, strict=True):
        scan = read_scan(e.image)
        for k, v in dice_scores(read_label(p, scan), read_label(e.label, scan)).items():
            scores.setdefault(k, []).append(float(v[0]))
    print(
        f"labelled {len(tests)} test scans with {args.k} atlases in {wall:.0f} s wall "
        f"({args.workers} workers)"
    )
    summary = {
        k: {
            "mean": round(float(np.mean(v)), 4),
            "std": round(float(np.std(v, ddof=1)), 4),
            "min": round(float(np.min(v)), 4),
        }
        for k, v in scores.items()
        if k in ("global", "GM", "WM", "CSF")
    }
    print("Dice of the atlas labels against the true labels (mean, std, min over test scans):")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
