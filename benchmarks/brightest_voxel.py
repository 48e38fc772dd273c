"""Benchmark: how far each scan's brightest voxel sits above its bright tissue, and what a set
would score if only that one voxel were like the real scans'.

    python benchmarks/brightest_voxel.py --train TRAIN SET [SET ...] [--edit OUT] [--map OUT]
        [--q 99.9] [--seed 0]

Training and evaluation both rescale every scan by its own minimum and maximum (docs/method.md,
sections 1 and 5), so one voxel, the brightest, sets the scale of all the others.  In a real
magnitude scan that voxel is a noise extreme on bright tissue; a generator whose output ends
in a tanh squeezes such extremes, its brightest voxel sits closer to its bright tissue, and
after the rescaling its whole scan comes out brighter than a real one.

For each set (a folder of NIfTI scans; ``--train`` is the run's training scans) this prints,
over its scans, the mean and standard deviation of the *tail ratio*: the ``--q`` percentile of
the scan after min/max rescaling to [0, 1] (about 0.75 for the built-in cohort's real scans:
the brightest voxel lies a third above the 99.9th percentile).

With ``--edit OUT`` it also writes, for each set, a copy in ``OUT/NAME`` in which each scan's
brightest voxel is raised (never lowered) until the scan's tail ratio equals the training
scans' mean: every other voxel keeps its value in the file, so after the evaluation's min/max
rescaling the edit changes the scale and nothing else.  Evaluating the copies beside the
originals (``ratgan evaluate``, or ``run_evaluation``) measures how much of a set's distance to
real scans is this one voxel.  A diagnostic, not a repair: the target comes from the training
scans (never from the held-out ones), and a synthetic dataset is not edited this way.

With ``--map OUT`` it writes a second kind of copy, in ``OUT/NAME``: each scan's intensities
mapped onto the intensity distribution of one training scan drawn at random (``--seed``) by a
rank-preserving quantile mapping, so every voxel keeps its rank (anatomy, texture and the noise
pattern are unchanged) and the scan takes a real scan's histogram: its brightest voxel, its
contrast and the spread of contrast between scans.  Beside ``--edit``, it measures how much of a
set's distance is its intensity distribution as a whole rather than the one voxel.  Also a
diagnostic, not a repair.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def tail_ratio(volume: np.ndarray, q: float = 99.9) -> float:
    """The ``q`` percentile of ``volume`` after min/max rescaling to [0, 1] (1.0 when constant):
    the evaluation's own measure (``protocol.tail_percentile`` of ``prepare.rescale_unit``) for
    one scan."""
    from ratgan.evaluation.prepare import rescale_unit
    from ratgan.evaluation.protocol import tail_percentile

    v = np.asarray(volume)
    if v.max() <= v.min():
        return 1.0
    return tail_percentile(rescale_unit(v)[None], q)


def raise_brightest(volume: np.ndarray, target: float, q: float = 99.9) -> np.ndarray:
    """A copy of ``volume`` whose brightest voxel is raised so that its tail ratio is ``target``.

    A volume already at or below ``target`` (its brightest voxel at least as far out) comes back
    unchanged: the edit only raises.  The percentile itself does not move, since one voxel
    above it changes no order statistic below it.
    """
    if not 0 < target <= 1:
        raise ValueError(f"target tail ratio must be in (0, 1] (got {target})")
    out = np.array(volume, dtype=np.float32, copy=True)
    lo = float(out.min())
    p = float(np.percentile(out.astype(np.float64), q))
    new_max = lo + (p - lo) / target
    index = np.unravel_index(int(np.argmax(out)), out.shape)
    if new_max > float(out[index]):
        out[index] = new_max
    return out


def map_to_histogram(volume: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``volume`` with its values replaced, rank for rank, by ``reference``'s quantiles: the
    k-th smallest voxel takes the value of the reference's quantile k / (n - 1) (the nearest
    order statistic), so for equal sizes the result holds exactly the reference's values.
    Ties keep the order of their flat index (numpy's stable sort).

    Written here rather than taken from scikit-image (``exposure.match_histograms``): that
    package is not a dependency, and its mapping interpolates between the reference's distinct
    values, where this one hands out the reference's own order statistics."""
    v = np.asarray(volume)
    ref = np.sort(np.asarray(reference, dtype=np.float32), axis=None)
    order = np.argsort(v, axis=None, kind="stable")
    picks = np.linspace(0, ref.size - 1, v.size).round().astype(np.int64)
    out = np.empty(v.size, dtype=np.float32)
    out[order] = ref[picks]
    return out.reshape(v.shape)


def _scans(folder: Path) -> list[Path]:
    from ratgan.data.io import list_scans

    return [entry.image for entry in list_scans(folder)]


def main(argv: list[str] | None = None) -> None:
    """Print each set's tail ratio; with ``--edit``, write the edited copies."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sets", nargs="+", help="NAME=FOLDER or FOLDER (name: folder name)")
    parser.add_argument("--train", type=Path, required=True, help="the run's training scans")
    parser.add_argument("--edit", type=Path, help="write the edited copies here")
    parser.add_argument("--map", type=Path, help="write histogram-mapped copies here")
    parser.add_argument("--seed", type=int, default=0, help="--map: which training scans")
    parser.add_argument("--q", type=float, default=99.9, help="percentile (default 99.9)")
    args = parser.parse_args(argv)

    from ratgan.data.io import read_scan, write_nifti

    named = [s.partition("=") for s in args.sets]
    sets = {(n if sep else Path(n).name): Path(f if sep else n) for n, sep, f in named}
    train_volumes = [read_scan(p).data for p in _scans(args.train)]  # read once: --map reuses them
    train = [tail_ratio(v, args.q) for v in train_volumes]
    rng = np.random.default_rng(args.seed)
    target = float(np.mean(train))
    print(f"tail ratio (p{args.q:g} after min/max rescaling), mean ± sd over scans")
    print(f"  training scans ({len(train)}): {target:.3f} ± {np.std(train):.3f}")
    for name, folder in sets.items():
        paths = _scans(folder)
        ratios = []
        for path in paths:
            scan = read_scan(path)
            ratios.append(tail_ratio(scan.data, args.q))
            if args.edit is not None:
                edited = raise_brightest(scan.data, target, args.q)
                write_nifti(args.edit / name / path.name, edited, scan.affine, scan.header)
            if args.map is not None:
                donor = train_volumes[int(rng.integers(len(train_volumes)))]
                mapped = map_to_histogram(scan.data, donor)
                write_nifti(args.map / name / path.name, mapped, scan.affine, scan.header)
        print(f"  {name} ({len(paths)}): {np.mean(ratios):.3f} ± {np.std(ratios):.3f}")
    if args.edit is not None:
        print(f"edited copies (brightest voxel raised to the training ratio) in {args.edit}")
    if args.map is not None:
        print(f"mapped copies (a training scan's histogram, ranks kept) in {args.map}")


if __name__ == "__main__":
    main()
