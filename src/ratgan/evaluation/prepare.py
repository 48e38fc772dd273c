"""Reading the scan sets of an evaluation and preparing them as docs/method.md section 5 says.

Every volume of every set goes through the same preparation: it is brought to the closest
canonical (RAS) voxel order (axes permuted and flipped only, so a copy stored as LAS compares
voxel by voxel with its original), its voxel size is checked against the real scans', its
intensities are rescaled to [0, 1] (min/max per volume) and it is centre-cropped to the shape
of the real scans (a 64^3 network-space volume loses 12 slices before and 12 after, keeping
the 40 source slices).  Reoriented and cropped scans are warned about and noted in the report.

A source is a folder, glob or CSV of NIfTI scans (anything ``ratgan.data.io.list_scans``
reads) or a trained run folder (``ratgan.runs.is_run_folder``), from which scans are first
generated with ``ratgan.generation.generate_scans``.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ratgan.errors import RatganError
from ratgan.folder_lock import FolderLock
from ratgan.runs import is_run_folder

if TYPE_CHECKING:
    from ratgan.data.io import Scan

log = logging.getLogger(__name__)

Geometry = tuple[tuple[int, int, int], tuple[float, float, float]]
"""A set's (shape, voxel size) in the canonical (RAS) voxel order."""


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
    voxel_size: tuple[float, float, float] | None = None
    """The voxel size every scan of the set was checked against (RAS order; None when the
    set was built in memory)."""

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


def canonical(scan: Scan) -> tuple[Scan, str | None]:
    """``scan`` in the closest canonical (RAS) voxel order, and the orientation it was stored
    in when that was another (None for a scan already in RAS)."""
    from ratgan.data.io import canonical_scan, orientation_code

    code = orientation_code(scan.affine)
    if code == "RAS":
        return scan, None
    return canonical_scan(scan), code


def canonical_labels(labels: np.ndarray, scan: Scan) -> np.ndarray:
    """A label map read for ``scan`` (as stored) in the voxel order of :func:`canonical`."""
    turned, code = canonical(replace(scan, data=np.asarray(labels, dtype=np.float32)))
    return labels if code is None else np.rint(turned.data).astype(np.int64)


def reference_geometry(paths: list[Path]) -> Geometry:
    """The most common (shape, voxel size) among the real scans in RAS order: the
    evaluation's common space (from at most 8 of them)."""
    from ratgan.data.io import format_voxel_size, read_scan

    found = [canonical(read_scan(p))[0] for p in paths[: min(len(paths), 8)]]
    shapes = Counter(scan.shape for scan in found)
    sizes = Counter(format_voxel_size(scan.voxel_size) for scan in found)
    size = sizes.most_common(1)[0][0]
    voxel = next(s.voxel_size for s in found if format_voxel_size(s.voxel_size) == size)
    return shapes.most_common(1)[0][0], voxel


def target_shape(paths: list[Path]) -> tuple[int, int, int]:
    """The most common shape among the real scans in RAS order (the evaluation's space)."""
    return reference_geometry(paths)[0]


def load_set(
    name: str,
    source: str | Path,
    shape: tuple[int, int, int] | None = None,
    progress: bool = True,
    limit: int | None = None,
    voxel_size: tuple[float, float, float] | None = None,
    blank: str = "refuse",
) -> ScanSet:
    """Read and prepare every scan of ``source`` (a folder, glob or CSV of NIfTI files).

    ``blank`` says what a scan holding one value everywhere does: ``refuse`` (real scans:
    an error naming it) or ``note`` (synthetic scans: a generator's failure to measure,
    warned and noted in the report; a set of nothing but blank scans is refused).

    ``shape`` and ``voxel_size`` are the common evaluation space (RAS order); None takes the
    most common of this set (used for the real set).  A scan smaller than ``shape`` on any
    axis, or whose voxel size differs from ``voxel_size`` by more than
    ``ratgan.data.dataset.VOXEL_SIZE_RTOL``, is an error that names the file; a larger one is
    centre-cropped, with a warning.
    """
    from ratgan.data.io import list_scans

    paths = [e.image for e in list_scans(source)]
    if limit is not None:
        paths = paths[:limit]
    return load_paths(name, paths, str(source), shape, progress, voxel_size, blank)


def load_paths(
    name: str,
    paths: list[Path],
    source: str,
    shape: tuple[int, int, int] | None = None,
    progress: bool = True,
    voxel_size: tuple[float, float, float] | None = None,
    blank: str = "refuse",
    volume_index: int | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> ScanSet:
    """Read and prepare the scans ``paths`` as :func:`load_set` does (``source`` names them);
    ``volume_index`` picks one volume of 4-D files (None: their mean, warned); ``transform``,
    when given, is applied to each scan's data as stored (before reorientation) and must keep
    its shape."""
    from tqdm.auto import tqdm

    from ratgan.data.io import read_scan

    if shape is None or voxel_size is None:
        own_shape, own_size = reference_geometry(paths)
        shape = own_shape if shape is None else shape
        voxel_size = own_size if voxel_size is None else voxel_size
    volumes = np.empty((len(paths), *shape), dtype=np.float32)
    found: dict[str, list[Path]] = {"blank": [], "averaged": [], "cropped": []}
    turned: Counter[str] = Counter()
    zooms = (1.0, 1.0, 1.0)
    for i, path in enumerate(
        tqdm(paths, desc=f"read {name}", unit="scan", disable=not progress, leave=False)
    ):
        scan = read_scan(path, volume_index)
        if transform is not None:
            scan = replace(scan, data=np.asarray(transform(scan.data), dtype=np.float32))
        scan, code = canonical(scan)
        is_blank = float(scan.data.min()) == float(scan.data.max())
        _check_scan(scan, name, shape, voxel_size, blank == "refuse" and is_blank)
        if code is not None:
            turned[code] += 1
        for kind, hit in (
            ("blank", is_blank),
            ("averaged", scan.volumes > 1 and volume_index is None),
            ("cropped", tuple(scan.data.shape) != tuple(shape)),
        ):
            if hit:
                found[kind].append(path)
        if i == 0:
            zooms = scan.zooms
        volumes[i] = prepare_volume(scan.data, shape)
    if len(found["blank"]) == len(paths):
        raise RatganError(
            f"every scan of set {name!r} ({len(paths)}, such as {paths[0]}) holds one value in "
            "every voxel; there is nothing to evaluate (did the generation fail?)."
        )
    return ScanSet(
        name=name,
        volumes=volumes,
        paths=paths,
        source=source,
        notes=_set_notes(name, len(paths), found, turned, shape),
        zooms=zooms,
        voxel_size=voxel_size,
    )


def _check_scan(
    scan: Scan,
    name: str,
    shape: tuple[int, int, int],
    voxel_size: tuple[float, float, float],
    refused_blank: bool,
) -> None:
    """Raise RatganError for a scan outside the evaluation's space, or ``refused_blank`` (a
    blank scan of a set that refuses them)."""
    _check_voxel_size(scan, name, voxel_size)
    data = scan.data
    if data.ndim != 3 or any(s < t for s, t in zip(data.shape, shape, strict=True)):
        raise RatganError(
            f"scan {scan.path} of set {name!r} has shape {list(data.shape)} (in RAS order), "
            f"smaller than the real scans' {list(shape)}; every set must be "
            "in the real scans' space."
        )
    if refused_blank:
        raise RatganError(
            f"scan {scan.path} of set {name!r} holds the same value ({float(data.min()):g}) "
            "in every voxel; a blank real scan would enter every reference value and the "
            "near-copy threshold, so leave it out."
        )


def _set_notes(
    name: str,
    n: int,
    found: dict[str, list[Path]],
    turned: Counter[str],
    shape: tuple[int, int, int],
) -> list[str]:
    """The report's notes on what loading did to a set's scans, each also warned."""
    notes = []
    said = {
        "blank": (
            "blank scans (one value in every voxel)",
            "hold one value in every voxel; they enter every metric as they are, as a "
            "generator's failures",
        ),
        "averaged": (
            "4-D files averaged over their volumes",
            "are 4-D files; each is taken as the mean of its volumes",
        ),
        "cropped": (
            f"scans centre-cropped to {list(shape)}",
            f"are larger than the real scans ({'x'.join(map(str, shape))}) and were "
            "centre-cropped to them; check that the anatomy sits in their centre",
        ),
    }
    for kind, paths in found.items():
        if paths:
            note, sentence = said[kind]
            notes.append(f"{len(paths)} {note}")
            log.warning(
                "%d of %d scans of set %r (such as %s) %s", len(paths), n, name, paths[0], sentence
            )
    if turned:
        codes = ", ".join(f"{k} from {code}" for code, k in sorted(turned.items()))
        k = sum(turned.values())
        notes.append(f"{k} scans reoriented to RAS ({codes})")
        log.warning(
            "%d of %d scans of set %r are stored in another orientation than RAS (%s); they "
            "are reoriented to RAS (axes permuted and flipped, no resampling) before any "
            "comparison",
            k,
            n,
            name,
            codes,
        )
    return notes


def _check_voxel_size(scan: Scan, name: str, size: tuple[float, float, float]) -> None:
    """Raise RatganError when ``scan``'s voxel size differs from the real scans' ``size``
    by more than ``VOXEL_SIZE_RTOL`` on some axis (both in RAS order)."""
    from ratgan.data.dataset import VOXEL_SIZE_RTOL
    from ratgan.data.io import format_voxel_size, same_voxel_size

    if not same_voxel_size(scan.voxel_size, size, VOXEL_SIZE_RTOL):
        raise RatganError(
            f"scan {scan.path} of set {name!r} has voxel size "
            f"{format_voxel_size(scan.voxel_size)} but the real scans have "
            f"{format_voxel_size(size)} (RAS order, within {VOXEL_SIZE_RTOL:.0%}); every set "
            "must be in the real scans' space, so resample it (or leave it out)."
        )


def check_finished(source: str | Path, paths: list[Path], name: str) -> None:
    """Raise RatganError when a synthetic set's scans lie in a folder of an unfinished
    ``ratgan generate`` (its manifest.json does not say complete)."""
    from ratgan.generation.output import refuse_unfinished

    refuse_unfinished({Path(p).parent for p in paths} | _folder(source), f"synthetic set {name!r}")


def _folder(source: str | Path) -> set[Path]:
    path = Path(source)
    return {path} if path.is_dir() else set()


def describe_pairs(pairs: list[tuple[Path, Path]], limit: int = 5) -> str:
    """``a.nii.gz = b.nii.gz, ...`` for messages (at most ``limit`` pairs, then a count)."""
    text = ", ".join(f"{p} = {q}" for p, q in pairs[:limit])
    return text + (f" and {len(pairs) - limit} more" if len(pairs) > limit else "")


def resolve_source(
    name: str,
    source: str | Path,
    out_dir: Path,
    n: int,
    seed: int,
    reference: Path | None,
    device: str = "auto",
    progress: bool = True,
    lock: FolderLock | None = None,
) -> tuple[Path, str | None]:
    """The scan source to read for ``source``: itself, or scans generated from a run folder.

    Returns (folder or pattern to read, run folder or None).  Scans of a run are written to
    ``out_dir/generated/NAME`` with ``seed`` and ``reference``'s header.  A folder of an
    unfinished ``ratgan generate`` is refused (:func:`check_finished`).  ``lock``, the caller's
    lock of ``out_dir``, creates and locks that folder before scans are generated into it.
    """
    if not is_run_folder(source):
        from ratgan.data.io import list_scans

        src = Path(source)
        if not src.exists() and not any(ch in str(source) for ch in "*?["):
            raise RatganError(f"source {source} of set {name!r} does not exist.")
        check_finished(src, [e.image for e in list_scans(src)], name)
        warn_if_pooled(name, _manifest_run(src))
        return src, None
    warn_if_pooled(name, source)
    from ratgan.generation import generate_scans

    if lock is not None:
        lock.create()
    target = out_dir / "generated" / _safe(name)
    if target.is_dir():  # this evaluation's own folder: its earlier scans are replaced
        shutil.rmtree(target)
    generate_scans(
        Path(source), n, target, seed=seed, reference=reference, device=device, progress=progress
    )
    return target, str(source)


def _manifest_run(folder: Path) -> str | None:
    """The run a ``ratgan generate`` folder names in its manifest (None for other folders)."""
    import json

    from ratgan.generation.output import MANIFEST

    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    run = manifest.get("run") if isinstance(manifest, dict) else None
    return run if isinstance(run, str) else None


def warn_if_pooled(name: str, run: str | Path | None) -> None:
    """Warn when set ``name`` comes from a run that pools its scans: its best copy of a
    training scan is pooled and upsampled again, which this check, comparing at the real
    scans' full resolution against a threshold fitted there, can miss (``ratgan generate``'s
    copy check compares at the run's own resolution)."""
    from ratgan.runs import is_run_folder, read_run_config

    if run is None or not is_run_folder(run):
        return
    factor = read_run_config(run).data.downsample
    if factor > 1:
        log.warning(
            "set %r comes from run %s, which pools its scans by %d: the memorisation check "
            "compares at full resolution and can miss its copies of training scans; "
            "`ratgan generate --copy-check on` checks them as the run sees them",
            name,
            run,
            factor,
        )


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "set"
