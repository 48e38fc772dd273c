"""``ratgan evaluate``: the paper's quantitative protocol plus memorisation and distribution
distances, written as a report folder (report.md, metrics.json, figures)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _threshold(text: str) -> float | None:
    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a number (got {text!r})") from None
    if not value < 1:  # a similarity never exceeds 1: nothing could be flagged
        raise argparse.ArgumentTypeError(f"must be 'auto' or a number below 1 (got {text!r})")
    return value


def _rate(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1) (got {text!r})") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1) (got {text!r})")
    return v


def _scales(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or 1-5 (got {text!r})") from None
    if not 1 <= n <= 5:
        raise argparse.ArgumentTypeError(f"must be 'auto' or 1-5 (got {text!r})")
    return n


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {text!r})") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {text!r})")
    return n


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the `ratgan` parser."""
    p = sub.add_parser(
        "evaluate",
        help="compare synthetic scans with real ones (paper Table 2 and more)",
        description="Evaluate synthetic scan sets against real scans: MS-SSIM (diversity), NCC, "
        "MAE, MMD, PSNR, RMSE with the paper's random-pairing protocol, RBF-MMD, "
        "Frechet distance, k-NN precision/recall and density/coverage in a fixed random 3D "
        "feature space, memorisation (nearest training scan), and figures.  A synthetic "
        "source may be a trained run folder: scans are generated from it first.",
    )
    p.add_argument(
        "--real",
        required=True,
        metavar="SRC",
        help="the real (training) scans: folder, glob or CSV",
    )
    p.add_argument(
        "--synthetic",
        required=True,
        nargs="+",
        action="extend",
        metavar="NAME=SRC",
        help="synthetic sets: NAME=folder/glob/CSV or NAME=RUN_FOLDER (repeatable)",
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="report folder")
    p.add_argument(
        "--heldout",
        metavar="SRC",
        default=None,
        help="real scans the generator never saw, for the reference row (default: "
        "real scans compared with each other, set distances on random halves)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument(
        "--comparisons",
        type=_positive,
        default=21_000,
        help="random (real, synthetic) pairs for NCC/MAE/MMD/PSNR/RMSE (paper: 21000)",
    )
    p.add_argument(
        "--msssim-comparisons",
        type=_positive,
        default=2_100,
        help="random pairs inside each set for MS-SSIM (paper: 2100)",
    )
    p.add_argument(
        "--msssim-kernel",
        type=_positive,
        default=3,
        help="MS-SSIM Gaussian window size in voxels (default 3)",
    )
    p.add_argument(
        "--msssim-sigma", type=float, default=1.5, help="MS-SSIM Gaussian sigma (default 1.5)"
    )
    p.add_argument(
        "--msssim-scales",
        type=_scales,
        default=None,
        help="MS-SSIM scales, or auto: as many as fit, at most 4 (default auto)",
    )
    p.add_argument(
        "--split-repeats",
        type=_positive,
        default=10,
        help="repeats of the real split / subsampling for set distances (default 10)",
    )
    p.add_argument(
        "--knn-k", type=_positive, default=3, help="k of k-NN precision/recall and density/coverage"
    )
    p.add_argument(
        "--protocol",
        choices=("ratgan", "authors"),
        default="ratgan",
        help="ratgan (ours, default) or authors: the published code's computation "
        "(batches of 2, padded volumes for NCC/MAE, Kwon's MS-SSIM, ± over "
        "epoch averages); docs/evaluation.md compares them",
    )
    p.add_argument(
        "--copy-threshold",
        type=_threshold,
        default=None,
        help="similarity above which a synthetic scan is flagged as a near-copy of a "
        "training scan, or auto (default: calibrated on real scans so that "
        "--copy-false-positive-rate of never-seen real scans pass it)",
    )
    p.add_argument(
        "--copy-false-positive-rate",
        type=_rate,
        default=0.01,
        help="share of never-seen real scans the auto near-copy threshold may flag (default 0.01)",
    )
    p.add_argument(
        "--copy-confidence",
        type=_rate,
        default=0.95,
        help="confidence with which the auto near-copy threshold keeps that share "
        "(a one-sided normal tolerance bound; default 0.95)",
    )
    p.add_argument(
        "--feature-seed",
        type=int,
        default=0,
        help="seed of the random 3D feature network (compare only equal seeds)",
    )
    p.add_argument(
        "--n-generate",
        type=_positive,
        default=None,
        help="scans generated from a run folder (default: as many as real scans)",
    )
    p.add_argument(
        "--batch-size",
        type=_positive,
        default=2,
        help="MS-SSIM pairs per batch (default 2, fastest on a CPU; more on a GPU)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument(
        "--threads",
        type=_positive,
        default=1,
        help="torch CPU threads (default 1: the protocol's many small operations "
        "gain little from more, and lose much when the cores are shared)",
    )
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument(
        "--no-anatomy",
        action="store_true",
        help="skip the anatomy feature space (a segmentation network trained on the "
        "real scans' label maps, cached; see docs/evaluation.md)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def parse_sets(items: list[str]) -> dict[str, str]:
    """NAME=SRC items as an ordered dict; a bare SRC is named after its last path part."""
    from ratgan.errors import RatganError
    from ratgan.evaluation import RESERVED_SET_NAMES

    out: dict[str, str] = {}
    for item in items:
        name, sep, src = item.partition("=")
        if not sep:
            name, src = Path(item.rstrip("/")).name or item, item
        name, src = name.strip(), src.strip()
        if not name or not src:
            raise RatganError(f"--synthetic {item!r} must be NAME=SRC.")
        if name in out:
            raise RatganError(f"--synthetic names set {name!r} twice; names must be distinct.")
        if name.lower() in RESERVED_SET_NAMES:
            raise RatganError(
                f"--synthetic: {name!r} names a row of real scans in the report; give the set "
                "another name."
            )
        out[name] = src
    return out


def run(args: argparse.Namespace) -> int:
    """Run ``ratgan evaluate``."""
    import torch

    from ratgan.devices import select_device
    from ratgan.errors import RatganError
    from ratgan.evaluation import EvaluationSettings, MSSSIMSettings, run_evaluation

    if args.msssim_kernel % 2 == 0:
        raise RatganError(f"--msssim-kernel must be odd (got {args.msssim_kernel}).")
    torch.set_num_threads(args.threads)
    device = str(select_device(args.device))
    settings = EvaluationSettings(
        seed=args.seed,
        protocol=args.protocol,
        comparisons=args.comparisons,
        msssim_comparisons=args.msssim_comparisons,
        msssim=MSSSIMSettings(
            kernel_size=args.msssim_kernel,
            kernel_sigma=args.msssim_sigma,
            scales=args.msssim_scales,
        ),
        split_repeats=args.split_repeats,
        knn_k=args.knn_k,
        copy_threshold=args.copy_threshold,
        copy_false_positive_rate=args.copy_false_positive_rate,
        copy_confidence=args.copy_confidence,
        feature_seed=args.feature_seed,
        batch_size=args.batch_size,
        device=device,
        progress=not args.no_progress,
        anatomy=not args.no_anatomy,
    )
    result = run_evaluation(
        args.real,
        parse_sets(args.synthetic),
        args.out,
        args.heldout,
        settings,
        args.n_generate,
        figures=not args.no_figures,
    )
    from ratgan.evaluation.report import PAPER_COLUMNS, table

    print(f"protocol: {result.protocol}")
    print(table(result, PAPER_COLUMNS))
    print(f"report: {args.out / 'report.md'} ({result.timing_s['total']:.0f} s)")
    return 0
