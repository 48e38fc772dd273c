"""Average G's moving-average weights over several checkpoints of a run, into a new run folder.

    python benchmarks/average_checkpoints.py RUN --iterations 5000 5500 6000 6500 7000 --out AVG
    python benchmarks/compare_checkpoints.py --real HELDOUT --out DIR avg=AVG@7000

A post-hoc average over a longer stretch of the trajectory than the EMA's half-life (as
Karras et al. 2024 reconstruct averages after training): each floating-point tensor of the
EMA generator is the plain mean of that tensor in the named checkpoints; other tensors (counters)
come from the last.  The new folder holds the run's config and data record and one checkpoint,
the last named one with its EMA generator replaced (written as ``branch_run.py`` writes a
branch, with the metrics up to that iteration), so every command that reads a run
(``ratgan generate``, ``compare_checkpoints.py``, ``ratgan segbench``) can sample from the
average.  The source run is only read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from branch_run import write_run_folder  # noqa: E402  (a sibling script, not a package)


def average_ema(run: Path, iterations: list[int], out: Path) -> Path:
    """Write the averaged run folder; returns its checkpoint's path."""
    from ratgan.runs import read_run_config
    from ratgan.training.checkpoint import checkpoint_path, load_checkpoint

    if len(iterations) < 2:
        raise SystemExit("--iterations: name at least two checkpoints to average.")
    if out.exists():
        raise SystemExit(f"{out} exists: the average is written to a new folder.")
    states = []
    for it in sorted(iterations):
        path = checkpoint_path(run, it)
        if not path.is_file():
            raise SystemExit(f"{run} has no checkpoint of iteration {it} ({path}).")
        state = load_checkpoint(path, mmap=True)  # only G's EMA is read from all but the last
        if "ema" not in state:
            raise SystemExit(f"{path} keeps no moving average of G (train.ema_half_life_images 0).")
        states.append(state)
    last = states[-1]
    averaged = {}
    for name, tensor in last["ema"]["G"].items():
        if tensor.is_floating_point():
            total = sum(s["ema"]["G"][name].double() for s in states)
            averaged[name] = (total / len(states)).to(tensor.dtype)
        else:
            averaged[name] = tensor
    last["ema"]["G"] = averaged
    return write_run_folder(run, out, read_run_config(run), last, int(last["iteration"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--iterations", type=int, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    path = average_ema(args.run, args.iterations, args.out)
    print(f"averaged the EMA generator of {args.run} at {sorted(args.iterations)} into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
