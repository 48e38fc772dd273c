"""Subcommands `ratgan train`, `ratgan generate` and `ratgan demo`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ratgan.config import Config


def register(sub: argparse._SubParsersAction) -> None:
    """Add train, generate and demo to the `ratgan` parser."""
    from ratgan.config import preset_names  # light: no torch

    p = sub.add_parser(
        "train",
        help="train an alpha-GAN (or a latent diffusion model) on a folder of NIfTI scans",
        description="Train one of the paper's models, a latent diffusion model (ldm, "
        "ldm-demo) or your YAML config.",
    )
    p.add_argument(
        "--config",
        help=f"preset ({', '.join(preset_names())}) or YAML file (default sigmarat2; not "
        "with --resume)",
    )
    p.add_argument("--data", help="folder, glob or CSV of .nii/.nii.gz scans")
    p.add_argument("--out", type=Path, help="run folder (not needed with --dry-run)")
    p.add_argument(
        "--iterations",
        type=int,
        help="iteration target; with --resume it extends (or shortens) the stored one",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help="scans per training step (train.batch_size; for a latent diffusion run, stage 2's "
        "only: stage 1 takes ldm.autoencoder.batch_size)",
    )
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1 ...")
    p.add_argument("--precision", choices=["fp32", "bf16"])
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--eval-every",
        type=int,
        help="every K iterations, feature-space metrics of generated scans "
        "(metrics.jsonl, quality_curves.png, checkpoints/best.pt); 0 turns off",
    )
    p.add_argument(
        "--eval-real",
        help="real scans (folder, glob or CSV; e.g. held-out subjects) that the quality "
        "tracking compares against instead of the training scans",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its latest checkpoint with its stored "
        "config; only --iterations, --device and --eval-every may change it",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved config and parameter counts, then exit",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_train)

    g = sub.add_parser("generate", help="write synthetic NIfTI scans from a trained run")
    g.add_argument("run", type=Path, help="run folder written by `ratgan train`")
    g.add_argument("--n", type=int, default=10, help="number of scans")
    g.add_argument("--out", required=True, type=Path)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument(
        "--reference",
        type=Path,
        help="real scan whose header/affine the files carry (default: first training scan)",
    )
    g.add_argument(
        "--checkpoint",
        default=None,
        help="latest (default), best (kept by train.eval_every) or a checkpoint file",
    )
    g.add_argument(
        "--weights",
        choices=["ema", "raw"],
        default="ema",
        help="ema: the moving average of G where the run keeps one (default); "
        "raw: the trained weights",
    )
    g.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="codes per forward pass (a scan's values depend on it only by rounding)",
    )
    g.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        help="sampling arithmetic (default: the run's train.precision)",
    )
    g.add_argument(
        "--writers",
        type=int,
        help="threads writing files while sampling (default: up to 8, one per core)",
    )
    g.add_argument(
        "--sampler",
        choices=["ddim", "ddpm"],
        help="latent diffusion runs only: the sampler (default: the run's, ddim)",
    )
    g.add_argument(
        "--steps",
        type=int,
        help="latent diffusion runs only: sampling steps (default: the run's, 50)",
    )
    g.add_argument(
        "--codes",
        choices=["prior", "kde"],
        default="prior",
        help="alpha-GAN runs: codes from the prior N(0, I) (default), or kde: from a kernel "
        "density around the encoder's codes of the training scans (more of the real anatomy; "
        "check the set for near-copies with `ratgan evaluate`)",
    )
    g.add_argument(
        "--kde-width",
        type=float,
        default=None,
        help="--codes kde: the kernel's width in prior standard deviations (default 1.5; "
        "smaller widths come closer to the training scans)",
    )
    g.add_argument(
        "--copy-check",
        choices=["auto", "on", "off"],
        default="auto",
        help="compare the scans with the run's training scans for near-copies and write "
        "near_copies.json beside them (auto, the default: with --codes kde only)",
    )
    g.add_argument("--device", default="auto")
    g.add_argument("--no-progress", action="store_true")
    g.set_defaults(func=run_generate)

    d = sub.add_parser("demo", help="the whole pipeline on the built-in phantom cohort")
    d.add_argument("--out", required=True, type=Path)
    d.add_argument("--subjects", type=int, default=64, help="phantom scans to train on")
    d.add_argument(
        "--heldout",
        type=int,
        default=32,
        help="more phantom scans of the same cohort, never trained on: the real "
        "reference of the evaluation",
    )
    d.add_argument(
        "--config",
        default="demo",
        help="preset or YAML to train (default: demo; long: demo without the up-sampling grid, "
        "for 8,000-iteration runs; demo32 is the earlier 32^3 one)",
    )
    d.add_argument("--iterations", type=int, help="override the demo preset's iterations")
    d.add_argument(
        "--codes",
        choices=["kde", "prior"],
        default="kde",
        help="codes of the generated scans (default kde: near the training scans' codes, as "
        "measured best; prior: N(0, I), as the paper samples)",
    )
    d.add_argument(
        "--kde-width", type=float, default=None, help="--codes kde: the width (default 1.5)"
    )
    d.add_argument("--n-synthetic", type=int, default=32)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default="auto")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=run_demo)


def _overrides(args: argparse.Namespace) -> dict:
    pairs = {
        "train.iterations": args.iterations,
        "train.batch_size": args.batch_size,
        "train.device": args.device,
        "train.precision": args.precision,
        "train.seed": args.seed,
        "train.eval_every": args.eval_every,
        "train.eval_real": _absolute(args.eval_real),
    }
    return {k: v for k, v in pairs.items() if v is not None}


def _absolute(source: str | None) -> str | None:
    """A path or glob made absolute, as the run's data source is (the run folder may be
    resumed from another working directory): an existing path resolved, a glob (or a path
    that does not exist, whose error then names it in full) as ``os.path.abspath`` of it."""
    if source is None:
        return None
    if Path(source).exists():
        return str(Path(source).resolve())
    return os.path.abspath(source)


# Flags a resumed run refuses: they would change the run it continues (its stored config).
_FIXED_ON_RESUME = {
    "config": "--config",
    "data": "--data",
    "batch_size": "--batch-size",
    "precision": "--precision",
    "seed": "--seed",
    "eval_real": "--eval-real",
}


def _resume_config(args: argparse.Namespace) -> Config:
    """The stored config of the run in --out, with the overrides --resume allows, each stated."""
    from ratgan.errors import RatganError
    from ratgan.runs import read_run_config, run_paths

    given = [flag for key, flag in _FIXED_ON_RESUME.items() if getattr(args, key) is not None]
    if given:
        flags = f"{', '.join(given[:-1])} and {given[-1]}" if len(given) > 1 else given[0]
        raise RatganError(
            f"{flags} cannot be given with --resume: a resumed run continues exactly with the "
            f"config stored in {run_paths(args.out).config} (only --iterations, --device and "
            "--eval-every may change); start a new run with another --out to change it."
        )
    cfg = read_run_config(args.out)
    for key, value in (
        ("iterations", args.iterations),
        ("device", args.device),
        ("eval_every", args.eval_every),
    ):
        old = getattr(cfg.train, key)
        if value is not None and value != old:
            setattr(cfg.train, key, value)
            flag = "--" + key.replace("_", "-")
            print(
                f"resume: train.{key} {old} -> {value} ({flag}; stored in the run's config.yaml)",
                flush=True,
            )
    return cfg.validate()


def run_train(args: argparse.Namespace) -> int:
    """`ratgan train`."""
    from ratgan.config import load_config
    from ratgan.errors import RatganError

    if args.out is None and not args.dry_run:
        raise RatganError(
            "--out is required: the run folder to write (or, with --resume, the run to continue)."
        )
    if args.resume:
        cfg = _resume_config(args)
    else:
        cfg = load_config(args.config or "sigmarat2", _overrides(args))
        # a train.eval_real from a config file, too, is stored absolute (relative, a resume
        # from another working directory did not find it, or found another folder)
        cfg.train.eval_real = _absolute(cfg.train.eval_real)
    if args.dry_run:
        return _dry_run(cfg)
    if cfg.family == "ldm":
        return _train_ldm(cfg, args)
    from ratgan.evaluation.tracking import quality_probe_factory
    from ratgan.training.run import train

    result = train(
        cfg,
        args.data,
        args.out,
        resume=args.resume,
        progress=not args.no_progress,
        probe_factory=quality_probe_factory,
    )
    print(f"trained {result.iteration} iterations in {result.seconds:.1f} s -> {result.run_dir}")
    return 0


def _dry_run(cfg: Config) -> int:
    """Print the resolved config and every network's exact parameter count."""
    import yaml

    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())
    if cfg.family == "ldm":
        from ratgan.models.ldm import build_latent_diffusion

        counts = build_latent_diffusion(cfg).parameter_counts()
    else:
        from ratgan.models import build_networks

        counts = build_networks(cfg.model).parameter_counts()
    print("\nparameters:")
    for key, count in counts.items():
        print(f"  {key}: {count:,}")
    print(f"  total: {sum(counts.values()):,}")
    return 0


def _train_ldm(cfg: Config, args: argparse.Namespace) -> int:
    """`ratgan train` of a latent diffusion config."""
    from ratgan.evaluation.tracking import volume_probe_factory
    from ratgan.training.ldm import train_ldm

    result = train_ldm(
        cfg,
        args.data,
        args.out,
        resume=args.resume,
        progress=not args.no_progress,
        probe_factory=volume_probe_factory,
    )
    print(
        f"trained {result.iteration} iterations in {result.seconds:.1f} s "
        f"({result.cpu_seconds:.0f} CPU s in all) -> {result.run_dir}"
    )
    return 0


def run_generate(args: argparse.Namespace) -> int:
    """`ratgan generate` (the folder locked through the copy check, which writes into it)."""
    from ratgan.folder_lock import FolderLock
    from ratgan.generation import generate_scans

    from ratgan.generation.code_density import kde_width_for

    # a --kde-width without --codes kde is refused before the folder is locked (and made)
    kde_width_for(args.codes, args.kde_width)
    with FolderLock(args.out, "ratgan generate") as lock:
        paths = generate_scans(
            args.run,
            args.n,
            args.out,
            seed=args.seed,
            reference=args.reference,
            batch_size=args.batch_size,
            device=args.device,
            checkpoint=args.checkpoint,
            progress=not args.no_progress,
            precision=args.precision,
            writers=args.writers,
            weights=args.weights,
            sampler=args.sampler,
            steps=args.steps,
            codes=args.codes,
            kde_width=args.kde_width,
            lock=lock,
        )
        print(f"wrote {len(paths)} scans and {args.out / 'manifest.json'}")
        if args.copy_check == "on" or (args.copy_check == "auto" and args.codes == "kde"):
            from ratgan.evaluation.copy_check import check_generated, describe

            print(describe(check_generated(args.run, paths, args.out, not args.no_progress)))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """`ratgan demo`."""
    from ratgan.demo import run_demo as demo

    report = demo(
        args.out,
        subjects=args.subjects,
        heldout=args.heldout,
        config=args.config,
        codes=args.codes,
        kde_width=args.kde_width,  # run_demo refuses it without --codes kde, as generate does
        iterations=args.iterations,
        n_synthetic=args.n_synthetic,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
    )
    print(json.dumps({"report": str(report)}))
    return 0
