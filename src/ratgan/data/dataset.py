"""Cohorts of preprocessed scans held in memory, and an endless, resumable batch stream.

A cohort of the paper's size (210 scans of 64^3 float32) is about 220 MB, so it is read once,
moved to the training device once, and batches are gathered there: no DataLoader is re-created
per step (a defect of the published code) and no worker processes are needed.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ratgan.config import DataConfig
from ratgan.data.augment import BatchAugmenter
from ratgan.data.io import (
    LabelNumberingCheck,
    ScanEntry,
    format_voxel_size,
    list_scans,
    orientation_code,
    read_label,
    read_scan,
    same_voxel_size,
    unmatched_label_maps,
)
from ratgan.data.transforms import (
    PreprocessInfo,
    cropped_slices,
    preprocess,
    preprocess_labels,
)
from ratgan.errors import RatganError

log = logging.getLogger(__name__)

VOXEL_SIZE_RTOL = 0.05
"""How far (relative, per axis) a scan's voxel size may differ from the cohort's: 5 %, half
the 10 % zoom of the paper's augmentation, so that sessions of one protocol whose voxel sizes
were rounded differently stay one cohort while a scan of another resolution is refused."""


@dataclass
class Cohort:
    """Preprocessed scans (and label maps) of one source, in memory on the CPU."""

    images: torch.Tensor
    """(N, 1, *target_shape) float32 in [-1, 1]."""
    labels: torch.Tensor | None
    """(N, 1, *target_shape) int64, or None."""
    entries: list[ScanEntry]
    infos: list[PreprocessInfo] = field(default_factory=list)
    orientations: list[str] = field(default_factory=list)
    """Each scan's voxel axis directions (``RAS``, ``LAS``...), recorded in the run's data."""
    voxel_sizes: list[tuple[float, float, float]] = field(default_factory=list)
    """Each scan's voxel size in world units (from its affine)."""

    def __len__(self) -> int:
        return int(self.images.shape[0])


def load_cohort(
    source: str | Path, data_cfg: DataConfig, require_labels: bool = False, progress: bool = True
) -> Cohort:
    """Read and preprocess every scan of ``source`` (folder, glob or CSV, see ``list_scans``).

    Label maps are loaded when every scan has one; when only some have one the cohort has no
    labels (a warning is logged) unless ``require_labels``, which makes a missing label map an
    error.  All scans must share one shape, one orientation and one voxel size (within
    :data:`VOXEL_SIZE_RTOL`), none may hold one value in every voxel and no label map may be
    background only; 4-D scans averaged to one volume, and label maps in a folder's
    ``labels/`` named after no scan, are warned about.
    """
    entries = list_scans(source, require_labels=require_labels)
    cohort = load_entries(entries, data_cfg, progress, str(source))
    _warn_unmatched_labels(Path(source))
    # a new cohort only: a run recorded before this check still resumes (its batches index
    # the recorded scans, so one cannot be left out)
    refuse_duplicate_volumes([e.image for e in entries], cohort.images, "scan")
    return cohort


def load_entries(
    entries: list[ScanEntry], data_cfg: DataConfig, progress: bool = True, source: str = ""
) -> Cohort:
    """Read and preprocess the listed scans, in their order (see :func:`load_cohort`);
    ``source`` names them in the warning about partial label maps."""
    has = [e.label is not None for e in entries]
    with_labels = all(has)
    if any(has) and not with_labels:
        log.warning(
            "%d of %d scans of %s have label maps; labels are ignored because "
            "not every scan has one",
            sum(has),
            len(has),
            source,
        )
    sx, sy, sz = (int(s) for s in data_cfg.target_shape)
    shape = (sx, sy, sz)
    n = len(entries)
    images = torch.empty((n, 1, *shape), dtype=torch.float32)
    labels = torch.empty((n, 1, *shape), dtype=torch.int64) if with_labels else None
    infos: list[PreprocessInfo] = []
    orientations: list[str] = []
    voxel_sizes: list[tuple[float, float, float]] = []
    averaged: list[tuple[Path, int]] = []
    first: tuple[Path, tuple[int, ...]] | None = None
    numbering = LabelNumberingCheck()
    for i, entry in enumerate(
        tqdm(entries, desc="reading scans", unit="scan", disable=not progress)
    ):
        scan = read_scan(entry.image, data_cfg.volume_index)
        _refuse_blank(scan.path, scan.data)
        if first is None:
            first = (entry.image, scan.data.shape)
        elif scan.data.shape != first[1]:
            raise RatganError(
                f"scan {entry.image} has shape {list(scan.data.shape)} but "
                f"{first[0].name} has shape {list(first[1])}; all scans of a "
                "cohort must share one shape."
            )
        vol, info = preprocess(scan.data, shape, data_cfg.downsample)
        if i == 0:
            _warn_if_cropped(entry.image, info, shape)
        images[i, 0] = torch.from_numpy(vol)
        infos.append(info)
        orientations.append(orientation_code(scan.affine))
        voxel_sizes.append(scan.voxel_size)
        if scan.volumes > 1:
            averaged.append((entry.image, scan.volumes))
        if labels is not None and entry.label is not None:  # (all entries have one, or none)
            lab = read_label(entry.label, scan)
            _refuse_empty_labels(entry.label, lab)
            numbering.add(entry.label, lab)
            labels[i, 0] = torch.from_numpy(preprocess_labels(lab, shape, data_cfg.downsample))
    paths = [e.image for e in entries]
    _check_one_orientation(paths, orientations)
    _check_one_voxel_size(paths, voxel_sizes)
    _warn_squeezed(paths, images)
    numbering.warn(source)
    if averaged:
        log.warning(
            "%d of %d scans of %s are 4-D series (such as %s, %d volumes), each averaged over "
            "its volumes; set data.volume_index to use one volume instead",
            len(averaged),
            n,
            source,
            averaged[0][0],
            averaged[0][1],
        )
    return Cohort(images, labels, entries, infos, orientations, voxel_sizes)


def _warn_unmatched_labels(source: Path) -> None:
    """Warn, once for the cohort, about the label maps of ``source``'s ``labels/`` folder that
    are named after no scan: they are left out, and a run without label channels needs none,
    so a user who misnamed them (rat01_seg.nii.gz for rat01.nii.gz) would never hear of it."""
    unmatched = unmatched_label_maps(source)
    if unmatched:
        log.warning(
            "%s holds %d label map%s named after no scan (such as %s), left unread: a label "
            "map is read under its scan's file name only, so rename misnamed ones",
            unmatched[0].parent,
            len(unmatched),
            "" if len(unmatched) == 1 else "s",
            unmatched[0].name,
        )


def _refuse_blank(path: Path, data: np.ndarray) -> None:
    """Raise RatganError when a scan holds one value in every voxel (a failed export or an
    empty mask): preprocessing maps it to an all -1 volume, which would be trained on as a
    subject without anatomy."""
    low, high = float(data.min()), float(data.max())
    if low == high:
        raise RatganError(
            f"scan {path} holds the same value ({low:g}) in every voxel; a blank scan has "
            "no anatomy to learn, so leave it out of the cohort."
        )


def _refuse_empty_labels(path: Path, labels: np.ndarray) -> None:
    """Raise RatganError when a label map marks no tissue (a failed segmentation export): its
    scan would be trained on as a brain without GM, WM or CSF."""
    if not labels.any():
        raise RatganError(
            f"label file {path} holds background (0) in every voxel; a label map must mark "
            "its scan's GM, WM and CSF, so fix it or leave the pair out of the cohort."
        )


#: A prepared volume whose 99.9th percentile lies below this is all but blank: one voxel far
#: brighter than the rest (a spike) set its min/max scaling and squeezed its anatomy to -1.
#: One far darker than the rest squeezes it to +1: its 0.1th percentile lies above the opposite.
SQUEEZED_P999 = -0.9


def refuse_duplicate_volumes(paths: list[Path], volumes: torch.Tensor, what: str) -> None:
    """Raise RatganError naming two of ``paths`` whose prepared ``volumes`` are identical: one
    image twice (a copy, x.nii beside x.nii.gz), trained on twice, or, in a benchmark, tested
    on in one copy and trained on in the other. ``what`` names the scans in the message."""
    import hashlib

    seen: dict[str, Path] = {}
    for path, volume in zip(paths, volumes, strict=True):
        key = hashlib.sha256(volume.numpy().tobytes()).hexdigest()
        if key in seen:
            raise RatganError(
                f"{what} {path} is the same image as {seen[key]}; keep one of them (one image "
                "twice would count twice, or be trained on in one copy and tested on in the "
                "other)."
            )
        seen[key] = path


def _warn_squeezed(paths: list[Path], images: torch.Tensor) -> None:
    """Warn, naming them, about scans squeezed to near -1 by a single bright voxel, or to
    near +1 by a single dark one (e.g. -32768 marking a missing value)."""
    squeezed = []
    for path, volume in zip(paths, images, strict=True):
        low, high = np.percentile(volume.numpy(), [0.1, 99.9])
        if float(high) < SQUEEZED_P999 or float(low) > -SQUEEZED_P999:
            squeezed.append(path)
    if squeezed:
        log.warning(
            "%d scans (such as %s) are almost blank once scaled to [-1, 1]: 99.9 %% of their "
            "voxels lie below %g (or above %g), so a few voxels far brighter (or darker) than "
            "the rest (a spike, a corrupted voxel) set the scale and the anatomy is squeezed "
            "to -1 (or +1); check them",
            len(squeezed),
            squeezed[0],
            SQUEEZED_P999,
            -SQUEEZED_P999,
        )


def _check_one_orientation(paths: list[Path], orientations: list[str]) -> None:
    """Raise RatganError naming the first scan whose orientation is not the cohort's majority:
    the model would learn anatomy facing several ways, and one reference cannot label it."""
    if not orientations:
        return
    majority, count = Counter(orientations).most_common(1)[0]
    for path, code in zip(paths, orientations, strict=True):
        if code != majority:
            raise RatganError(
                f"scan {path} is stored in orientation {code} but most scans of the cohort "
                f"({count} of {len(paths)}) are in {majority}; all scans of a cohort must "
                "share one orientation, so reorient it (or leave it out) before training."
            )


def _check_one_voxel_size(paths: list[Path], sizes: list[tuple[float, float, float]]) -> None:
    """Raise RatganError naming the first scan whose voxel size differs from the cohort's
    majority by more than :data:`VOXEL_SIZE_RTOL`: the model sees voxels only, so scans of
    other voxel sizes would teach it anatomy of other sizes."""
    if not sizes:
        return
    table = np.asarray(sizes, dtype=np.float64)  # (n, 3)
    close = np.abs(table[:, None] - table[None]) <= VOXEL_SIZE_RTOL * np.abs(table[None])
    counts = close.all(axis=2).sum(axis=0)  # counts[t]: scans within tolerance of scan t
    best = int(np.argmax(counts))  # the first of the most common sizes
    majority = sizes[best]
    for path, size in zip(paths, sizes, strict=True):
        if not same_voxel_size(size, majority, VOXEL_SIZE_RTOL):
            raise RatganError(
                f"scan {path} has voxel size {format_voxel_size(size)} but most scans of the "
                f"cohort ({counts[best]} of {len(paths)}) have {format_voxel_size(majority)}; "
                f"all scans of a cohort must share one voxel size (within "
                f"{VOXEL_SIZE_RTOL:.0%}), so resample it (or leave it out) before training."
            )


def _warn_if_cropped(path: Path, info: PreprocessInfo, shape: tuple[int, int, int]) -> None:
    """Warn when preprocessing to ``shape`` cuts slices off the scans (all share one shape):
    what is cut is never trained on, and generated scans are zero there."""
    cut = cropped_slices(info, shape)
    if cut:
        axes = ", ".join(f"{n} slices off axis {a}" for a, n in cut.items())
        log.warning(
            "scans such as %s are %s (after pooling by %d), larger than data.target_shape %s: "
            "preprocessing cuts %s (half at each end), which the model never sees and "
            "generated scans leave empty; use a preset or data.target_shape (with "
            "model.volume_size / volume_depth) that holds the whole scan",
            path,
            "x".join(map(str, info.pooled_shape)),
            info.downsample,
            list(shape),
            axes,
        )


class EndlessBatches:
    """Endless stream of (images, labels or None) batches drawn from a cohort on ``device``.

    The stream is the concatenation of seeded random permutations of the cohort, one per
    epoch, cut into consecutive batches: a batch at the end of an epoch wraps into the next
    permutation instead of being dropped or shortened, so every batch has ``batch_size``
    scans, every scan is drawn exactly once per epoch, and ``batch_size`` may exceed the
    cohort size.  ``state_dict`` captures everything needed to resume the same stream.
    """

    def __init__(
        self,
        cohort: Cohort,
        batch_size: int,
        seed: int,
        device: torch.device | str = "cpu",
        augmenter: BatchAugmenter | None = None,
        with_labels: bool = False,
    ) -> None:
        if len(cohort) == 0:
            raise RatganError("the cohort holds no scans.")
        if batch_size < 1:
            raise RatganError(f"batch_size must be a positive integer (got {batch_size}).")
        if with_labels and cohort.labels is None:
            raise RatganError(
                "labels were requested but the cohort has no label maps (every scan needs one)."
            )
        self.device = torch.device(device)
        self.images = cohort.images.to(self.device)
        labels = cohort.labels if with_labels else None
        self.labels = labels.to(self.device) if labels is not None else None
        self.n = len(cohort)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.augmenter = augmenter
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(self.seed)
        self.epoch = 0
        self.position = 0
        self.perm = torch.randperm(self.n, generator=self.generator)

    def __iter__(self) -> EndlessBatches:
        return self

    def next_indices(self) -> torch.Tensor:
        """Cohort indices of the next batch (advances the stream)."""
        parts = []
        need = self.batch_size
        while need > 0:
            if self.position == self.n:
                self.perm = torch.randperm(self.n, generator=self.generator)
                self.position = 0
                self.epoch += 1
            take = min(need, self.n - self.position)
            parts.append(self.perm[self.position : self.position + take])
            self.position += take
            need -= take
        return torch.cat(parts)

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = self.next_indices().to(self.device)
        images = self.images.index_select(0, idx)
        labels = self.labels.index_select(0, idx) if self.labels is not None else None
        if self.augmenter is not None:
            images, labels = self.augmenter(images, labels)
        return images, labels

    def reseed(self, seed: int, augment_seed: int) -> None:
        """Start a new stream (and the augmenter's draws) from these seeds, at epoch 0."""
        self.seed = int(seed)
        self.generator.manual_seed(self.seed)
        self.epoch = 0
        self.position = 0
        self.perm = torch.randperm(self.n, generator=self.generator)
        if self.augmenter is not None:
            self.augmenter.rng = np.random.default_rng(augment_seed)

    def state_dict(self) -> dict[str, Any]:
        """Position in the stream, permutation, generator and augmenter states."""
        return {
            "n": self.n,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
            "perm": self.perm.clone(),
            "generator": self.generator.get_state(),
            "augmenter": self.augmenter.state_dict() if self.augmenter is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; the next batches are those the saved stream had next."""
        if int(state["n"]) != self.n:
            raise RatganError(
                f"the saved batch stream covers {state['n']} scans but this "
                f"cohort has {self.n}; resume with the same data."
            )
        self.batch_size = int(state["batch_size"])
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.perm = torch.as_tensor(state["perm"], dtype=torch.int64).clone()
        # a CPU uint8 tensor whatever device the checkpoint was loaded to (set_state takes no other)
        self.generator.set_state(torch.as_tensor(state["generator"]).to("cpu", torch.uint8).clone())
        if self.augmenter is not None and state.get("augmenter") is not None:
            self.augmenter.load_state_dict(state["augmenter"])
