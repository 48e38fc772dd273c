"""Benchmark: does the evaluation order real > trained > untrained on the phantom cohort?

    python benchmarks/evaluate_phantom.py [--run RUN_DIR] [--subjects 100] [--out DIR]

Sets, all evaluated with ``ratgan evaluate``'s code against the same real scans:
* real: the phantom cohort (``--subjects`` scans), or the training scans of ``--run``;
* held-out real: a phantom cohort with another seed (the reference row: what a perfect
  generator scores);
* untrained: scans of a randomly initialised generator of the run's (or the demo preset's)
  architecture, written as a run folder with an iteration-0 checkpoint and evaluated through
  the run-folder path of ``ratgan evaluate``;
* noise: uniform noise volumes (``--no-noise`` to skip);
* trained: ``--run RUN_DIR``, a trained run folder, when given.

Prints every figure it measures: the report tables, the per-metric ordering checks and the
timing.  Not part of pass/fail.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def untrained_run(folder: Path, config_source: str, seed: int) -> Path:
    """A run folder holding a freshly initialised (untrained) generator as its checkpoint."""
    import torch

    from ratgan.config import load_config, save_config
    from ratgan.models import build_networks
    from ratgan.training.checkpoint import save_checkpoint

    cfg = load_config(config_source)
    folder.mkdir(parents=True, exist_ok=True)
    save_config(cfg, folder / "config.yaml")
    torch.manual_seed(seed)
    nets = build_networks(cfg.model)
    save_checkpoint(
        folder, 0, {"networks": {"G": nets.generator.state_dict()}, "config": cfg.to_dict()}
    )
    return folder


def noise_set(folder: Path, n: int, like: Path, seed: int) -> Path:
    """``n`` uniform-noise volumes with the shape and header of scan ``like``."""
    from ratgan.data.io import read_scan, write_nifti

    ref = read_scan(like)
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        vol = rng.random(ref.shape, dtype=np.float32) * float(ref.data.max())
        write_nifti(folder / f"noise_{i:04d}.nii.gz", vol, ref.affine, ref.header, dtype=np.float32)
    return folder


def same_phantom_version(cohort: Path) -> bool:
    """Whether today's phantom code renders subject 0 of ``cohort`` (a phantom folder) as is."""
    import json
    import tempfile

    from ratgan.data.io import read_scan
    from ratgan.data.phantom import write_cohort

    meta = Path(cohort) / "phantom.json"
    if not meta.is_file():
        return True  # not a phantom cohort: nothing to compare
    seed = int(json.loads(meta.read_text())["seed"])
    with tempfile.TemporaryDirectory() as tmp:
        fresh = write_cohort(Path(tmp), subjects=1, seed=seed, progress=False)[0]
        return bool(
            np.allclose(read_scan(fresh).data, read_scan(Path(cohort) / "images" / fresh.name).data)
        )


def write_csv(path: Path, entries: list) -> Path:
    """A CSV source (column ``image``) listing ``entries``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("image\n" + "".join(f"{e.image.resolve()}\n" for e in entries))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, help="a trained run folder (the 'trained' set)")
    ap.add_argument(
        "--subjects",
        type=int,
        default=100,
        help="real phantom scans when no --run is given (default 100)",
    )
    ap.add_argument(
        "--heldout",
        type=int,
        default=None,
        help="held-out phantom scans (default: as many as real)",
    )
    ap.add_argument(
        "--n-synthetic",
        type=int,
        default=None,
        help="scans per synthetic set (default: as many as real)",
    )
    ap.add_argument("--out", type=Path, default=Path("/tmp/ratgan-bench-evaluate"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a tenth of the paper's comparisons")
    ap.add_argument("--no-noise", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    import torch

    from ratgan.data.io import list_scans
    from ratgan.data.phantom import write_cohort
    from ratgan.evaluation import QUICK, EvaluationSettings, run_evaluation
    from ratgan.evaluation.report import (
        EXTRA_COLUMNS,
        PAPER_COLUMNS,
        beats,
        memorisation_table,
        row_metrics,
        table,
        value,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out
    t0 = time.perf_counter()
    if args.run is not None:
        from ratgan.runs import read_run_data

        real = Path(read_run_data(args.run).source)
        config_source = str(args.run / "config.yaml")
    else:
        real = out / "real"
        if (
            not (real / "images").is_dir()
            or len(list((real / "images").iterdir())) != args.subjects
        ):
            write_cohort(real, subjects=args.subjects, seed=args.seed, progress=False)
        config_source = "demo"
    heldout = out / "heldout"
    if args.run is not None and not same_phantom_version(real):
        # the run was trained on a cohort that today's phantom code no longer renders: a new
        # cohort would differ in distribution, so hold out half of the run's own scans instead
        # (the generator saw them, which only matters for the memorisation figures)
        entries = list_scans(real)
        half = len(entries) // 2
        real, heldout = (
            write_csv(out / "real.csv", entries[half:]),
            write_csv(out / "heldout.csv", entries[:half]),
        )
        print(
            "note: the run's training cohort was rendered by another phantom version; the "
            "held-out set is half of the run's own training scans"
        )
    else:
        write_cohort(
            heldout,
            subjects=args.heldout or len(list_scans(real)),
            seed=args.seed + 1000,
            progress=False,
        )
    n_real = len(list_scans(real))
    n_held = len(list_scans(heldout))
    n_syn = args.n_synthetic or n_real
    synthetic: dict[str, Path] = {}
    if args.run is not None:
        synthetic["trained"] = args.run
    synthetic["untrained"] = untrained_run(out / "untrained-run", config_source, args.seed + 7)
    if not args.no_noise:
        synthetic["noise"] = noise_set(
            out / "noise", n_syn, list_scans(real)[0].image, args.seed + 11
        )
    prep_s = time.perf_counter() - t0

    settings = EvaluationSettings(seed=args.seed, progress=True, **(QUICK if args.quick else {}))
    res = run_evaluation(
        real, synthetic, out / "report", heldout=heldout, settings=settings, n_generate=n_syn
    )
    rows = {name: row_metrics(res, name) for name in res.rows}
    ref_name = res.reference_row
    ref = rows[ref_name]
    target = value(ref, "msssim")

    print(f"\nreal: {real} ({n_real} scans); held-out: {n_held}; synthetic sets: {n_syn} each")
    print(
        f"comparisons: {settings.comparisons} pairs, MS-SSIM {settings.msssim_comparisons} "
        f"pairs per set, {settings.split_repeats} repeats for set distances\n"
    )
    print(table(res, PAPER_COLUMNS))
    print()
    print(table(res, EXTRA_COLUMNS))
    print()
    print(memorisation_table(res))
    print()
    keys = (*PAPER_COLUMNS, *EXTRA_COLUMNS)

    def check(better_name: str, better: dict, worse_name: str, worse: dict) -> bool:
        won = beats(better, worse, target, keys)
        tied = [k for k in won if not won[k] and not beats(worse, better, target, (k,))[k]]
        lost = [k for k, v in won.items() if not v and k not in tied]
        print(
            f"{better_name} beats {worse_name} on {sum(won.values())}/{len(won)} metrics"
            + (f"; ties: {', '.join(tied)}" if tied else "")
            + (f"; loses on: {', '.join(lost)}" if lost else "")
        )
        return not lost

    ok = check("held-out real (reference row)", ref, "untrained", rows["untrained"])
    if "noise" in rows:
        ok &= check("held-out real (reference row)", ref, "noise", rows["noise"])
    if "trained" in rows:
        check("held-out real (reference row)", ref, "trained", rows["trained"])
        check("trained", rows["trained"], "untrained", rows["untrained"])
    timing = res.timing_s
    print(
        "\ntiming (s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in timing.items())
        + f", data preparation {prep_s:.1f}"
    )
    print(f"report: {out / 'report' / 'report.md'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
