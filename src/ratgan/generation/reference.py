"""The reference scan of a generation must lie in the space of the run's training scans.

Generated volumes come out in the training scans' voxel grid and axis order; the reference
lends them its header, its affine and its intensity range (minimum and maximum), and its
shape decides how the network's cube is cropped back.  A reference of another shape would give
scans of that shape (cropped or padded network output), one of another orientation would label
the anatomy's directions wrongly (a left-right flip in the world, for instance), one of another
voxel size would make the anatomy larger or smaller in the world.  All are refused, naming both
sides, and so are a blank reference (one value in every voxel), which would make every
generated scan that value, and a label map (class numbers 0-3 only), which would quantise them
to those numbers.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ratgan.errors import RatganError
from ratgan.runs import RunData

if TYPE_CHECKING:
    from ratgan.data.io import Scan

log = logging.getLogger(__name__)


def training_shape(data: RunData) -> tuple[int, ...] | None:
    """The one shape of the run's training scans (from their preprocessing records)."""
    if not data.infos:
        return None
    from ratgan.data.transforms import PreprocessInfo

    return tuple(PreprocessInfo.from_dict(data.infos[0]).source_shape)


def training_orientations(data: RunData) -> list[str]:
    """The orientations of the run's training scans, the most common first: recorded in
    data.json by training, or, for a run that did not record them, read from its first
    training scan's header while that file exists (empty when neither is available).

    Training now refuses a cohort of several orientations; older runs may record several."""
    counts = Counter(e.orientation for e in data.entries if e.orientation)
    recorded = [code for code, _ in counts.most_common()]
    if recorded or not data.entries:
        return recorded
    from ratgan.data.io import scan_orientation

    first = Path(data.entries[0].image)
    try:
        return [scan_orientation(first)] if first.is_file() else []
    except RatganError:  # a damaged training scan: nothing to compare with
        return []


def training_voxel_size(data: RunData) -> tuple[float, float, float] | None:
    """The voxel size of the run's training scans (training refuses a cohort of several):
    recorded in data.json by training, or, for a run that did not record it, read from its
    first training scan's header while that file exists; None when neither is available,
    and the voxel size check is then skipped."""
    recorded = next((e.voxel_size for e in data.entries if e.voxel_size is not None), None)
    if recorded is not None or not data.entries:
        return recorded
    from ratgan.data.io import scan_voxel_size

    first = Path(data.entries[0].image)
    try:
        return scan_voxel_size(first) if first.is_file() else None
    except RatganError:  # a damaged training scan: nothing to compare with
        return None


def training_space_mismatch(scan: Scan, data: RunData) -> tuple[str, str] | None:
    """How ``scan`` lies outside the space of the run's training scans: what differs (``shape``,
    ``orientation`` or ``voxel size``, beyond :data:`~ratgan.data.dataset.VOXEL_SIZE_RTOL`) and
    a clause naming both sides, to follow the scan's name; None when all three agree (or the
    run records nothing to compare with)."""
    from ratgan.data.dataset import VOXEL_SIZE_RTOL
    from ratgan.data.io import format_voxel_size, orientation_code, same_voxel_size

    first = Path(data.entries[0].image).name if data.entries else "the training scans"
    shape = training_shape(data)
    if shape is not None and tuple(scan.shape) != shape:
        return "shape", (
            f"has shape {list(scan.shape)} but the run's training scans (such as {first}) "
            f"have shape {list(shape)}"
        )
    orientations = training_orientations(data)
    mine = orientation_code(scan.affine)
    if orientations and mine != orientations[0]:
        mixed = (
            f" (most of them; the run trained on {' and '.join(orientations)} scans, a mixture "
            "that training now refuses)"
            if len(orientations) > 1
            else ""
        )
        return "orientation", (
            f"is stored in orientation {mine} but the run's training scans (such as {first}) "
            f"are in {orientations[0]}{mixed}"
        )
    size = training_voxel_size(data)
    if size is not None and not same_voxel_size(scan.voxel_size, size, VOXEL_SIZE_RTOL):
        return "voxel size", (
            f"has voxel size {format_voxel_size(scan.voxel_size)} but the run's training "
            f"scans (such as {first}) have {format_voxel_size(size)}"
        )
    return None


_REFERENCE_CONSEQUENCE = {
    "shape": "generated scans are written in the training scans' space, so pass a reference "
    "of that shape",
    "orientation": "its affine would give the generated anatomy wrong directions, so pass a "
    "reference of the training orientation",
    "voxel size": "its affine would make the generated anatomy larger or smaller in the "
    "world, so pass a reference of the training voxel size",
}


def check_reference(scan: Scan, data: RunData) -> None:
    """Raise RatganError unless ``scan`` has the shape, orientation and voxel size (within
    :data:`~ratgan.data.dataset.VOXEL_SIZE_RTOL`) of the training scans and values of a scan:
    its minimum and maximum are the generated scans' intensity range, so a blank file or a
    label map (class numbers 0-3 only) is refused."""
    from ratgan.data.io import LABEL_NAMES, orientation_code

    low, high = float(scan.data.min()), float(scan.data.max())
    if low == high:
        raise RatganError(
            f"reference {scan.path} holds the same value ({low:g}) in every voxel; generated "
            "scans take the reference's intensity range, so they would all be that value: "
            "pass a real scan."
        )
    if np.isin(scan.data, np.arange(len(LABEL_NAMES))).all():
        values = ", ".join(f"{v:g}" for v in np.unique(scan.data))
        raise RatganError(
            f"reference {scan.path} holds only {values}, "
            "class numbers of a label map; generated scans take the reference's intensity "
            "range and datatype, so pass a real scan."
        )
    mismatch = training_space_mismatch(scan, data)
    if mismatch is not None:
        what, clause = mismatch
        raise RatganError(f"reference {scan.path} {clause}; {_REFERENCE_CONSEQUENCE[what]}.")
    if not training_orientations(data):
        first = Path(data.entries[0].image).name if data.entries else "the training scans"
        log.warning(
            "the run records no orientation of its training scans and %s is gone, so nothing "
            "checks that the reference %s (orientation %s) is stored like them",
            first,
            scan.path,
            orientation_code(scan.affine),
        )
