"""Compare one test of two segbench runs on their shared (seed, test scan) pairs.

    python benchmarks/segbench_pair.py SEGBENCH_A SEGBENCH_B [--tests 3,6]

Both folders must come from ``ratgan segbench`` on the same real scans, split and seeds (for
example a GAN's pool and a control pool labelled the same way).  For each test, prints the
mean ΔDice of A minus B per score, the two-way bootstrap 95 % interval over seeds and test
scans (the statistics of ``ratgan segbench``) and how many seeds favour A.  Checks first
that test 1 agrees in both runs.  Not pass/fail.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ratgan.segmentation.stats import bootstrap_ci, paired_delta_matrix

SCORES = ("global", "GM", "WM", "CSF")


def _runs(folder: Path) -> list[dict]:
    return json.loads((folder / "runs.json").read_text())["runs"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--tests", default="3,6")
    args = ap.parse_args()
    a, b = _runs(args.a), _runs(args.b)
    base_a = {r["seed"]: r["per_scan"]["global"] for r in a if r["test"] == 1}
    base_b = {r["seed"]: r["per_scan"]["global"] for r in b if r["test"] == 1}
    same = base_a == base_b
    print(f"test 1 per-scan Dice identical in both runs: {same}")
    for test in (int(t) for t in args.tests.split(",")):
        # A's runs of this test play "test 2", B's play the base "test 1" of the pairing
        runs = [{**r, "test": 2} for r in a if r["test"] == test]
        runs += [{**r, "test": 1} for r in b if r["test"] == test]
        for score in SCORES:
            m = paired_delta_matrix(runs, 2, score)
            lo, hi = bootstrap_ci(m)
            favour = int((np.nanmean(m, axis=1) > 0).sum())
            print(
                f"test {test} {score:6s} A - B = {np.nanmean(m):+.4f} "
                f"[{lo:+.4f}, {hi:+.4f}]  seeds favouring A: {favour} of {len(m)}"
            )


if __name__ == "__main__":
    main()
