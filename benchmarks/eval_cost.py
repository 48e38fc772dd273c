"""What quality tracking (train.eval_every) costs, measured in a finished or running run.

    python benchmarks/eval_cost.py RUN [RUN ...]

Reads RUN/metrics.jsonl: the training clock of the last loss line and the probe time of every
quality line (``eval_seconds``), and prints the share of the run's wall time spent evaluating,
with the interval and sample count from RUN/config.yaml.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from ratgan.training.figures import read_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    for run in args.runs:
        losses = read_metrics(run / "metrics.jsonl", kind=None)
        quality = read_metrics(run / "metrics.jsonl", kind="quality")
        cfg = yaml.safe_load((run / "config.yaml").read_text())["train"]
        if not losses or not quality:
            print(f"{run}: no quality lines (train.eval_every = {cfg['eval_every']})")
            continue
        wall = losses[-1]["seconds"]
        spent = sum(r["eval_seconds"] for r in quality)
        its = losses[-1]["iteration"] - losses[0]["iteration"]
        per_it = (losses[-1]["seconds"] - losses[0]["seconds"]) / max(its, 1)
        print(
            f"{run}: {len(quality)} evaluations of {cfg['eval_samples']} scans every "
            f"{cfg['eval_every']} iterations; {spent:.1f} s of {wall:.1f} s "
            f"= {100 * spent / wall:.2f} % of the run (mean {spent / len(quality):.2f} s each, "
            f"training {per_it:.3f} s/iteration)"
        )


if __name__ == "__main__":
    main()
