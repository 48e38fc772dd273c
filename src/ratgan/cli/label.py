"""Subcommand `ratgan label`: GM/WM/CSF label maps for any folder of scans, by atlas
registration (ANTs) of labelled scans."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add label to the `ratgan` parser."""
    p = sub.add_parser(
        "label",
        help="label scans by registering labelled atlases to them (ANTs)",
        description="Register K labelled scans (the atlases: affine, then SyN) to every scan "
        "of --scans, carry their label maps over and fuse them by majority vote. "
        "Writes OUT/<scan name> (uint8, 0 background, 1 GM, 2 WM, 3 CSF) with the "
        "scan's header; results are cached in OUT/.cache by content, atlases, "
        "parameters and --volume-index. An OUT where a label map would overwrite a scan "
        "or an atlas file is refused.",
    )
    p.add_argument(
        "--atlas",
        required=True,
        type=Path,
        help="labelled scans: folder with images/ and labels/, or a CSV",
    )
    p.add_argument(
        "--scans",
        required=True,
        type=Path,
        help="scans to label: folder, glob or CSV of .nii/.nii.gz files",
    )
    p.add_argument("--out", required=True, type=Path, help="folder for the label maps")
    p.add_argument("--k", type=int, default=5, help="atlases per scan (default 5)")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the atlas draw and of ANTs' metric sampling"
    )
    add_syn_iterations(p)
    p.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    p.add_argument("--volume-index", type=int, help="volume of 4-D scans (default: mean)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_label)


def add_syn_iterations(p: argparse.ArgumentParser) -> None:
    """The atlas registration's ``--syn-iterations`` (shared by `label` and `segbench`)."""
    p.add_argument(
        "--syn-iterations",
        type=int,
        nargs="+",
        default=[20, 10, 5],
        metavar="N",
        help="atlas registration: SyN iterations per level, coarse to full resolution "
        "(default 20 10 5; 20 10 20 labels more accurately at about twice the CPU time)",
    )


def run_label(args: argparse.Namespace) -> int:
    """Label the scans and print where the label maps are."""
    from ratgan.data.io import list_scans
    from ratgan.errors import RatganError
    from ratgan.segmentation.atlas import AtlasParams, check_out_dir, label_scans, make_atlases
    from ratgan.segmentation.labels import record_atlases

    if args.workers < 1:
        raise RatganError("--workers must be at least 1.")
    if min(args.syn_iterations) < 0:
        raise RatganError(f"--syn-iterations must be counts >= 0 (got {args.syn_iterations}).")
    entries = list_scans(args.atlas, require_labels=True)
    targets = [e.image for e in list_scans(args.scans)]
    # every labelled scan of --atlas, not only the k drawn, must survive --out
    check_out_dir(args.out, targets, [p for e in entries for p in (e.image, e.label) if p])
    atlases = make_atlases(entries, args.k, args.seed)
    out = label_scans(
        targets,
        atlases,
        args.out,
        AtlasParams(k=args.k, seed=args.seed, syn_iterations=tuple(args.syn_iterations)),
        workers=args.workers,
        volume_index=args.volume_index,
        progress=not args.no_progress,
    )
    record_atlases(args.out, atlases)
    print(
        f"wrote {len(out)} label maps to {args.out} (atlases: "
        f"{', '.join(a.image.name for a in atlases)})"
    )
    return 0
