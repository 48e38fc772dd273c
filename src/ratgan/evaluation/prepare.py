"""Reading the scan sets of an evaluation and preparing them as docs/method.md section 5 says.

Every volume of every set goes through the same preparation: its intensities are rescaled to
[0, 1] (min/max per volume) and it is centre-cropped to the shape of the real scans (a 64^3
network-space volume loses 12 slices before and 12 after, keeping the 40 source slices).

A source is a folder, glob or CSV of NIfTI scans (anything ``ratgan.data.io.list_scans``
reads) or a trained run folder (``ratgan.runs.is_run_folder``), from which scans are first
generated with ``ratgan.generation.generate_scans``.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ratgan.errors import RatganError
from ratgan.runs import is_run_folder


@dataclass
class ScanSet:
    """One set of prepared volumes: ``volumes`` is (n, X, Y, Z) float32 in [0, 1]."""

    name: str
    volumes: np.ndarray
    paths: list[Path]
    source: str
    generated_from: str | None = None
    """The run folder the scans were generated from, when the source was a run."""
    notes: list[str] = field(default_factory=list)
    zooms: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Voxel size (mm) of the first scan, for figures."""

    def __len__(self) -> int:
        return int(self.volumes.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one volume."""
        return tuple(int(s) for s in self.volumes.shape[1:])  # type: ignore[return-value]


def rescale_unit(volume: np.ndarray) -> np.ndarray:
    """Rescale one volume's intensities to [0, 1] (min/max); a constant volume becomes 0."""
    v = np.asarray(volume, dtype=np.float64)
    lo, hi = float(v.min()), float(v.max())
    if hi - lo <= 0:
        return np.zeros(v.shape, dtype=np.float32)
    return ((v - lo) / (hi - lo)).astype(np.float32)


def centre_crop(volume: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Centre-crop ``volume`` to ``shape`` (each axis at least as long as the target).

    The crop keeps ``(size - target) // 2`` voxels before, as the preprocessing's padding put
    ``(target - size) // 2`` before: a 64-slice network volume keeps slices 12:52.
    """
    if volume.ndim != len(shape) or any(s < t for s, t in zip(volume.shape, shape, strict=True)):
        raise ValueError(f"cannot crop shape {volume.shape} to {shape}")
    index = tuple(
        slice((s - t) // 2, (s - t) // 2 + t) for s, t in zip(volume.shape, shape, strict=True)
    )
    return volume[index]


def prepare_volume(volume: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """docs/method.md section 5 preparation: crop to the source shape, then rescale to [0, 1]."""
    return rescale_unit(centre_crop(np.asarray(volume), shape))


def target_shape(paths: list[Path]) -> tuple[int, int, int]:
    """The most common shape among the real scans (the evaluation's common space)."""
    from ratgan.data.io import read_scan

    shapes = Counter(read_scan(p).shape for p in paths[: min(len(paths), 8)])
    return shapes.most_common(1)[0][0]


def load_set(
    name: str,
    source: str | Path,
    shape: tuple[int, int, int] | None = None,
    progress: bool = True,
    limit: int | None = None,
) -> ScanSet:
    """Read and prepare every scan of ``source`` (a folder, glob or CSV of NIfTI files).

    ``shape`` is the common evaluation shape; None takes the most common shape of this set
    (used for the real set).  A scan smaller than ``shape`` on any axis is an error that
    names the file; a larger one is centre-cropped.
    """
    from ratgan.data.io import list_scans

    paths = [e.image for e in list_scans(source)]
    if limit is not None:
        paths = paths[:limit]
    return load_paths(name, paths, str(source), shape, progress)


def load_paths(
    name: str,
    paths: list[Path],
    source: str,
    shape: tuple[int, int, int] | None = None,
    progress: bool = True,
) -> ScanSet:
    """Read and prepare the scans ``paths`` as :func:`load_set` does (``source`` names them)."""
    from tqdm.auto import tqdm

    from ratgan.data.io import read_scan

    if shape is None:
        shape = target_shape(paths)
    volumes = np.empty((len(paths), *shape), dtype=np.float32)
    cropped = 0
    zooms = (1.0, 1.0, 1.0)
    for i, path in enumerate(
        tqdm(paths, desc=f"read {name}", unit="scan", disable=not progress, leave=False)
    ):
        scan = read_scan(path)
        data = scan.data
        if i == 0:
            zooms = scan.zooms
        if data.ndim != 3 or any(s < t for s, t in zip(data.shape, shape, strict=True)):
            raise RatganError(
                f"scan {path} of set {name!r} has shape {list(data.shape)}, "
                f"smaller than the real scans' {list(shape)}; every set must be "
                "in the real scans' space."
            )
        cropped += tuple(data.shape) != tuple(shape)
        volumes[i] = prepare_volume(data, shape)
    notes = [f"{cropped} scans centre-cropped to {list(shape)}"] if cropped else []
    return ScanSet(name=name, volumes=volumes, paths=paths, source=source, notes=notes, zooms=zooms)


def resolve_source(
    name: str,
    source: str | Path,
    out_dir: Path,
    n: int,
    seed: int,
    reference: Path | None,
    device: str = "auto",
    progress: bool = True,
) -> tuple[Path, str | None]:
    """The scan source to read for ``source``: itself, or scans generated from a run folder.

    Returns (folder or pattern to read, run folder or None).  Scans of a run are written to
    ``out_dir/generated/NAME`` with ``seed`` and ``reference``'s header.
    """
    if not is_run_folder(source):
        src = Path(source)
        if not src.exists() and not any(ch in str(source) for ch in "*?["):
            raise RatganError(f"source {source} of set {name!r} does not exist.")
        return src, None
    from ratgan.generation import generate_scans

    target = out_dir / "generated" / _safe(name)
    if target.is_dir():  # this evaluation's own folder: its earlier scans are replaced
        shutil.rmtree(target)
    generate_scans(
        Path(source), n, target, seed=seed, reference=reference, device=device, progress=progress
    )
    return target, str(source)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "set"
