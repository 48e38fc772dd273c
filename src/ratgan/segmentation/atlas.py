"""Atlas labels: GM/WM/CSF label maps for unlabelled scans, from labelled real scans and ANTs.

Each target scan is labelled independently of any network: K labelled real scans (the
atlases) are registered to it with ANTs (an affine stage, then SyN, a symmetric diffeomorphic
deformable stage, both with the Mattes mutual-information metric), their label maps are
carried onto the target's voxel grid with the resulting transforms (nearest-label
interpolation) and fused voxel by voxel by majority vote (ties go to the smaller class
number, background first).  This is the role SPM12 played for the paper's synthetic scans:
a labeller that does not share anything with the U-Nets the benchmark trains.

The registration is ANTs' ``SyN`` recipe (its affine stage unchanged, which converges within a
fraction of a second on 64x64x40 voxels) with SyN iterations 20/10/5 at shrink factors 4/2/1
instead of ANTs' 40/20/0: the full-resolution level matters for the thin CSF, and fewer
coarse iterations keep one registration at about 3 CPU seconds (see docs/segmentation.md).
ANTs' random metric sampling is seeded from ``AtlasParams.seed`` and every registration runs
on one ITK thread, so the same inputs give the same labels.

Results are cached: a label map is stored under a key made of the SHA-256 of the target file,
of every atlas scan and label file, of the parameters and of the volume index (which volume of
a 4-D target and atlas is registered), so labelling the same scans again (a rerun of the
benchmark, the same folder given to ``ratgan label`` twice) costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor, as_completed
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ratgan.atomic import atomic_path
from ratgan.errors import RatganError
from ratgan.digests import file_sha256
from ratgan.folder_lock import FolderLock
from ratgan.segmentation.files import check_unique_names

NUM_LABELS = 4
"""Class numbers 0 background, 1 GM, 2 WM, 3 CSF."""


@dataclass(frozen=True)
class AtlasParams:
    """How atlases are chosen, registered and fused (all of it enters the cache key)."""

    k: int = 5
    """Atlases registered to each target."""
    seed: int = 0
    """Seed of the atlas draw and of ANTs' random metric sampling."""
    syn_iterations: tuple[int, ...] = (20, 10, 5)
    """SyN iterations per level: shrink factors 4, 2, 1 (ANTs' default is 40, 20, 0)."""
    fusion: str = "majority"

    def to_dict(self) -> dict:
        """Plain dict for JSON and the cache key."""
        return json.loads(json.dumps(asdict(self)))


@dataclass(frozen=True)
class Atlas:
    """One labelled real scan."""

    image: Path
    label: Path
    digest: str = field(default="", compare=False)
    """SHA-256 of the scan and label files (filled by :func:`make_atlases`)."""


def make_atlases(entries: list, k: int, seed: int = 0) -> list[Atlas]:
    """``k`` atlases drawn (seeded) from labelled scan entries (``.image``, ``.label``)."""
    labelled = sorted((e for e in entries if e.label is not None), key=lambda e: str(e.image))
    if k < 1:
        raise RatganError(f"the number of atlases must be at least 1 (got {k}).")
    if len(labelled) < k:
        raise RatganError(
            f"atlas labelling needs {k} labelled scans but only "
            f"{len(labelled)} are available; pass fewer atlases."
        )
    pick = sorted(np.random.default_rng([seed, 4242]).choice(len(labelled), k, replace=False))
    out = []
    for i in pick:
        e = labelled[int(i)]
        digest = hashlib.sha256((file_sha256(e.image) + file_sha256(e.label)).encode())
        out.append(Atlas(Path(e.image), Path(e.label), digest.hexdigest()))
    return out


def cache_key(
    target: str | Path,
    atlases: list[Atlas],
    params: AtlasParams,
    volume_index: int | None = None,
) -> str:
    """The cache key of one target's label map: its content, the atlas set, the parameters and
    the volume index (``None``, the mean of a 4-D file, keeps the key it had before the index
    entered it)."""
    h = hashlib.sha256(file_sha256(target).encode())
    for a in atlases:
        h.update((a.digest or file_sha256(a.image) + file_sha256(a.label)).encode())
    h.update(json.dumps(params.to_dict(), sort_keys=True).encode())
    if volume_index is not None:
        h.update(f"volume_index={volume_index}".encode())
    return h.hexdigest()[:32]


def check_out_dir(out_dir: str | Path, targets: list[Path], inputs: list[Path]) -> None:
    """Refuse an output folder where the label map of a target (``out_dir/<target name>``)
    would be written onto a target or onto another input file (an atlas scan or label map);
    paths are compared resolved, so links and relative paths are seen through."""
    out_dir = Path(out_dir)
    protected = {Path(p).resolve() for p in [*targets, *inputs]}
    for target in targets:
        dest = (out_dir / Path(target).name).resolve()
        if dest in protected:
            raise RatganError(
                f"output folder {out_dir} would overwrite the input file {dest} with the "
                f"label map of {Path(target).name}; choose an --out that holds none of the "
                "scans, atlas scans or atlas label maps."
            )


def fuse_majority(maps: np.ndarray) -> np.ndarray:
    """Voxel-wise majority vote over label maps (K, X, Y, Z); ties go to the smaller class."""
    votes = np.stack([(maps == c).sum(0) for c in range(NUM_LABELS)])
    return votes.argmax(0).astype(np.uint8)


def _ants_image(data: np.ndarray, affine: np.ndarray):
    """An ANTs image of ``data`` placed in space by a NIfTI (RAS) voxel-to-world matrix."""
    import ants

    lin = np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    direction = lin / spacing
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])  # ITK's world frame is LPS, NIfTI's is RAS
    return ants.from_numpy(
        np.ascontiguousarray(data, dtype=np.float32),
        origin=tuple(ras_to_lps @ np.asarray(affine)[:3, 3]),
        spacing=tuple(spacing),
        direction=ras_to_lps @ direction,
    )


def _warp_one(
    fixed, atlas: Atlas, params: AtlasParams, volume_index: int | None, seed: int
) -> np.ndarray:
    import ants

    from ratgan.data.io import read_label, read_scan

    scan = read_scan(atlas.image, volume_index)
    moving = _ants_image(scan.data, scan.affine)
    labels = _ants_image(read_label(atlas.label, scan).astype(np.float32), scan.affine)
    # antspyx 0.6 takes the seed of the metric sampling from this module attribute only (its
    # public setter, set_ants_deterministic, also reseeds numpy's and Python's global RNGs)
    ants.config._random_seed = seed
    reg = ants.registration(
        fixed, moving, type_of_transform="SyN", reg_iterations=tuple(params.syn_iterations)
    )
    try:
        warped = ants.apply_transforms(
            fixed, labels, reg["fwdtransforms"], interpolator="genericLabel"
        )
    finally:
        for f in set(reg["fwdtransforms"]) | set(reg["invtransforms"]):
            Path(f).unlink(missing_ok=True)
    return np.rint(warped.numpy()).astype(np.uint8)


def atlas_label(
    target: str | Path, atlases: list[Atlas], params: AtlasParams, volume_index: int | None = None
) -> np.ndarray:
    """The fused label map (uint8, the target's voxel grid) of one scan."""
    from ratgan.data.io import read_scan

    _one_thread()
    scan = read_scan(target, volume_index)
    fixed = _ants_image(scan.data, scan.affine)
    # ANTs reads a seed of 0 as "seed from the clock", so the seeds start at 1
    maps = np.stack(
        [
            _warp_one(fixed, a, params, volume_index, 1 + 1000 * params.seed + j)
            for j, a in enumerate(atlases)
        ]
    )
    return fuse_majority(maps)


ITK_THREADS = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"


def _one_thread() -> None:
    """One ITK thread per registration, whatever the environment says: ITK's multi-threaded
    metric sums depend on the thread count, so the labels (and the cache) would too.
    Parallelism comes from the process pool instead.  ITK reads the variable when ANTs is
    loaded, so a process that loaded ANTs under another count is refused."""
    before = os.environ.get(ITK_THREADS)
    os.environ[ITK_THREADS] = "1"
    if before not in (None, "1") and "ants" in sys.modules:
        raise RatganError(
            f"{ITK_THREADS}={before} was set when ANTs was loaded in this process, so the "
            "atlas labels would depend on it; unset it (ratgan registers with one thread "
            "each and runs --workers processes)."
        )


def label_scans(
    targets: list[Path],
    atlases: list[Atlas],
    out_dir: str | Path,
    params: AtlasParams,
    cache_dir: str | Path | None = None,
    workers: int = 2,
    volume_index: int | None = None,
    progress: bool = True,
    desc: str = "atlas labels",
) -> list[Path]:
    """Label every target with the atlases and write ``out_dir/<target name>`` (uint8, the
    target's header and affine, written atomically); returns the written paths.

    Every target and atlas is read first, so a bad file fails before any registration.  Label
    maps already in ``cache_dir`` (default ``out_dir/.cache``) under the same key are reused;
    the others are computed by ``workers`` processes and cached as each finishes.  The label
    maps themselves are written once all are computed: a failure leaves no partial set, only
    the cache, from which a rerun continues; they are renamed into ``out_dir`` only once all
    are written, so a failure while writing leaves its previous maps.  An ``out_dir`` where a
    label map would overwrite a target or an atlas file is refused first
    (:func:`check_out_dir`).  ``out_dir`` is locked against other ratgan processes while this
    writes there (:mod:`ratgan.folder_lock`).
    """
    from tqdm.auto import tqdm

    from ratgan.data.io import read_scan, write_nifti

    out_dir = Path(out_dir)
    cache = Path(cache_dir) if cache_dir is not None else out_dir / ".cache"
    check_unique_names(targets)
    check_out_dir(out_dir, targets, [p for a in atlases for p in (a.image, a.label)])
    names = [Path(t).name for t in targets]
    check_inputs(targets, atlases, volume_index)
    with FolderLock(out_dir, "ratgan label") as lock:
        keys = [cache_key(t, atlases, params, volume_index) for t in targets]
        cached = {k: cache / f"{k}.nii.gz" for k in keys}
        todo = [i for i, k in enumerate(keys) if not cached[k].is_file()]
        if todo and out_dir.resolve() in cache.resolve().parents:
            lock.create()  # the cache is written into out_dir from the first registration on

        def store(i: int, labels: np.ndarray) -> None:
            scan = read_scan(targets[i], volume_index)
            write_nifti(cached[keys[i]], labels, scan.affine, dtype=np.dtype(np.uint8))

        with tqdm(total=len(targets), desc=desc, unit="scan", disable=not progress) as bar:
            bar.update(len(targets) - len(todo))
            if todo and workers > 1:
                import multiprocessing as mp

                # spawn: a fresh interpreter per worker, so ITK starts with one thread and no
                # state (or threads) of the parent is copied
                with ProcessPoolExecutor(
                    min(workers, len(todo)), mp.get_context("spawn"), initializer=_one_thread
                ) as pool:
                    jobs = {
                        pool.submit(atlas_label, targets[i], atlases, params, volume_index): i
                        for i in todo
                    }
                    store_as_completed(jobs, store, bar.update)
            else:
                for i in todo:
                    store(i, atlas_label(targets[i], atlases, params, volume_index))
                    bar.update()
        lock.create()
        written = []
        # every map is written under a temporary name and renamed only once all are written, so a
        # failure while writing (a kill, a full disk) leaves out_dir's previous maps, not a mixture
        with ExitStack() as stack:
            for i, target in enumerate(targets):
                scan = read_scan(target, volume_index)
                labels = _read_cached(cached[keys[i]], scan)
                suffix = ".nii.gz" if names[i].endswith(".gz") else ".nii"
                tmp = stack.enter_context(atomic_path(out_dir / names[i], suffix))
                write_nifti(tmp, labels, scan.affine, header=scan.header, dtype=np.dtype(np.uint8))
                written.append(out_dir / names[i])
        return written


def store_as_completed(
    jobs: dict[Future, int], store: Callable[[int, Any], None], done: Callable[[], Any]
) -> None:
    """Store each job's result (``store(index, result)``, then ``done()``) as it finishes.

    A failed job cancels the jobs not yet started, but the results of those still running are
    stored (cached) before its exception is raised, so a rerun does not compute them again.
    """
    error: BaseException | None = None
    for job in as_completed(jobs):
        try:
            result = job.result()
        except CancelledError:
            continue
        except Exception as exc:
            if error is None:
                error = exc
                for other in jobs:
                    other.cancel()
            continue
        store(jobs[job], result)
        done()
    if error is not None:
        raise error


def check_inputs(targets: list[Path], atlases: list[Atlas], volume_index: int | None) -> None:
    """Read every atlas (scan and label map) and every target: a file that is missing,
    damaged, holds NaN, or a label map that does not fit its scan, fails here, before minutes
    of registrations (and before anything is written)."""
    from ratgan.data.io import read_label, read_scan

    for atlas in atlases:
        read_label(atlas.label, read_scan(atlas.image, volume_index))
    for target in targets:
        read_scan(target, volume_index)


def _read_cached(path: Path, scan: Any) -> np.ndarray:
    from ratgan.data.io import read_label

    return read_label(path, scan).astype(np.uint8)
