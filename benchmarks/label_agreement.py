"""Do a folder's label maps sit on its scans' anatomy? A teacher U-Net judges.

The teacher is the one `ratgan segbench --labels teacher` trains and keeps
(OUT/teacher/teacher.pt): a U-Net trained on the benchmark's labelled real training split only.
It segments every scan of each folder, and the Dice between its segmentation and the folder's
own label maps says how well those labels follow what the scans show.  Run it on a joint
model's generated folder (scans with the label maps generated with them) and, for scale, on
real scans with their true label maps and with atlas labels:

    python benchmarks/label_agreement.py --teacher seg/control_teacher/teacher/teacher.pt \\
        real=held joint=gen/joint

Each folder is ``images/`` + ``labels/``, or scans with a ``labels/`` folder beside them (what
`ratgan generate` writes for a joint model).  Prints Dice (mean and standard deviation over
scans) and the tissue fractions of both label maps.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np


def agreement(teacher_path: Path, folder: Path, shape: tuple[int, int, int]) -> dict[str, float]:
    """Mean and std over scans of the Dice between the teacher's segmentation of each scan of
    ``folder`` and its label map, and both maps' mean tissue fractions of the brain."""
    from ratgan.segmentation.data import find_entries, load_set
    from ratgan.segmentation.metrics import dice_scores
    from ratgan.segmentation.quality_gate import tissue_fractions
    from ratgan.segmentation.teacher import saved_box, saved_downsample
    from ratgan.segmentation.train import load_model, segment

    model, record = load_model(teacher_path, "cpu")
    data = load_set(find_entries(folder, require_labels=True), shape)
    # the crop and pooling the teacher was trained with: the U-Net runs on other input sizes
    # too, so a teacher of --downsample 2 given full-resolution crops would segment them
    # without an error, at twice the scale it learned
    pred = segment(model, data.images, saved_box(record), saved_downsample(record), "bf16")
    labels = data.label_maps()
    scores = dice_scores(pred, labels)
    out = {"n": float(len(data.names))}
    with warnings.catch_warnings():  # a tissue absent from both maps of every scan: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        for key in ("global", "GM", "WM", "CSF"):
            out[key] = float(np.nanmean(scores[key]))
            out[f"{key}_std"] = float(np.nanstd(scores[key], ddof=1))
    for name, maps in (("labels", labels), ("teacher", pred)):
        shares = tissue_fractions(maps)[:, :3].mean(0)  # GM, WM, CSF shares of the brain
        for tissue, share in zip(("GM", "WM", "CSF"), shares, strict=True):
            out[f"{name}_{tissue}"] = float(share)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", type=Path, required=True, help="teacher.pt of a segbench run")
    ap.add_argument("--shape", type=int, nargs=3, default=(64, 64, 40))
    ap.add_argument("folders", nargs="+", help="NAME=FOLDER (or FOLDER)")
    args = ap.parse_args(argv)
    print(
        "| folder | scans | Dice global | GM | WM | CSF | label maps GM / WM / CSF share "
        "| teacher GM / WM / CSF share |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.folders:
        name, _, folder = spec.rpartition("=")
        r = agreement(args.teacher, Path(folder), tuple(args.shape))
        scores = ("global", "GM", "WM", "CSF")
        dice = " | ".join(f"{r[k]:.3f} ± {r[k + '_std']:.3f}" for k in scores)
        shares = [
            " / ".join(f"{r[f'{who}_{t}']:.3f}" for t in ("GM", "WM", "CSF"))
            for who in ("labels", "teacher")
        ]
        print(f"| {name or folder} | {int(r['n'])} | {dice} | {shares[0]} | {shares[1]} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
