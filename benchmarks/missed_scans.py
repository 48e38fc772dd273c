"""Benchmark: which held-out phantom scans a synthetic set leaves uncovered, and how they differ.

    python benchmarks/missed_scans.py --real HELDOUT SET [SET ...] [--cohort-seed 0] [--k 3]
        [--axes N]

``HELDOUT`` holds phantom scans named ``sub-NNN`` with label maps (``images/`` + ``labels/``,
as ``ratgan phantom`` writes them), so the anatomy feature space of ``ratgan evaluate`` is
fitted on them (or loaded from its cache).  Each ``SET`` is a folder of synthetic scans (or of
real ones, for a baseline).  For each set it prints the coverage against all held-out scans at
once (a held-out scan is covered when some scan of the set lies in its k-NN ball among the
held-out scans: ``features.covered_real_points``, the coverage of Naeem et al. per scan) and,
since every phantom scan's parameters follow from the cohort seed and its subject number, the
parameters in which the missed scans differ most from the covered ones (difference of means in
standard deviations of the held-out scans).  With ``--axes N`` it also prints the held-out
scans' top N principal axes in the anatomy space (each with the phantom parameters that
correlate with it most) and each set's spread (std ratio) and offset (in real standard
deviations) along them: where a set is narrower than real or off-centre.  Axes fitted on the
held-out scans fit them best, so even another real sample shows ratios below 1 (the training
scans: 0.6–1.25, total variance 0.8): compare sets with such a baseline, not with 1.
A look at what a generator misses, not a test:
with a few dozen scans and about thirty parameters, differences below about one standard
deviation are expected by chance.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np


def scalar_parameters(params: object) -> dict[str, float]:
    """A ``PhantomParams`` as {name: value}, tuples split per axis, without the field seed."""
    out: dict[str, float] = {}
    for key, value in asdict(params).items():  # type: ignore[call-overload]
        if key == "field_seed":
            continue
        if isinstance(value, int | float):
            out[key] = float(value)
        elif isinstance(value, tuple | list):
            out.update({f"{key}[{j}]": float(v) for j, v in enumerate(value)})
    return out


def parameter_shift(
    params: list[dict[str, float]], covered: np.ndarray
) -> list[tuple[str, float, float, float]]:
    """(name, mean of covered, mean of missed, difference in standard deviations) per varying
    parameter, largest absolute difference first; empty when nothing or everything is covered."""
    if covered.all() or not covered.any():
        return []
    rows = []
    for name in params[0]:
        x = np.array([p[name] for p in params])
        if x.std() == 0:
            continue
        a, b = float(x[covered].mean()), float(x[~covered].mean())
        rows.append((name, a, b, (b - a) / float(x.std())))
    return sorted(rows, key=lambda r: -abs(r[3]))


def principal_axes(real: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, top ``n`` principal directions (n, dim), their standard deviations) of ``real``."""
    mean = real.mean(axis=0)
    _, s, vt = np.linalg.svd(real - mean, full_matrices=False)
    return mean, vt[:n], s[:n] / np.sqrt(len(real))


def spread_on_axes(
    points: np.ndarray, mean: np.ndarray, axes: np.ndarray, sd: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(std ratio, mean shift in real standard deviations) of ``points`` along each axis."""
    proj = (points - mean) @ axes.T
    return proj.std(axis=0) / sd, proj.mean(axis=0) / sd


def axis_parameters(
    params: list[dict[str, float]], scores: np.ndarray, top: int = 3
) -> list[tuple[str, float]]:
    """The ``top`` varying parameters most correlated (Pearson) with ``scores``, strongest first."""
    out = []
    for name in params[0]:
        x = np.array([p[name] for p in params])
        if x.std() > 0:
            out.append((name, float(np.corrcoef(x, scores)[0, 1])))
    return sorted(out, key=lambda r: -abs(r[1]))[:top]


def subject_number(path: Path) -> int:
    """The subject number of a phantom scan file ``sub-NNN.nii.gz``."""
    match = re.match(r"sub-(\d+)", path.name)
    if match is None:
        raise SystemExit(f"{path}: not a phantom scan name (sub-NNN)")
    return int(match.group(1))


def main() -> None:
    import torch

    from ratgan.data.phantom import sample_params, subject_seed
    from ratgan.evaluation.anatomy_stage import anatomy_space
    from ratgan.evaluation.features import covered_real_points
    from ratgan.evaluation.prepare import load_set
    from ratgan.evaluation.settings import EvaluationSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", type=Path)
    parser.add_argument("--real", type=Path, required=True, help="held-out phantom scans")
    parser.add_argument("--cohort-seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--top", type=int, default=6)
    parser.add_argument(
        "--axes",
        type=int,
        default=0,
        help="also each set's spread and offset along the held-out scans' top N principal axes",
    )
    args = parser.parse_args()
    held = load_set("held-out", args.real, progress=False)
    space = anatomy_space(held, EvaluationSettings(progress=False))
    if space.extractor is None:
        raise SystemExit(f"no anatomy space: {space.skipped}")
    extract = space.extractor

    def features(volumes: np.ndarray) -> np.ndarray:
        return extract(torch.from_numpy(volumes)).numpy()

    real = features(held.volumes)
    params = [
        scalar_parameters(
            sample_params(np.random.default_rng(subject_seed(args.cohort_seed, subject_number(p))))
        )
        for p in held.paths
    ]
    if args.axes:
        mean, axes, sd = principal_axes(real, args.axes)
        scores = (real - mean) @ axes.T
        for i in range(args.axes):
            named = ", ".join(f"{n} {r:+.2f}" for n, r in axis_parameters(params, scores[:, i]))
            print(f"axis {i + 1} (sd {sd[i]:.2f}): correlates with {named}")
    for folder in args.sets:
        scans = load_set(folder.name, folder, shape=held.shape, progress=False, blank="note")
        fake = features(scans.volumes)
        covered = covered_real_points(real, fake, args.k)
        print(f"{folder}: covers {covered.sum()} of {len(covered)} held-out scans")
        for name, a, b, z in parameter_shift(params, covered)[: args.top]:
            print(f"  {name:24s} covered {a:8.3f}  missed {b:8.3f}  ({z:+.2f} sd)")
        if args.axes:
            ratio, shift = spread_on_axes(fake, mean, axes, sd)
            print("  spread on the axes / real: " + " ".join(f"{r:.2f}" for r in ratio))
            print("  offset on the axes (real sd): " + " ".join(f"{m:+.2f}" for m in shift))


if __name__ == "__main__":
    main()
