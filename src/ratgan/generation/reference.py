"""The reference scan of a generation must lie in the space of the run's training scans.

Generated volumes come out in the training scans' voxel grid and axis order; the reference
only lends them its header and affine, and its shape decides how the network's cube is
cropped back.  A reference of another shape would give scans of that shape (cropped or
padded network output), one of another orientation would label the anatomy's directions
wrongly (a left-right flip in the world, for instance).  Both are refused, naming both sides.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ratgan.errors import RatganError
from ratgan.runs import RunData

if TYPE_CHECKING:
    from ratgan.data.io import Scan


def training_shape(data: RunData) -> tuple[int, ...] | None:
    """The one shape of the run's training scans (from their preprocessing records)."""
    if not data.infos:
        return None
    from ratgan.data.transforms import PreprocessInfo

    return tuple(PreprocessInfo.from_dict(data.infos[0]).source_shape)


def training_orientations(data: RunData) -> list[str]:
    """The orientations of the run's training scans: recorded in data.json by training, or,
    for a run that did not record them, read from its first training scan's header while
    that file exists (empty when neither is available)."""
    recorded = sorted({e.orientation for e in data.entries if e.orientation})
    if recorded or not data.entries:
        return recorded
    from ratgan.data.io import scan_orientation

    first = Path(data.entries[0].image)
    try:
        return [scan_orientation(first)] if first.is_file() else []
    except RatganError:  # a damaged training scan: nothing to compare with
        return []


def check_reference(scan: Scan, data: RunData) -> None:
    """Raise RatganError unless ``scan`` has the shape and orientation of the training scans."""
    from ratgan.data.io import orientation_code

    first = Path(data.entries[0].image).name if data.entries else "the training scans"
    shape = training_shape(data)
    if shape is not None and tuple(scan.shape) != shape:
        raise RatganError(
            f"reference {scan.path} has shape {list(scan.shape)} but the run's training scans "
            f"(such as {first}) have shape {list(shape)}; generated scans are written in the "
            "training scans' space, so pass a reference of that shape."
        )
    allowed = training_orientations(data)
    mine = orientation_code(scan.affine)
    if allowed and mine not in allowed:
        raise RatganError(
            f"reference {scan.path} is stored in orientation {mine} but the run's training "
            f"scans (such as {first}) are in {' and '.join(allowed)}; its affine would give the "
            "generated anatomy wrong directions, so pass a reference of the training "
            "orientation."
        )
