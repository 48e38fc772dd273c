"""Subcommands of `ratgan` for data: the built-in phantom cohort and figures of scans."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ratgan.errors import RatganError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the `ratgan` parser."""
    p = sub.add_parser(
        "phantom",
        help="write the built-in cohort of procedural rat-brain EPI scans with GM/WM/CSF labels",
        description="Write N procedural T2*-weighted EPI scans of rat heads (64x64x40 voxels of "
        "0.375x0.375x0.5 mm) to DIR/images and their label maps (0 background, 1 GM, 2 WM, "
        "3 CSF) to DIR/labels, plus DIR/phantom.json with each subject's parameters.",
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument(
        "--subjects",
        type=int,
        default=210,
        metavar="N",
        help="number of subjects (default: 210, the size of the SIGMA cohort)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="S",
        help="cohort seed; subject i depends only on (S, i) (default: 0)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_phantom)

    s = sub.add_parser(
        "show",
        help="draw coronal, sagittal and axial views of scans (optionally with labels) as a PNG",
        description="Draw the three orthogonal planes through the centre of each scan, one row "
        "per scan, with an optional label-map overlay.  Scans are drawn in RAS voxel order "
        "(reoriented by axis permutations and flips only) at the first scan's voxel size.",
    )
    s.add_argument("files", nargs="+", type=Path, metavar="FILE", help="NIfTI scans")
    s.add_argument("--out", required=True, type=Path, metavar="PNG", help="output PNG file")
    s.add_argument(
        "--labels",
        nargs="+",
        type=Path,
        metavar="LABEL",
        help="label maps, one per scan in the same order; '-' for a scan without one",
    )
    s.set_defaults(func=_show)


def _phantom(args: argparse.Namespace) -> int:
    from ratgan.data.phantom import write_cohort
    from ratgan.folder_lock import FolderLock

    if args.subjects < 1:
        raise RatganError(f"--subjects must be at least 1 (got {args.subjects}).")
    if args.seed < 0:
        raise RatganError(f"--seed must not be negative (got {args.seed}).")
    if args.out.exists() and not args.out.is_dir():
        raise RatganError(f"output folder {args.out} is a file.")
    with FolderLock(args.out, "ratgan phantom") as lock:
        lock.create()
        paths = write_cohort(args.out, args.subjects, args.seed, progress=not args.no_progress)
    print(
        f"wrote {len(paths)} scans to {args.out / 'images'} and their label maps to "
        f"{args.out / 'labels'}"
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    from ratgan.data.io import (
        format_voxel_size,
        read_label,
        read_scan,
        same_voxel_size,
        scan_in_ras,
    )
    from ratgan.viz import orthogonal_views

    if args.out.suffix.lower() != ".png":
        raise RatganError(f"output file {args.out} must end in .png.")
    if args.labels is not None and len(args.labels) != len(args.files):
        raise RatganError(
            f"--labels names {len(args.labels)} label maps for "
            f"{len(args.files)} scans; give one per scan."
        )
    scans = [read_scan(f) for f in args.files]
    labels = (
        [
            None if str(lab) == "-" else read_label(lab, scan)
            for lab, scan in zip(args.labels, scans, strict=True)
        ]
        if args.labels is not None
        else None
    )
    given = labels if labels is not None else [None] * len(scans)
    pairs = [scan_in_ras(scan, lab) for scan, lab in zip(scans, given, strict=True)]
    scans = [scan for scan, _ in pairs]
    if labels is not None:
        labels = [lab for _, lab in pairs]
    # one mm scale for every panel: the voxel size (from the affine, in RAS order) of the first
    zooms = scans[0].voxel_size
    for scan in scans[1:]:
        if not same_voxel_size(scan.voxel_size, zooms):
            log.warning(
                "scan file %s has voxel size %s but %s has %s: every panel is drawn at the "
                "latter, so its proportions are off",
                scan.path,
                format_voxel_size(scan.voxel_size),
                scans[0].path.name,
                format_voxel_size(zooms),
            )
    out = orthogonal_views(
        [s.data for s in scans],
        args.out,
        labels=labels,
        titles=[f.name for f in args.files],
        zooms=zooms,
    )
    print(f"wrote {out}")
    return 0
