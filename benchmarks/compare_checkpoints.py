"""Evaluate several checkpoints (or the raw and EMA weights of one) in one report.

    python benchmarks/compare_checkpoints.py --real HELDOUT --out DIR \
        hl800=runs/a@9000 hl200=runs/b@9000 raw=runs/a@9000:raw [--n 64]

Each ``NAME=RUN@ITERATION[:raw|:ema]`` generates ``--n`` scans from that checkpoint (EMA
weights unless ``:raw``; seed 1, bf16, as ``quality_vs_compute.py``); each ``NAME=FOLDER`` is a
folder of scans taken as it is (generated earlier, or edited by another benchmark).  All are
evaluated together against ``--real`` (held-out scans with label maps, so both feature spaces
are measured): one report, the same real features and random draws for every set, so their
rows compare directly.  Prints one line per set with the numbers of ``quality_vs_compute.py``
(Fréchet, precision and recall in both spaces, MS-SSIM, axis/diagonal power ratios) and the
held-out reference row.  Generated sets are kept in ``DIR/gen`` and reused on a rerun.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_vs_compute import summarise  # noqa: E402  (a sibling script, not a package)


def parse_set(text: str) -> tuple[str, Path, int | None, str]:
    """``NAME=RUN@ITERATION[:raw|:ema]`` -> (name, run, iteration, weights); ``NAME=FOLDER`` (an
    existing folder, checked first: generated folders are named ``NAME@ITERATION-WEIGHTS``) ->
    (name, folder, None, "")."""
    name, sep, rest = text.partition("=")
    if sep and name and Path(rest).is_dir():
        return name, Path(rest), None, ""
    weights = "ema"
    if rest.endswith((":raw", ":ema")):
        rest, weights = rest[:-4], rest[-3:]
    run, at, iteration = rest.rpartition("@")
    if not (sep and name and at and run and iteration.isdigit()):
        raise SystemExit(f"{text!r}: expected NAME=RUN@ITERATION[:raw|:ema] or NAME=FOLDER")
    return name, Path(run), int(iteration), weights


def main(argv: list[str] | None = None) -> int:
    from ratgan.evaluation import EvaluationSettings, run_evaluation
    from ratgan.generation import generate_scans
    from ratgan.training.checkpoint import checkpoint_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", help="NAME=RUN@ITERATION[:raw|:ema] or NAME=FOLDER")
    parser.add_argument("--real", type=Path, required=True, help="held-out scans with labels")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=64)
    args = parser.parse_args(argv)
    folders: dict[str, Path] = {}
    for name, run, iteration, weights in map(parse_set, args.sets):
        if iteration is None:
            folders[name] = run
            continue
        gen = args.out / "gen" / f"{name}@{iteration}-{weights}"
        if not (gen / "manifest.json").is_file():
            generate_scans(
                run,
                args.n,
                gen,
                seed=1,
                checkpoint=checkpoint_path(run, iteration),
                device="cpu",
                progress=False,
                precision="bf16",
                weights=weights,
            )
        folders[name] = gen
    report = args.out / "eval"
    settings = EvaluationSettings(seed=0, comparisons=300, msssim_comparisons=105, progress=False)
    run_evaluation(args.real, folders, report, settings=settings, figures=False)
    metrics = json.loads((report / "metrics.json").read_text())
    for name in [metrics["reference_row"], *folders]:
        row = summarise(metrics, name)
        print(name, " ".join(f"{k}={v:.3f}" for k, v in row.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
