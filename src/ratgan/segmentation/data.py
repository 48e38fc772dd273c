"""Scans and label maps of the segmentation benchmark, held in memory as tensors.

Real sets use the layouts of :func:`ratgan.data.io.list_scans` (``images/`` + ``labels/``, a
CSV, ...).  A folder written by ``ratgan generate`` holds its scans directly and the label
maps of a joint model in a ``labels/`` subfolder with the same file names; those are found
here too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ratgan.errors import RatganError
from ratgan.segmentation.unet import NUM_CLASSES

log = logging.getLogger(__name__)


@dataclass
class SegSet:
    """Preprocessed scans (N, 1, X, Y, Z) in [-1, 1] and label maps (N, 1, X, Y, Z) int64."""

    images: torch.Tensor
    labels: torch.Tensor | None
    names: list[str]
    images_paths: list[Path] = field(default_factory=list)
    infos: list = field(default_factory=list)
    """One :class:`ratgan.data.transforms.PreprocessInfo` per scan."""
    affines: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: list[int] | np.ndarray) -> SegSet:
        """The scans at ``index`` (in that order)."""
        idx = [int(i) for i in index]
        t = torch.as_tensor(idx, dtype=torch.long)

        def pick(seq: list) -> list:
            return [seq[i] for i in idx] if seq else []

        return SegSet(
            self.images[t],
            None if self.labels is None else self.labels[t],
            pick(self.names),
            pick(self.images_paths),
            pick(self.infos),
            pick(self.affines),
        )

    def label_maps(self) -> torch.Tensor:
        """The label maps, for a set loaded or built with them; raises RatganError otherwise."""
        if self.labels is None:
            raise RatganError(
                f"a set of {len(self)} scans without label maps where labels are needed."
            )
        return self.labels

    def with_labels(self, labels: torch.Tensor) -> SegSet:
        """The same scans with other label maps."""
        return SegSet(self.images, labels, self.names, self.images_paths, self.infos, self.affines)


def concat(sets: list[SegSet]) -> SegSet:
    """One set holding the scans of ``sets`` in order (all must have labels)."""
    sets = [s for s in sets if len(s)]
    if not sets:
        raise ValueError("nothing to concatenate")
    return SegSet(
        torch.cat([s.images for s in sets]),
        torch.cat([s.labels for s in sets]),  # type: ignore[misc]
        [n for s in sets for n in s.names],
        [p for s in sets for p in s.images_paths],
        [i for s in sets for i in s.infos],
        [a for s in sets for a in s.affines],
    )


def find_entries(source: str | Path, require_labels: bool = False) -> list:
    """Scan entries of ``source``; label maps of a generated folder are read from ``labels/``."""
    from ratgan.data.io import list_scans

    entries = list_scans(source, require_labels=False)
    src = Path(source)
    if src.is_dir() and not (src / "images").is_dir() and (src / "labels").is_dir():
        for e in entries:
            if e.label is None and (src / "labels" / e.image.name).is_file():
                e.label = src / "labels" / e.image.name
    if require_labels:
        missing = [e.image for e in entries if e.label is None]
        if missing:
            raise RatganError(
                f"scan {missing[0]} has no label map ({len(missing)} of "
                f"{len(entries)} scans lack one; put label maps with the same "
                "file names in a labels/ folder)."
            )
    return entries


def load_set(
    entries: list,
    shape: tuple[int, int, int],
    volume_index: int | None = None,
    with_labels: bool = True,
    progress: bool = False,
    desc: str = "load",
) -> SegSet:
    """Read and preprocess scans (and their label maps when ``with_labels``) to ``shape``;
    warns naming the scans (called ``desc``) whose labelled voxels the centred crop to
    ``shape`` cuts off, since no network trains or is scored on those."""
    from tqdm.auto import tqdm

    from ratgan.data.io import LabelNumberingCheck, read_label, read_scan
    from ratgan.data.transforms import cropped_slices, preprocess, preprocess_labels

    images, labels, infos, affines, cut = [], [], [], [], []
    numbering = LabelNumberingCheck()
    for e in tqdm(entries, desc=desc, unit="scan", disable=not progress, leave=False):
        scan = read_scan(e.image, volume_index)
        img, info = preprocess(scan.data, shape, 1)
        images.append(img)
        infos.append(info)
        affines.append(scan.affine)
        if with_labels:
            if e.label is None:
                raise RatganError(f"scan {e.image} has no label map.")
            lab = read_label(e.label, scan)  # raises on values other than 0-3
            numbering.add(e.label, lab)
            labels.append(preprocess_labels(lab, shape, 1))
            total, kept = int(np.count_nonzero(lab)), int(np.count_nonzero(labels[-1]))
            if kept < total:
                axes = ", ".join(
                    f"{n} slices off axis {a}" for a, n in cropped_slices(info, shape).items()
                )
                cut.append(f"{e.image.name} ({total - kept} of {total} labelled voxels, {axes})")
    if not images:
        raise RatganError("no scans to load.")
    numbering.warn(desc)
    if cut:
        log.warning(
            "--shape %s cuts labelled voxels off %d %s, which no network trains or is scored on: "
            "%s; pass a --shape that holds every brain",
            "x".join(map(str, shape)),
            len(cut),
            desc,
            "; ".join(cut),
        )
    x = torch.from_numpy(np.stack(images))[:, None]
    y = torch.from_numpy(np.stack(labels))[:, None] if with_labels else None
    return SegSet(x, y, [e.image.name for e in entries], [e.image for e in entries], infos, affines)


def check_one_space(scans: SegSet, what: str, like: SegSet | None = None) -> None:
    """Raise RatganError naming the first scan of ``scans`` stored in another orientation or
    at another voxel size (beyond 5 %) than the others (or than ``like``'s first scan).

    The U-Net reads the stored arrays: a scan stored LAS among RAS ones would be trained on
    mirrored, one at another voxel size on anatomy of another size. ``ratgan train`` refuses
    such a cohort for the same reason.
    """
    from collections import Counter

    from ratgan.data.dataset import VOXEL_SIZE_RTOL
    from ratgan.data.io import format_voxel_size, orientation_code, same_voxel_size, voxel_size

    if not scans.affines:
        return
    base = like if like is not None and like.affines else scans
    codes = [orientation_code(a) for a in base.affines]
    code = Counter(codes).most_common(1)[0][0]
    size = voxel_size(base.affines[codes.index(code)])
    for path, affine in zip(scans.images_paths, scans.affines, strict=True):
        mine = orientation_code(affine)
        if mine != code:
            raise RatganError(
                f"{what} {path} is stored in orientation {mine} but the real scans are in "
                f"{code}; the network reads stored voxels, so it would learn mirrored or turned "
                "anatomy: reorient it (or leave it out)."
            )
        if not same_voxel_size(voxel_size(affine), size, VOXEL_SIZE_RTOL):
            raise RatganError(
                f"{what} {path} has voxel size {format_voxel_size(voxel_size(affine))} but the "
                f"real scans have {format_voxel_size(size)}; resample it (or leave it out)."
            )


def downsample_images(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool scans (N, 1, X, Y, Z) by an integer factor (identity for 1)."""
    return x if factor == 1 else F.avg_pool3d(x, factor)


def downsample_labels(y: torch.Tensor, factor: int) -> torch.Tensor:
    """Majority-pool label maps (N, 1, X, Y, Z) by an integer factor (ties: smaller class)."""
    if factor == 1:
        return y
    onehot = F.one_hot(y[:, 0], NUM_CLASSES).movedim(-1, 1).float()
    return F.avg_pool3d(onehot, factor).argmax(1, keepdim=True)


Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
"""(start, stop) per spatial axis."""


def brain_box(labels: torch.Tensor, margin: int = 2, multiple: int = 8) -> Box:
    """The box holding the brain (labels > 0) of every map in ``labels`` (N, 1, X, Y, Z),
    widened by ``margin`` voxels and then, centred, to a multiple of ``multiple`` per axis
    (clipped to the volume, whose own size is kept when it is smaller)."""
    brain = labels[:, 0] > 0
    shape = tuple(int(s) for s in brain.shape[1:])
    if not brain.any():
        return tuple((0, s) for s in shape)  # type: ignore[return-value]
    box = []
    for ax in range(3):
        other = tuple(1 + a for a in range(3) if a != ax)
        hit = torch.nonzero(brain.any(dim=other).any(dim=0)).flatten()
        lo, hi = int(hit.min()) - margin, int(hit.max()) + 1 + margin
        size = min(shape[ax], -(-(hi - lo) // multiple) * multiple)
        lo = max(0, min((lo + hi - size) // 2, shape[ax] - size))
        box.append((lo, lo + size))
    return tuple(box)  # type: ignore[return-value]


def crop(x: torch.Tensor, box: Box | None) -> torch.Tensor:
    """The voxels of (N, C, X, Y, Z) inside ``box`` (all of them for None)."""
    if box is None:
        return x
    (a, b), (c, d), (e, f) = box
    return x[:, :, a:b, c:d, e:f]


def paste(y: torch.Tensor, box: Box | None, shape: tuple[int, int, int]) -> torch.Tensor:
    """Label maps (N, 1, ...) of ``box`` placed in background-filled volumes of ``shape``."""
    if box is None:
        return y
    out = torch.zeros((y.shape[0], y.shape[1], *shape), dtype=y.dtype)
    (a, b), (c, d), (e, f) = box
    out[:, :, a:b, c:d, e:f] = y
    return out
