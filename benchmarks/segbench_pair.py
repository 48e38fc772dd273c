"""Compare one test of two segbench runs on their shared (seed, test scan) pairs.

    python benchmarks/segbench_pair.py SEGBENCH_A SEGBENCH_B [--tests 3,6]

Both folders must come from ``ratgan segbench`` on the same real scans, split and seeds (for
example a GAN's pool and a control pool labelled the same way).  For each test, prints the
mean ΔDice of A minus B per score, its 95 % interval and p-value from the crossed
random-effects model of seeds and test scans (the statistics of ``ratgan segbench``) and how
many seeds favour A.  Checks first that test 1 agrees in both runs.  Not pass/fail.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ratgan.segmentation.stats import compare

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
            c = compare(runs, 2, score)
            print(
                f"test {test} {score:6s} A - B = {c.mean_delta:+.4f} "
                f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]  p = {c.p_value:.2g}  "
                f"seeds favouring A: {c.seeds_better} of {c.n_seeds}"
            )


if __name__ == "__main__":
    main()
