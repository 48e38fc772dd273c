"""Spectral artefact measures: per-axis power spectra and the axis-to-diagonal power ratio.

A generator that up-samples by nearest-neighbour repetition draws an axis-aligned grid: fine
stripes and columns that run along the volume's axes.  In a slice's 2-D power spectrum that is
power concentrated on the frequency axes, where real anatomy spreads its fine-scale power over
all directions.  For each plane (xy, xz, yz) this module averages the 2-D power spectra of all
slices of all scans (each slice's mean removed, then a 2-D Hann window applied so that content
cut by the field of view does not leak power onto the axes), takes the annulus of radial frequencies
``band`` (cycles per voxel; 0.5 is Nyquist), and divides the mean power in a wedge of
``wedge_deg`` degrees about one axis's frequency axis by the mean power in wedges of the same
width about the two diagonals.  An axis's ratio is the mean over the two planes that contain
it: ``x`` high means patterns that vary along x and are constant along another axis (columns
in an axial view).  ``band_power`` (the mean power over the whole annulus, all planes) tells
how much fine detail a set has at all: a blurred set has less than real scans, a noisy one
more; a ratio alone cannot say that (a blur that attenuates the diagonals more than the axes
raises the ratio while removing detail).  The 1-D power spectrum along each axis (the mean
over all lines of the squared FFT, each line's mean removed) is kept for the figure.

Written with NumPy's FFT: no imaging library ships this directional measure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from ratgan.arrays import FloatArray

AXES = ("x", "y", "z")
PLANES = tuple(combinations(range(3), 2))  # (0, 1) xy, (0, 2) xz, (1, 2) yz


@dataclass
class SpectralSummary:
    """The directional measures of one set of volumes."""

    ratios: dict[str, float]
    """Axis name -> axis-to-diagonal power ratio in the band (mean over its two planes)."""
    plane_ratios: dict[str, float]
    """``"xy:x"``-style keys: the ratio of one axis in one plane."""
    band_power: float = 0.0
    """Mean power over the whole annulus, averaged over the three planes."""
    spectra: dict[str, tuple[FloatArray, FloatArray]] = field(default_factory=dict, repr=False)
    """Axis name -> (frequencies in cycles/voxel, mean 1-D power) for the figure."""


def _plane_power(volumes: FloatArray, plane: tuple[int, int]) -> FloatArray:
    """Mean 2-D power spectrum (fft-shifted off: numpy's order) of every slice in ``plane``."""
    a, b = plane
    other = 3 - a - b
    # (N, X, Y, Z) -> slices as (N * n_other, size_a, size_b)
    moved = np.moveaxis(volumes, (1 + a, 1 + b, 1 + other), (2, 3, 1))
    slices = moved.reshape(-1, moved.shape[2], moved.shape[3]).astype(np.float64)
    slices = slices - slices.mean(axis=(1, 2), keepdims=True)
    # A Hann window: without it the jump between opposite edges of a slice (content cut by
    # the field of view) leaks power along the frequency axes, which is no grid.
    window = np.outer(np.hanning(slices.shape[1]), np.hanning(slices.shape[2]))
    power = np.abs(np.fft.fft2(slices * window)) ** 2
    return np.asarray(power.mean(axis=0))


def _wedge_ratios(
    power: FloatArray, band: tuple[float, float], wedge_deg: float
) -> tuple[float, float, float]:
    """(ratio of the first axis, ratio of the second axis, mean band power) of one plane's
    power spectrum."""
    ka = np.fft.fftfreq(power.shape[0])[:, None]
    kb = np.fft.fftfreq(power.shape[1])[None, :]
    radius = np.hypot(ka, kb)
    angle = np.degrees(np.arctan2(np.abs(kb), np.abs(ka)))  # 0: along axis a, 90: along b
    ring = (radius >= band[0]) & (radius <= band[1])
    half = wedge_deg / 2
    near_a = ring & (angle <= half)
    near_b = ring & (angle >= 90 - half)
    diagonal = ring & (np.abs(angle - 45) <= half)
    if not (near_a.any() and near_b.any() and diagonal.any()):
        raise ValueError(f"plane of shape {power.shape} has no frequencies in band {band}")
    diag = float(power[diagonal].mean())
    ratio_a, ratio_b = float(power[near_a].mean()) / diag, float(power[near_b].mean()) / diag
    return ratio_a, ratio_b, float(power[ring].mean())


def axis_spectra(volumes: FloatArray) -> dict[str, tuple[FloatArray, FloatArray]]:
    """Axis name -> (frequencies, mean 1-D power along that axis over all lines)."""
    out = {}
    for axis, name in enumerate(AXES):
        lines = np.moveaxis(volumes.astype(np.float64), 1 + axis, -1)
        lines = lines - lines.mean(axis=-1, keepdims=True)
        power = (np.abs(np.fft.rfft(lines, axis=-1)) ** 2).reshape(-1, lines.shape[-1] // 2 + 1)
        out[name] = (np.fft.rfftfreq(lines.shape[-1]), power.mean(axis=0))
    return out


def spectral_summary(
    volumes: FloatArray, band: tuple[float, float] = (0.3, 0.5), wedge_deg: float = 20.0
) -> SpectralSummary:
    """The directional measures of ``volumes`` (N, X, Y, Z): see the module docstring."""
    if volumes.ndim != 4 or len(volumes) == 0:
        raise ValueError(f"expected volumes of shape (N, X, Y, Z), got {volumes.shape}")
    plane_ratios: dict[str, float] = {}
    per_axis: dict[str, list[float]] = {name: [] for name in AXES}
    band_powers = []
    for plane in PLANES:
        label = AXES[plane[0]] + AXES[plane[1]]
        ra, rb, bp = _wedge_ratios(_plane_power(volumes, plane), band, wedge_deg)
        band_powers.append(bp)
        for axis, value in zip(plane, (ra, rb), strict=True):
            plane_ratios[f"{label}:{AXES[axis]}"] = value
            per_axis[AXES[axis]].append(value)
    ratios = {name: float(np.mean(v)) for name, v in per_axis.items()}
    return SpectralSummary(ratios, plane_ratios, float(np.mean(band_powers)), axis_spectra(volumes))
