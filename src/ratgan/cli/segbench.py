"""Subcommand `ratgan segbench`: the downstream segmentation benchmark (paper Table 4)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ratgan.cli.label import add_syn_iterations


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def register(sub: argparse._SubParsersAction) -> None:
    """Add segbench to the `ratgan` parser."""
    p = sub.add_parser(
        "segbench",
        help="does synthetic data improve GM/WM/CSF segmentation? (paper Table 4)",
        description="Train a 3D U-Net on the paper's ten mixtures of real and synthetic scans, "
        "score each by Dice on held-out real scans over several seeds, and write "
        "table.md, results.json and dice.png. Resumable: rerun the same command to "
        "finish an interrupted benchmark.",
    )
    p.add_argument(
        "--real",
        required=True,
        type=Path,
        help="labelled real scans: folder with images/ and labels/, or a CSV",
    )
    p.add_argument(
        "--synthetic",
        required=True,
        type=Path,
        help="a run folder of `ratgan train` (scans are generated as needed) or a "
        "folder of synthetic NIfTI scans (label maps in its labels/ folder)",
    )
    p.add_argument("--out", required=True, type=Path, help="benchmark folder")
    p.add_argument(
        "--seeds",
        type=int,
        help="repetitions of each test (cpu: 5, full: 2); every test is compared "
        "with test 1 over the (seed, test scan) pairs",
    )
    p.add_argument(
        "--mode",
        choices=["cpu", "full"],
        default="cpu",
        help="cpu: narrow U-Net on the brain's box, 400 steps per network, bf16 "
        "(default); full: the paper's U-Net on whole volumes, lr 5e-4, "
        "patience 50",
    )
    p.add_argument(
        "--labels",
        choices=["atlas", "teacher", "joint"],
        default="atlas",
        help="labels of synthetic scans: atlas (default: labelled real training "
        "scans registered to each scan with ANTs, majority vote), teacher (a "
        "U-Net trained on the real training split; circular), joint "
        "(generated with the scan)",
    )
    p.add_argument(
        "--atlases",
        type=int,
        default=5,
        help="atlases registered to each synthetic scan (default 5)",
    )
    add_syn_iterations(p)
    p.add_argument(
        "--workers", type=int, default=2, help="processes for atlas registration (default 2)"
    )
    p.add_argument(
        "--allow-overlap",
        action="store_true",
        help="run even if the GAN run's data.json names real test scans (the report then says so)",
    )
    p.add_argument("--tests", type=_ints, help="subset of the tests 1-10, e.g. 1,2,10")
    p.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=(64, 64, 40),
        metavar=("X", "Y", "Z"),
        help="full-resolution shape scans are centre padded/cropped to (default 64 64 40)",
    )
    p.add_argument(
        "--downsample", type=int, help="average-pooling factor of the networks' input (default 1)"
    )
    p.add_argument(
        "--crop",
        choices=["brain", "none"],
        help="brain: train and predict inside the box around every real "
        "training/validation brain (cpu default); none: whole volumes (full)",
    )
    p.add_argument(
        "--channels", type=_ints, help="U-Net widths per level (cpu: 8,16,32,64; full: 64,...,1024)"
    )
    p.add_argument("--max-epochs", type=int, help="epoch cap (cpu: 1000, full: 500)")
    p.add_argument(
        "--max-steps",
        type=int,
        help="cap on optimiser steps per network, 0 for none (cpu: 400, full: 0)",
    )
    p.add_argument(
        "--patience",
        type=int,
        help="early stopping after this many epochs without a lower validation "
        "loss (cpu: 20, full: 50)",
    )
    p.add_argument("--batch-size", type=int, help="default 4")
    p.add_argument("--lr", type=float, help="Adam learning rate (cpu: 2e-3, full: 5e-4)")
    p.add_argument("--loss", choices=["dice", "dice_ce"], default="dice")
    p.add_argument("--precision", choices=["fp32", "bf16"], help="default bf16")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--split-seed", type=int, default=0, help="seed of the real test/validation/training split"
    )
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument(
        "--gate-margin",
        type=float,
        default=0.1,
        help="quality gate: widen the real range of each tissue fraction by this "
        "share of it, plus 0.005, on each side",
    )
    p.add_argument(
        "--gate-probe",
        type=int,
        default=8,
        help="atlas labels: stop when none of the first N synthetic scans labelled passes "
        "the quality gate, before labelling the rest (default 8; 0 labels every scan)",
    )
    p.add_argument("--volume-index", type=int, help="volume of 4-D scans (default: mean)")
    p.add_argument(
        "--reference",
        type=Path,
        help="real scan whose header generated scans carry (default: first real)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved options and the tests' data set sizes, then exit",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_segbench)


def options_from_args(args: argparse.Namespace):
    """BenchOptions from parsed arguments."""
    from ratgan.segmentation.bench import BenchOptions

    return BenchOptions(
        real=str(args.real),
        synthetic=str(args.synthetic),
        out=str(args.out),
        seeds=args.seeds,
        mode=args.mode,
        labels=args.labels,
        atlases=args.atlases,
        syn_iterations=tuple(args.syn_iterations),
        workers=args.workers,
        allow_overlap=args.allow_overlap,
        tests=args.tests,
        shape=tuple(args.shape),
        downsample=args.downsample,
        crop=args.crop,
        channels=tuple(args.channels) if args.channels else None,
        max_epochs=args.max_epochs,
        max_steps=args.max_steps,
        patience=args.patience,
        batch_size=args.batch_size,
        lr=args.lr,
        loss=args.loss,
        precision=args.precision,
        device=args.device,
        split_seed=args.split_seed,
        test_fraction=args.test_fraction,
        val_fraction=args.val_fraction,
        gate_margin=args.gate_margin,
        gate_probe=args.gate_probe,
        volume_index=args.volume_index,
        reference=str(args.reference) if args.reference else None,
        progress=not args.no_progress,
    ).resolved()


def run_segbench(args: argparse.Namespace) -> int:
    """Run or resume the benchmark and print where its reports are."""
    import json

    from ratgan.segmentation.bench import Benchmark

    opt = options_from_args(args)
    if args.dry_run:
        from ratgan.segmentation.data import find_entries
        from ratgan.segmentation.plan import TESTS, halves, make_split

        n = sum(e.label is not None for e in find_entries(opt.real))
        split = make_split(n, opt.split_seed, opt.test_fraction, opt.val_fraction)
        r = len(split.train)
        print(json.dumps(opt.fingerprint(), indent=2))
        print(
            f"real labelled scans: {n} -> train {r}, validation {len(split.val)}, "
            f"test {len(split.test)}; {opt.seeds} seeds; synthetic labels: {opt.labels}"
        )
        for t in TESTS:
            if opt.tests and t.number not in opt.tests:
                continue
            print(
                f"test {t.number:2d}: {halves(t.real_halves, r):4d} real + "
                f"{halves(t.synth_halves, r):4d} synthetic"
                f"{' + conventional augmentation' if t.augment else ''}   (paper: {t.paper})"
            )
        return 0
    results = Benchmark(opt).run()
    out = Path(opt.out)
    print((out / "table.md").read_text())
    print(
        f"wrote {out / 'table.md'}, {out / 'results.json'}, {out / 'dice.png'} "
        f"({results['seconds']['runs_this_call']} runs in "
        f"{results['seconds']['this_call']:.0f} s)"
    )
    return 0
