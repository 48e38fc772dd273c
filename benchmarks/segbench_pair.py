"""Compare one test of two segbench runs on their shared (seed, test scan) pairs.

    python benchmarks/segbench_pair.py SEGBENCH_A SEGBENCH_B [--tests 3,6]

Both folders must come from ``ratgan segbench`` on the same real scans, split and seeds (for
example a GAN's pool and a control pool labelled the same way).  For each test, prints the
mean ΔDice of A minus B per score, its 95 % interval and p-value from the crossed
random-effects model of seeds and test scans (the statistics of ``ratgan segbench``) and how
many seeds favour A.  Refuses two runs whose test or validation split differ, or whose
networks of a compared (test, seed) trained on different real scans; where both ran test 1,
checks that it agrees.  Not pass/fail.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ratgan.segmentation.stats import compare

SCORES = ("global", "GM", "WM", "CSF")


def _runs(folder: Path) -> list[dict]:
    return json.loads((folder / "runs.json").read_text())["runs"]


def check_same_setup(
    a: Path, b: Path, runs_a: list[dict], runs_b: list[dict], tests: list[int]
) -> str:
    """Raise SystemExit unless A and B share the splits and, for each compared (test, seed),
    the real training scans; return a line on what was checked (``runs_*``: their runs.json)."""
    plan_a, plan_b = (json.loads((f / "plan.json").read_text()) for f in (a, b))
    for key in ("test_split", "val_split"):
        if plan_a[key] != plan_b[key]:
            raise SystemExit(f"{a} and {b} have different {key}s: not comparable.")
    real_a, real_b = (
        {(r["test"], r["seed"]): r["real"] for r in p["runs"] if r["test"] in tests}
        for p in (plan_a, plan_b)
    )
    for key in sorted(real_a.keys() & real_b.keys()):
        if real_a[key] != real_b[key]:
            raise SystemExit(
                f"test {key[0]}, seed {key[1]}: {a} and {b} trained on different real scans."
            )
    base_a = {r["seed"]: r["per_scan"]["global"] for r in runs_a if r["test"] == 1}
    base_b = {r["seed"]: r["per_scan"]["global"] for r in runs_b if r["test"] == 1}
    checked = "same test and validation splits and real training scans per (test, seed)"
    if base_a and base_b:
        return f"{checked}; test 1 per-scan Dice identical in both runs: {base_a == base_b}"
    return f"{checked}; test 1 not run in both, so not compared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--tests", default="3,6")
    args = ap.parse_args()
    tests = [int(t) for t in args.tests.split(",")]
    a, b = _runs(args.a), _runs(args.b)
    print(check_same_setup(args.a, args.b, a, b, tests))
    for test in tests:
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
