"""Known corruptions of real scans, for validating feature spaces (known-answer tests).

Each corruption takes prepared volumes (N, X, Y, Z) in [0, 1] and a strength and returns new
prepared volumes (rescaled to [0, 1] again, as the evaluation prepares every scan).  A good
feature space ranks a corrupted set further from the real scans than held-out real scans, and
further the stronger the corruption.  ``CORRUPTIONS`` maps each name to its function and its
three strengths (weak, medium, strong); ``docs/evaluation.md`` shows what each space makes of
them.  Axis 0 is left-right, axis 1 ventral-dorsal, axis 2 the slice axis.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import numpy as np
from scipy import ndimage

from ratgan.evaluation.prepare import rescale_unit


def _each(volumes: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    return np.stack([rescale_unit(fn(v)) for v in np.asarray(volumes, dtype=np.float32)])


def blur(volumes: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur with ``sigma`` voxels on every axis."""
    return _each(volumes, lambda v: ndimage.gaussian_filter(v, sigma, mode="nearest"))


def noise(volumes: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the volume plus Gaussian noise of ``std`` (in [0, 1] units)."""
    return _each(volumes, lambda v: np.abs(v + rng.normal(0, std, v.shape).astype(np.float32)))


def gamma(volumes: np.ndarray, g: float, rng: np.random.Generator) -> np.ndarray:
    """Intensity gamma: v ** g (g < 1 brightens dark tissue)."""
    return _each(volumes, lambda v: np.power(np.clip(v, 0, 1), g))


def shift(volumes: np.ndarray, d: float, rng: np.random.Generator) -> np.ndarray:
    """Translation by ``d`` voxels to the right and ``d`` dorsally, zero-filled."""
    d = int(d)
    return _each(volumes, lambda v: ndimage.shift(v, (d, d, 0), order=0, cval=0.0))


def _subset(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    k = round(fraction * n)
    return rng.permutation(n)[:k]


def flip(volumes: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Left-right flip of a random ``fraction`` of the scans."""
    out = np.array(volumes, dtype=np.float32, copy=True)
    idx = _subset(len(out), fraction, rng)
    out[idx] = out[idx, ::-1]
    return out


def swap_hemisphere(volumes: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """In a random ``fraction`` of the scans, the left half becomes the mirrored right half."""
    out = np.array(volumes, dtype=np.float32, copy=True)
    half = out.shape[1] // 2
    for i in _subset(len(out), fraction, rng):
        out[i, :half] = out[i, ::-1][:half]
    return out


CORRUPTIONS: dict[str, tuple[Callable, tuple[float, float, float], str]] = {
    "blur": (blur, (0.5, 1.0, 2.0), "sigma (voxels)"),
    "noise": (noise, (0.02, 0.05, 0.1), "std"),
    "gamma": (gamma, (0.8, 0.6, 0.4), "gamma"),
    "shift": (shift, (1, 2, 4), "voxels (x and y)"),
    "lr-flip": (flip, (1 / 3, 2 / 3, 1.0), "fraction of scans"),
    "hemisphere swap": (swap_hemisphere, (1 / 3, 2 / 3, 1.0), "fraction of scans"),
}
"""name -> (function(volumes, strength, rng), strengths weak..strong, what the strength is)."""


def corrupt(volumes: np.ndarray, name: str, strength: float, seed: int = 0) -> np.ndarray:
    """Apply corruption ``name`` at ``strength`` with a generator seeded by ``seed``."""
    fn = CORRUPTIONS[name][0]
    return fn(volumes, strength, np.random.default_rng(seed))


METRICS = ("fd", "rbf_mmd2", "precision", "recall")
WORSE_IS_LARGER = {"fd": True, "rbf_mmd2": True, "precision": False, "recall": False}


def validation_rows(
    spaces: dict[str, Callable[[np.ndarray], np.ndarray]],
    reference: np.ndarray,
    heldout: np.ndarray,
    controls: dict[str, np.ndarray] | None = None,
    seed: int = 0,
    corruptions: dict | None = None,
    standardised: tuple[str, ...] = (),
) -> list[dict]:
    """Distances of held-out, control and corrupted held-out sets from the reference set.

    ``spaces`` maps a space name to a function volumes -> features; the spaces named in
    ``standardised`` give features already standardised (the anatomy space), the others
    are z-scored with the reference's mean and std.  Each row is
    ``{"set", "strength", space: {metric: value}}``; the first row is the held-out set (the
    known answer for real scans), then each control (e.g. another cohort seed), then every
    corruption of the held-out scans at each of its strengths, weak to strong.
    """
    from ratgan.evaluation.anatomy import set_distances

    refs = {name: fn(reference) for name, fn in spaces.items()}

    def row(label: str, strength: float | None, volumes: np.ndarray) -> dict:
        out: dict = {"set": label, "strength": strength}
        for name, fn in spaces.items():
            out[name] = set_distances(refs[name], fn(volumes), standardise=name not in standardised)
        return out

    rows = [row("held-out real", None, heldout)]
    rows += [row(name, None, vols) for name, vols in (controls or {}).items()]
    for k, (name, (_, strengths, _)) in enumerate((corruptions or CORRUPTIONS).items()):
        for s in strengths:
            rows.append(row(name, s, corrupt(heldout, name, s, seed + k)))
    return rows


def ranking(rows: list[dict], space: str, metric: str) -> dict[str, dict[str, bool]]:
    """Per corruption: is every strength worse than held-out, and worse as strength grows?

    Fréchet and MMD must grow strictly; precision and recall must not grow and the strongest
    level must be strictly below the held-out value.
    """
    held = rows[0][space][metric]
    sign = 1 if WORSE_IS_LARGER[metric] else -1
    out: dict[str, dict[str, bool]] = {}
    names = [r["set"] for r in rows if r["strength"] is not None]
    for name in dict.fromkeys(names):
        vals = [sign * r[space][metric] for r in rows if r["set"] == name]
        if WORSE_IS_LARGER[metric]:
            worse = all(v > sign * held for v in vals)
            mono = all(b > a for a, b in pairwise(vals))
        else:
            worse = vals[-1] > sign * held
            mono = all(b >= a for a, b in pairwise(vals))
        out[name] = {"worse_than_heldout": worse, "monotonic": mono}
    return out
