"""NIfTI input and output: the only module of ratgan that imports nibabel.

Every problem with a user's file is raised as a one-sentence :class:`RatganError` naming the
file; nibabel's own exceptions never reach the user.  Writes are atomic: a file is written
under a temporary name in its destination folder and then renamed over the destination.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import nibabel as nib
import numpy as np
import numpy.typing as npt

from ratgan.arrays import AnyArray, FloatArray, IntArray
from ratgan.atomic import atomic_path
from ratgan.errors import RatganError

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
AFFINE_ATOL = 1e-4
LABEL_NAMES = ("background", "GM", "WM", "CSF")
"""Class numbers 0-3 of every label map ratgan reads or writes."""
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_IDENTIFYING_TEXT = ("descrip", "aux_file", "db_name", "intent_name", "data_type")
"""Free-text header fields of a reference that :func:`write_nifti` does not pass on: they may
name the subject, the session or the site (descrip often holds a date and a study name)."""


class _Header(Protocol):
    """The methods of nibabel's ``Nifti1Header`` that this module calls, with their types.

    nibabel (5.x) leaves these methods unannotated, so the type checker would treat every
    call as untyped; a ``Nifti1Header`` satisfies this protocol, and code that holds one as
    a ``_Header`` gets its calls checked.  Types as nibabel's docstrings give them.
    """

    def __getitem__(self, key: str) -> AnyArray: ...
    def __setitem__(self, key: str, value: object) -> None: ...
    def get_data_dtype(self) -> np.dtype[np.generic]: ...
    def set_data_dtype(self, datatype: npt.DTypeLike) -> None: ...
    def get_data_shape(self) -> tuple[int, ...]: ...
    def set_data_shape(self, shape: Sequence[int]) -> None: ...
    def get_zooms(self) -> tuple[float, ...]: ...
    def set_zooms(self, zooms: Sequence[float]) -> None: ...
    def get_slope_inter(self) -> tuple[float | None, float | None]: ...
    def set_slope_inter(self, slope: float | None, inter: float | None = None) -> None: ...
    def get_best_affine(self) -> FloatArray: ...
    def get_qform(self) -> FloatArray: ...
    def get_sform(self) -> FloatArray: ...
    def set_qform(self, affine: FloatArray, code: int | None = None) -> None: ...
    def set_sform(self, affine: FloatArray, code: int | None = None) -> None: ...


@dataclass
class Scan:
    """One scan read from disk."""

    data: FloatArray
    """float32, 3-D (a 4-D file already reduced to one volume)."""
    affine: FloatArray
    """(4, 4) float64 voxel-to-world matrix (sform if set, else qform)."""
    header: nib.Nifti1Header
    """A copy of the file's header: codes, pixdim, datatype and the file's scl_slope/inter."""
    path: Path
    volumes: int = 1
    """How many volumes the file holds along its fourth axis (1 for a 3-D file)."""

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of the 3-D data."""
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def zooms(self) -> tuple[float, float, float]:
        """Voxel size along the three spatial axes (from the header's pixdim)."""
        header: _Header = self.header
        return tuple(float(z) for z in header.get_zooms()[:3])  # type: ignore[return-value]

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        """Voxel size along the three axes in world units, from the affine (see
        :func:`voxel_size`)."""
        return voxel_size(self.affine)


@dataclass
class ScanEntry:
    """A scan file and, when there is one, its label map."""

    image: Path
    label: Path | None = None


def is_nifti_path(path: str | Path) -> bool:
    """Whether the file name ends in .nii or .nii.gz."""
    name = str(path).lower()
    return name.endswith(NIFTI_SUFFIXES)


def _suffix(path: Path) -> str:
    return ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix


def _first_line(exc: BaseException, path: Path | None = None) -> str:
    text = str(exc).strip().splitlines()
    line = (text[0] if text else type(exc).__name__).rstrip(".")
    if path is not None:  # the message names the file already: keep the reason short
        line = line.replace(str(path), path.name)
    return line


def _load(path: Path, what: str = "scan") -> nib.Nifti1Image:
    """Open a NIfTI-1/2 file lazily, turning every failure into a RatganError."""
    if not path.exists():
        raise RatganError(f"{what} file {path} does not exist.")
    if path.is_dir():
        raise RatganError(f"{what} file {path} is a folder, not a NIfTI file.")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - nibabel raises ImageFileError, OSError, ValueError...
        raise RatganError(
            f"{what} file {path} is not a readable NIfTI file ({_first_line(exc, path)})."
        ) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise RatganError(f"{what} file {path} is a {type(img).__name__}, not a NIfTI file.")
    return img


def _read_array(
    img: nib.Nifti1Image, path: Path, what: str, index: int | None = None
) -> FloatArray:
    """Scaled voxel values as float64 (optionally one volume of a 4-D file).

    Complex-valued files are refused rather than read as their real part (what a cast to
    float does, with only a numpy warning): which real image a complex scan stands for
    (magnitude, real part, phase) is the user's decision, not a silent default.
    RGB files are refused as such (reading them failed as if the file were corrupt).
    """
    header: _Header = img.header
    dtype = header.get_data_dtype()
    if dtype.kind == "c":
        raise RatganError(
            f"{what} file {path} stores complex values ({dtype}); ratgan reads real-valued "
            "images only: save the magnitude (or the part you mean) as a real-valued NIfTI."
        )
    if dtype.fields is not None:  # RGB24/RGBA32: one record per voxel, which no cast reads
        raise RatganError(
            f"{what} file {path} stores RGB colour values ({', '.join(dtype.fields)} per "
            "voxel); ratgan reads single-valued images only: save a grey-scale image."
        )
    try:
        if index is None:
            return img.get_fdata(dtype=np.float64)
        return np.asarray(img.dataobj[:, :, :, index], dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - truncated data: EOFError, zlib.error, OSError...
        raise RatganError(
            f"{what} file {path} is truncated or corrupt ({_first_line(exc, path)})."
        ) from None


def _spatial_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Drop trailing singleton axes beyond the third (a (X, Y, Z, 1) file is 3-D)."""
    shape = tuple(shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _as_nifti1_header(hdr: object) -> nib.Nifti1Header:
    """A Nifti1Header copy of any NIfTI-1/2 header."""
    # nibabel leaves Nifti1Header.copy and .from_header unannotated
    if type(hdr) is nib.Nifti1Header:
        copy: nib.Nifti1Header = hdr.copy()  # type: ignore[no-untyped-call]
        return copy
    from_header = nib.Nifti1Header.from_header
    out: nib.Nifti1Header = from_header(hdr, check=False)  # type: ignore[no-untyped-call]
    out["sizeof_hdr"] = 348  # a NIfTI-2 header's value was copied over
    return out


def _header_copy(img: nib.Nifti1Image, shape: tuple[int, ...]) -> nib.Nifti1Header:
    """A Nifti1 copy of the header, with the file's own scaling and the data's shape."""
    copy = _as_nifti1_header(img.header)
    hdr: _Header = copy
    # nibabel resets scl_slope/inter of a loaded header (the proxy applies them); put the
    # file's values back so that write_nifti can store data the way the source file did.
    slope = getattr(img.dataobj, "slope", 1.0)
    inter = getattr(img.dataobj, "inter", 0.0)
    try:
        hdr.set_slope_inter(float(slope), float(inter))
    except (nib.spatialimages.HeaderDataError, TypeError, ValueError):
        hdr.set_slope_inter(1.0, 0.0)
    if hdr.get_data_shape() != shape:
        zooms = hdr.get_zooms()
        hdr.set_data_shape(shape)
        hdr.set_zooms(zooms[: len(shape)])
    return copy


def read_scan(path: str | Path, volume_index: int | None = None) -> Scan:
    """Read a 3-D or 4-D NIfTI scan as float32.

    A 4-D file is reduced to one volume: ``volume_index`` picks it, ``None`` takes the mean
    over the fourth axis, which is logged (``volume_index`` is ignored for a 3-D file).
    Raises RatganError (naming the file) for a file that is not a readable NIfTI, is
    truncated, is not 3-D or 4-D, holds NaN or Inf voxels or values beyond float32's range,
    or when ``volume_index`` is out of range.
    """
    path = Path(path)
    img = _load(path)
    full = tuple(int(s) for s in img.shape)
    shape = _spatial_shape(full)
    if len(shape) < 3:
        raise RatganError(
            f"scan file {path} is {len(shape)}-D with shape {list(full)}; "
            "a 3-D or 4-D scan is needed."
        )
    if len(shape) > 4:
        raise RatganError(
            f"scan file {path} is {len(shape)}-D with shape {list(full)}; "
            "a 3-D or 4-D scan is needed."
        )
    n = shape[3] if len(shape) == 4 else 1
    if len(shape) == 4:
        if volume_index is not None:
            if not -n <= volume_index < n:
                raise RatganError(
                    f"volume_index {volume_index} is out of range for scan file "
                    f"{path}, which holds {n} volumes."
                )
            data = _read_array(img, path, "scan", volume_index % n).reshape(shape[:3])
        else:
            data = _read_array(img, path, "scan").reshape(shape).mean(axis=3)
            log.info("scan file %s holds %d volumes; using their mean", path, n)
    else:
        data = _read_array(img, path, "scan").reshape(shape)
    bad = ~np.isfinite(data)
    if bad.any():
        n_nan = int(np.isnan(data).sum())
        n_inf = int(bad.sum()) - n_nan
        raise RatganError(f"scan file {path} holds {n_nan} NaN and {n_inf} Inf voxels.")
    huge = np.abs(data) > _FLOAT32_MAX
    if huge.any():  # finite as stored, but Inf once cast to the float32 ratgan computes in
        raise RatganError(
            f"scan file {path} holds {int(huge.sum())} voxels beyond float32's range "
            f"(largest magnitude {float(np.abs(data).max()):.3g})."
        )
    affine = np.asarray(img.affine, dtype=np.float64)
    header = _header_copy(img, tuple(data.shape))
    volumes = n if volume_index is None else 1
    return Scan(data.astype(np.float32), affine, header, path, volumes)


def orientation_code(affine: npt.ArrayLike) -> str:
    """The voxel axes' closest world directions as three letters, e.g. 'RAS' or 'LAS'; '?'
    for an axis without a direction (a singular or non-finite affine)."""
    matrix = np.asarray(affine, dtype=np.float64)
    if not np.isfinite(matrix).all():
        return "???"
    # nibabel leaves aff2axcodes unannotated; it returns one-letter strings, None for an axis
    # that has no direction
    codes: tuple[str | None, ...] = nib.aff2axcodes(matrix)  # type: ignore[no-untyped-call]
    return "".join(code or "?" for code in codes)


def scan_orientation(path: str | Path) -> str:
    """The :func:`orientation_code` of a NIfTI file, from its header alone."""
    return orientation_code(_load(Path(path)).affine)


def voxel_size(affine: npt.ArrayLike) -> tuple[float, float, float]:
    """The length of each voxel axis in world units (the affine's column norms): what sets the
    size of the anatomy in the world, whatever the header's pixdim says."""
    matrix = np.asarray(affine, dtype=np.float64)[:3, :3]
    return tuple(float(v) for v in np.sqrt((matrix**2).sum(axis=0)))  # type: ignore[return-value]


def scan_voxel_size(path: str | Path) -> tuple[float, float, float]:
    """The :func:`voxel_size` of a NIfTI file, from its header alone."""
    return voxel_size(_load(Path(path)).affine)


def scan_ras_voxel_size(path: str | Path) -> tuple[float, float, float]:
    """The :func:`scan_voxel_size` of a NIfTI file in the order of the RAS axes that
    :func:`canonical_scan` would give it (nibabel's ``io_orientation``, the permutation that
    ``as_closest_canonical`` applies), from its header alone; in the stored order when the
    affine has no orientation."""
    affine = np.asarray(_load(Path(path)).affine, dtype=np.float64)
    size = voxel_size(affine)
    if not np.isfinite(affine).all():
        return size
    # nibabel leaves io_orientation unannotated: one row (world axis, flip) per voxel axis
    ornt = np.asarray(nib.orientations.io_orientation(affine))  # type: ignore[no-untyped-call]
    if np.isnan(ornt).any():
        return size
    out = [0.0, 0.0, 0.0]
    for axis, value in zip(ornt[:, 0].astype(int), size, strict=True):
        out[axis] = value
    return (out[0], out[1], out[2])


def same_voxel_size(a: Sequence[float], b: Sequence[float], rtol: float = 0.01) -> bool:
    """Whether two voxel sizes agree on every axis within ``rtol`` (relative to ``b``)."""
    return bool(np.allclose(np.asarray(a, float), np.asarray(b, float), rtol=rtol, atol=0.0))


def format_voxel_size(size: Sequence[float]) -> str:
    """A voxel size for messages, e.g. ``0.375 x 0.375 x 0.5``."""
    return " x ".join(f"{float(v):.4g}" for v in size)


def canonical_scan(scan: Scan) -> Scan:
    """The scan reoriented to the closest canonical (RAS+) voxel order by nibabel's
    ``as_closest_canonical``: axes permuted and flipped only, no resampling.  Scans stored in
    other orientations (LAS, PIR...) then show the anatomy the same way round.  Raises
    RatganError naming the file when its affine has no orientation (singular or not finite).
    """
    affine = np.asarray(scan.affine, dtype=np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise RatganError(
            f"scan file {scan.path} cannot be reoriented to a canonical "
            "orientation: its affine is singular or not finite."
        )
    # nibabel leaves Nifti1Image() and as_closest_canonical unannotated
    source = nib.Nifti1Image(scan.data, affine)  # type: ignore[no-untyped-call]
    img: nib.Nifti1Image = nib.as_closest_canonical(source)  # type: ignore[no-untyped-call]
    data = np.asarray(img.dataobj, dtype=np.float32)
    return Scan(
        data=data,
        affine=np.asarray(img.affine, dtype=np.float64),
        header=_header_copy(img, tuple(data.shape)),
        path=scan.path,
    )


def scan_in_ras(scan: Scan, labels: IntArray | None = None) -> tuple[Scan, IntArray | None]:
    """``scan`` and its label map (same affine) in RAS voxel order (:func:`canonical_scan`:
    axes permuted and flipped only), for a figure that names its planes by voxel axes.

    A scan whose affine has no orientation is returned as stored, with a warning.
    """
    code = orientation_code(scan.affine)
    if code == "RAS":
        return scan, labels
    if "?" in code:
        log.warning(
            "scan file %s has no orientation (its affine is singular or not finite): it is "
            "drawn in its stored voxel order, and its panels' plane names may be wrong",
            scan.path,
        )
        return scan, labels
    if labels is not None:  # the same affine as the scan (read_label checks), so the same turn
        turned = canonical_scan(
            Scan(labels.astype(np.float32), scan.affine, scan.header, scan.path)
        )
        labels = np.rint(turned.data).astype(np.int64)
    return canonical_scan(scan), labels


def scan_content_sha256(path: str | Path) -> str:
    """SHA-256 of a scan's voxel values (float32) in RAS order with their shape: the same image
    stored in another orientation, with other compression or under another name has the same
    digest, where its file's bytes would not."""
    data = np.ascontiguousarray(canonical_scan(read_scan(path)).data, dtype=np.float32)
    h = hashlib.sha256(repr(tuple(data.shape)).encode())
    h.update(data.tobytes())
    return h.hexdigest()


class LabelNumberingCheck:
    """Counts the tissue classes of label maps as they are read and warns, once, when GM
    (class 1) is not the most frequent tissue in most of them.

    GM is the largest tissue of a rat brain (and of a human one); a map numbered by another
    tool, such as FSL FAST's 1 = CSF, 2 = GM, 3 = WM, passes every other check and would be
    trained on and scored with its classes swapped.  Nothing in a map can prove its numbering,
    so this is a warning naming an example, not an error.  Likewise maps that mark a single
    tissue class (a brain mask saved as 0/1 passes as a map of nothing but GM).
    """

    def __init__(self) -> None:
        self.maps = 0
        self.odd: list[tuple[Path, list[int]]] = []
        self.single: list[tuple[Path, int]] = []

    def add(self, path: Path, labels: np.ndarray) -> None:
        """Count one label map (class numbers 0-3) read from ``path``."""
        counts = np.bincount(np.asarray(labels).ravel(), minlength=len(LABEL_NAMES))[1:4]
        self.maps += 1
        if np.count_nonzero(counts) == 1:
            self.single.append((path, int(np.argmax(counts)) + 1))
        elif counts.any() and int(np.argmax(counts)) != 0:
            self.odd.append((path, [int(c) for c in counts]))

    def warn(self, source: str) -> None:
        """Log the warnings: when more than half of the maps counted mark a single tissue
        class, or have GM not the largest."""
        if self.maps and 2 * len(self.single) > self.maps:
            path, cls = self.single[0]
            log.warning(
                "%d of %d label maps of %s mark a single tissue class (%s: class %d in every "
                "labelled voxel), as a brain mask does; ratgan's label maps mark GM (1), WM (2) "
                "and CSF (3), and a mask is read as all %s: give tissue maps, or leave labels/ "
                "out",
                len(self.single),
                self.maps,
                source,
                path,
                cls,
                LABEL_NAMES[cls],
            )
        if self.maps and 2 * len(self.odd) > self.maps:
            path, counts = self.odd[0]
            log.warning(
                "in %d of %d label maps of %s GM (class 1) is not the most frequent tissue "
                "(%s: GM %d, WM %d, CSF %d voxels); ratgan numbers 1 = GM, 2 = WM, 3 = CSF, and "
                "maps numbered otherwise (FSL FAST: 1 = CSF, 2 = GM, 3 = WM) are read with "
                "their classes swapped: renumber them if so",
                len(self.odd),
                self.maps,
                source,
                path,
                *counts,
            )


def read_label(path: str | Path, scan: Scan) -> IntArray:
    """Read a label map that belongs to ``scan`` as int64.

    Raises RatganError if it is not readable, its shape or affine (atol 1e-4) differs from
    the scan's, or it holds values other than the class numbers of :data:`LABEL_NAMES`.
    """
    path = Path(path)
    img = _load(path, "label")
    shape = _spatial_shape(tuple(int(s) for s in img.shape))
    if shape != tuple(scan.data.shape):
        raise RatganError(
            f"label file {path} has shape {list(shape)} but its scan "
            f"{scan.path.name} has shape {list(scan.data.shape)}."
        )
    if not np.allclose(img.affine, scan.affine, atol=AFFINE_ATOL):
        raise RatganError(
            f"label file {path} has a different affine (voxel-to-world matrix) "
            f"from its scan {scan.path.name}."
        )
    data = _read_array(img, path, "label").reshape(shape)
    if not np.isfinite(data).all() or not np.array_equal(data, np.round(data)):
        raise RatganError(
            f"label file {path} holds non-integer values; a label map must "
            "hold integer class numbers."
        )
    labels = data.astype(np.int64)
    bad = np.setdiff1d(np.unique(labels), np.arange(len(LABEL_NAMES)))
    if bad.size:
        names = ", ".join(f"{i} {n}" for i, n in enumerate(LABEL_NAMES))
        raise RatganError(
            f"label file {path} holds values {bad.tolist()}; a label map may only hold {names}."
        )
    return labels


def _integer_raw(
    data: AnyArray, dtype: np.dtype[np.integer[Any]], slope: float, inter: float
) -> IntArray:
    """Stored integers for ``data`` under scaling (slope, inter): rounded and clipped."""
    info = np.iinfo(dtype)
    raw = np.rint((np.nan_to_num(np.asarray(data, dtype=np.float64)) - inter) / slope)
    return np.clip(raw, info.min, info.max).astype(dtype)


def _checked_inputs(
    path: Path, data: npt.ArrayLike, affine: npt.ArrayLike
) -> tuple[AnyArray, FloatArray]:
    """``data`` and ``affine`` as arrays, checked for :func:`write_nifti` (bool data as uint8)."""
    if not is_nifti_path(path):
        raise RatganError(f"output file {path} must end in .nii or .nii.gz.")
    array = np.asarray(data)
    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise RatganError(f"affine for {path} must be a 4x4 matrix (got {list(matrix.shape)}).")
    if array.ndim < 3:
        raise RatganError(f"data for {path} must be at least 3-D (got {list(array.shape)}).")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.inexact):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            # stored as integers they would silently become 0 (or the type's limits)
            raise RatganError(
                f"data for {path} holds {bad} NaN or infinite values of {array.size}; "
                "refusing to write them."
            )
    return array, matrix


def _start_header(header: nib.Nifti1Header | None) -> tuple[nib.Nifti1Header, int, int]:
    """The header to write from (a copy of ``header`` without its free-text fields, display
    range and extensions, or a fresh one) and its qform and sform codes."""
    if header is not None:
        hdr = _as_nifti1_header(header)
        for key in _IDENTIFYING_TEXT:
            hdr[key] = b""
        hdr["cal_min"] = hdr["cal_max"] = 0.0  # the reference's display window
        # what the reference's values meant (a time series, a statistic and its parameters)
        # is not what is written now
        hdr["intent_code"] = 0
        hdr["intent_p1"] = hdr["intent_p2"] = hdr["intent_p3"] = 0.0
        hdr.extensions.clear()  # e.g. DICOM fields with the subject's name
        qcode = int(hdr["qform_code"])
        scode = int(hdr["sform_code"])
        if qcode == 0 and scode == 0:
            scode = 1  # otherwise the affine would be lost and readers would use pixdim only
        return hdr, qcode, scode
    # nibabel leaves the Nifti1Header constructor unannotated
    fresh: nib.Nifti1Header = nib.Nifti1Header()  # type: ignore[no-untyped-call]
    blank: _Header = fresh
    blank.set_slope_inter(None, None)
    return fresh, 1, 1


def _set_output_dtype(
    hdr: _Header,
    dtype: npt.DTypeLike | None,
    header: _Header | None,
    data: AnyArray,
    path: Path,
) -> np.dtype[np.generic]:
    """Choose the stored datatype (``dtype``, else the reference header's, else the data's, with
    float64 stored as float32 without a reference), set it on ``hdr`` and return it."""
    out_dtype = (
        np.dtype(dtype)
        if dtype is not None
        else (hdr.get_data_dtype() if header is not None else data.dtype)
    )
    if out_dtype == np.float64 and header is None:
        out_dtype = np.dtype(np.float32)
    try:
        hdr.set_data_dtype(out_dtype)
    except (nib.spatialimages.HeaderDataError, TypeError, ValueError) as exc:
        raise RatganError(
            f"datatype {out_dtype} cannot be stored in NIfTI file {path} ({_first_line(exc)})."
        ) from None
    return out_dtype


def _stored_values(
    data: AnyArray,
    out_dtype: np.dtype[np.generic],
    hdr: _Header,
    header: _Header | None,
) -> tuple[AnyArray, tuple[float, float]]:
    """The array to store as ``out_dtype`` and the scaling (slope, inter) it is stored with."""
    if not np.issubdtype(out_dtype, np.integer):
        return np.asarray(data, dtype=out_dtype), (1.0, 0.0)
    int_dtype = cast("np.dtype[np.integer[Any]]", out_dtype)  # np.issubdtype does not narrow
    slope, inter = hdr.get_slope_inter()
    if (
        slope is None
        or not np.isfinite(slope)
        or header is None
        or np.issubdtype(data.dtype, np.integer)
        or int_dtype != header.get_data_dtype()
    ):
        # the reference's scaling fits only float data stored the way the reference was;
        # integer data (label maps) and other datatypes are stored as they are
        slope, inter = 1.0, 0.0
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    if np.issubdtype(data.dtype, np.integer) and slope == 1.0 and inter == 0.0:
        info = np.iinfo(int_dtype)
        stored = np.clip(data, info.min, info.max).astype(int_dtype)
    else:
        stored = _integer_raw(data, int_dtype, float(slope), inter)
    return stored, (float(slope), inter)


_REFERENCE_GEOMETRY_KEYS = (
    "quatern_b",
    "quatern_c",
    "quatern_d",
    "qoffset_x",
    "qoffset_y",
    "qoffset_z",
    "pixdim",
    "srow_x",
    "srow_y",
    "srow_z",
)
"""Header fields that :func:`write_nifti` copies from a reference header of the same geometry."""


def _set_geometry(
    h: _Header,
    header: _Header | None,
    affine: FloatArray,
    qcode: int,
    scode: int,
) -> None:
    """Store ``affine`` in ``h`` with the given codes, keeping the reference ``header``'s
    qform, sform, qfac and pixdim untouched when it has the same geometry."""
    if header is not None and (
        np.allclose(header.get_best_affine(), affine, atol=1e-6)
        or np.allclose(header.get_qform(), affine, atol=1e-6)
    ):
        for key in _REFERENCE_GEOMETRY_KEYS:
            h[key] = header[key]
        h["qform_code"] = qcode
        h["sform_code"] = scode
        if scode > 0 and not np.allclose(h.get_sform(), affine, atol=1e-6):
            h.set_sform(affine, code=scode)  # only the qform matched: store the affine
        return
    h.set_sform(affine, code=scode)
    h.set_qform(affine, code=qcode)
    if header is not None:
        pix = h["pixdim"].copy()
        pix[4:] = header["pixdim"][4:]  # keep non-spatial pixdim (e.g. TR)
        h["pixdim"] = pix


def _override_zooms(h: _Header, zooms: Sequence[float]) -> None:
    """Replace the leading voxel sizes of ``h`` by ``zooms`` (extra values are dropped)."""
    z = tuple(float(v) for v in zooms)
    cur = list(h.get_zooms())
    cur[: min(len(z), len(cur))] = z[: len(cur)]
    h.set_zooms(cur)


def _save_atomic(img: nib.Nifti1Image, path: Path) -> None:
    """Save ``img`` to ``path`` through a temporary file, creating parent folders."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RatganError(f"cannot create folder {path.parent} ({_first_line(exc)}).") from None
    # nibabel picks the format from the temporary name, so it ends like the destination
    try:
        with atomic_path(path, suffix=_suffix(path)) as tmp:
            nib.save(img, str(tmp))
    except Exception as exc:  # noqa: BLE001 - whatever failed, no partial file is left behind
        raise RatganError(f"could not write NIfTI file {path} ({_first_line(exc)}).") from None


def write_nifti(
    path: str | Path,
    data: npt.ArrayLike,
    affine: npt.ArrayLike,
    header: nib.Nifti1Header | None = None,
    zooms: Sequence[float] | None = None,
    dtype: npt.DTypeLike | None = None,
    description: str = "",
) -> Path:
    """Write ``data`` as a NIfTI-1 file atomically and return the path.

    With ``header`` (e.g. a real scan's): its qform/sform codes, pixdim, datatype and
    scl_slope/inter are kept, while what could identify its subject is not (descrip,
    aux_file, db_name and the other free-text fields, cal_min/cal_max, header extensions);
    float data stored as an integer datatype is rounded and clipped to that type (with the
    header's scaling; integer data such as label maps, or a ``dtype`` other than the
    header's, is stored with slope 1 and intercept 0).  Without
    ``header``: a fresh header with voxel size ``zooms`` (default: from the affine) and
    qform/sform code 1 (scanner).  ``dtype`` overrides the stored datatype; ``description``
    (at most 80 characters) is stored as descrip.  Parent folders are created.
    """
    path = Path(path)
    array, matrix = _checked_inputs(path, data, affine)
    start, qcode, scode = _start_header(header)
    hdr: _Header = start
    hdr["descrip"] = description.encode()[:80]
    out_dtype = _set_output_dtype(hdr, dtype, header, array, path)
    stored, scaling = _stored_values(array, out_dtype, hdr, header)
    # nibabel leaves the Nifti1Image constructor unannotated
    img = nib.Nifti1Image(stored, matrix, header=start)  # type: ignore[no-untyped-call]
    h: _Header = img.header
    _set_geometry(h, header, matrix, qcode, scode)
    h.set_slope_inter(*scaling)  # the constructor resets the header's scaling
    if zooms is not None:
        _override_zooms(h, zooms)
    h.set_data_dtype(out_dtype)
    _save_atomic(img, path)
    return path


# --------------------------------------------------------------------------- listing


def _refuse_dangling(path: Path, what: str) -> None:
    """Raise RatganError when ``path`` is a symbolic link to a missing file: a listing that
    keeps files only would leave it out without a word (a DataLad or git-annex file whose
    content was not fetched is such a link), and the cohort would lack that scan."""
    if path.is_symlink() and not path.exists():
        raise RatganError(
            f"{what} file {path} is a symbolic link to {path.readlink()}, which does not "
            "exist; fetch the file it points to (e.g. datalad get) or remove the link."
        )


def _nifti_files(folder: Path, dangling_ok: bool = False) -> list[Path]:
    """The NIfTI files of ``folder``, sorted, hidden ones left out; a symbolic link to a
    missing file is refused unless ``dangling_ok`` (then it is left out)."""
    files = sorted(p for p in folder.iterdir() if is_nifti_path(p) and not p.name.startswith("."))
    for p in files:
        if not dangling_ok:
            _refuse_dangling(p, "scan")
    return [p for p in files if p.is_file()]


def _from_csv(csv_path: Path) -> list[ScanEntry]:
    try:
        # utf-8-sig: spreadsheets save "CSV UTF-8" with a byte order mark, which would
        # otherwise become part of the first column's name (and hide the image column)
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RatganError(f"CSV file {csv_path} cannot be read ({_first_line(exc)}).") from None
    if "image" not in fields:
        raise RatganError(
            f"CSV file {csv_path} needs a column named image "
            f"(found: {', '.join(fields) or 'none'})."
        )
    unused = [f for f in fields if f not in ("image", "label")]
    if unused:  # e.g. a column misspelt "labels": its label maps would be silently left out
        log.warning(
            "CSV file %s: column(s) %s are not read (ratgan reads image and label)",
            csv_path,
            ", ".join(unused),
        )
    base = csv_path.parent
    entries: list[ScanEntry] = []
    label_lines: dict[Path, int] = {}
    for number, row in enumerate(rows, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        if not row.get("image"):
            if row.get("label"):
                raise RatganError(
                    f"CSV file {csv_path} line {number} names label map {row['label']} "
                    "but no scan in its image column."
                )
            continue  # a blank line
        image = Path(row["image"])
        image = image if image.is_absolute() else base / image
        if not image.is_file():
            raise RatganError(
                f"CSV file {csv_path} line {number} names scan {image}, which does not exist."
            )
        label = None
        if row.get("label"):
            label = Path(row["label"])
            label = label if label.is_absolute() else base / label
            if not label.is_file():
                raise RatganError(
                    f"CSV file {csv_path} line {number} names label map "
                    f"{label}, which does not exist."
                )
            # a copy-paste error pairs two scans with one subject's map, which shape and
            # affine (shared by a cohort) do not catch; scans registered to a template may
            # share its map on purpose, so it is said, not refused
            first = label_lines.setdefault(label.resolve(), number)
            if first != number:
                log.warning(
                    "CSV file %s line %d names label map %s, which line %d already pairs with "
                    "its scan; check the rows unless the scans share one template's map",
                    csv_path,
                    number,
                    label,
                    first,
                )
        entries.append(ScanEntry(image=image, label=label))
    if not entries:
        raise RatganError(f"CSV file {csv_path} lists no scans.")
    return entries


def _folder_layout(src: Path) -> tuple[Path, Path]:
    """The folder of a folder source's scans (its ``images/`` subfolder if it has one, else
    itself) and that of their label maps (``src/labels/``)."""
    images_dir = src / "images"
    return (images_dir if images_dir.is_dir() else src), src / "labels"


def _from_folder(src: Path) -> list[ScanEntry]:
    """The scans of a folder (in its ``images/`` subfolder if it has one, with a warning naming
    scans left beside it) with the label maps of the same names in ``src/labels/`` (beside
    ``images/``, or e.g. the output folder of ``ratgan generate``)."""
    scans_dir, labels_dir = _folder_layout(src)
    files = _nifti_files(scans_dir)
    if scans_dir != src:  # an images/ folder
        beside = _nifti_files(src, dangling_ok=True)  # not read: named in a warning only
        if beside:
            log.warning(
                "%s has an images/ folder, so the %d scans beside it (such as %s) are ignored; "
                "move them into images/ to use them",
                src,
                len(beside),
                beside[0].name,
            )
    if not files:
        raise RatganError(f"folder {scans_dir} holds no .nii or .nii.gz files.")
    entries = []
    for f in files:
        lab = labels_dir / f.name
        _refuse_dangling(lab, "label")
        entries.append(ScanEntry(image=f, label=lab if lab.is_file() else None))
    return entries


def unmatched_label_maps(source: str | Path) -> list[Path]:
    """The label maps in a folder source's ``labels/`` folder whose file names are those of
    none of its scans, sorted: :func:`list_scans` pairs a map with the scan of its name only,
    so it leaves these out.  Empty for a source that is not a folder."""
    src = Path(source)
    if not src.is_dir():
        return []
    scans_dir, labels_dir = _folder_layout(src)
    if not labels_dir.is_dir():
        return []
    names = {p.name for p in _nifti_files(scans_dir, dangling_ok=True)}
    return [p for p in _nifti_files(labels_dir, dangling_ok=True) if p.name not in names]


def _literal_folders(pattern: str) -> str:
    """``pattern`` with its leading folders escaped as far as they exist as written.

    glob reads ``[`` ``]`` (and ``*``, ``?``) in every part of a pattern, so an existing
    folder named e.g. ``scans[2024]`` would be a character class matching ``scans2/`` or
    nothing.  A folder that exists under its literal name is meant by that name; the parts
    from the first one that does not (the last part always) stay a pattern.
    """
    parts = Path(pattern).parts
    base = Path()
    taken = 0
    for part in parts[:-1]:
        if not (base / part).is_dir():
            break
        base, taken = base / part, taken + 1
    if taken == 0:
        return pattern
    return str(Path(glob.escape(str(base)), *parts[taken:]))


def _from_pattern(pattern: str) -> list[ScanEntry]:
    """The NIfTI files a glob pattern matches (``**`` recursive), sorted; its leading folders
    that exist as written are taken literally (:func:`_literal_folders`)."""
    found = glob.glob(_literal_folders(pattern), recursive=True)
    matches = sorted(Path(p) for p in found if is_nifti_path(p))
    for p in matches:
        _refuse_dangling(p, "scan")
    files = [p for p in matches if p.is_file()]
    if not files:
        hint = (
            " (glob reads [...] as one of the characters inside: write [[] and []] for a "
            "bracket in a name)"
            if "[" in pattern
            else ""
        )
        raise RatganError(f"pattern {pattern} matches no .nii or .nii.gz files{hint}.")
    return [ScanEntry(image=f) for f in files]


def _scan_of_label_map(path: Path) -> Path | None:
    """The scan whose label map ``path`` is in a :func:`list_scans` folder layout
    (``F/labels/NAME`` beside ``F/images/NAME``, or inside a folder holding ``F/NAME``)."""
    if path.parent.name != "labels":
        return None
    folder = path.parent.parent
    for scan in (folder / "images" / path.name, folder / path.name):
        if scan.is_file():
            return scan
    return None


def _refuse_label_maps(entries: list[ScanEntry], listed: str) -> None:
    """Raise RatganError naming the first listed scan that is the label map of a scan in
    :func:`list_scans`' folder layout: a recursive pattern matches them, a labels/ folder or a
    CSV may name them, and they would be read as scans (their shape and affine are the scans').
    ``listed`` says how the source named it (``pattern P matches``, ``folder F holds``...)."""
    for e in entries:
        scan = _scan_of_label_map(e.image)
        if scan is not None:
            raise RatganError(
                f"{listed} {e.image}, the label map of scan {scan}; name the scans only, "
                f"or give the folder {e.image.parent.parent} (it reads both) instead."
            )


def _require_labels(entries: list[ScanEntry]) -> None:
    """Raise RatganError naming the first scan without a label map."""
    for e in entries:
        if e.label is None:
            raise RatganError(
                f"scan {e.image} has no label map (labels are required; "
                "put one with the same name in a labels/ folder beside "
                "images/, or a label column in the CSV)."
            )


def _refuse_duplicates(entries: list[ScanEntry]) -> None:
    """Raise RatganError naming the first scan file that is listed twice (under another name
    through a symlink, or on two rows of a CSV): it would weigh twice in a cohort and could
    sit on both sides of a train/test split."""
    seen: dict[Path, Path] = {}
    for e in entries:
        key = e.image.resolve()
        if key in seen:
            raise RatganError(
                f"scan {e.image} is the same file as {seen[key]}; list each scan once."
            )
        seen[key] = e.image


def list_scans(source: str | Path, require_labels: bool = False) -> list[ScanEntry]:
    """List the scans (and label maps) of a folder or glob pattern, sorted, or of a CSV file,
    in its rows' order.

    A folder with an ``images/`` subfolder holds its scans there and label maps with the same
    file names in a sibling ``labels/`` folder; any other folder holds scans directly, with
    label maps of the same names in an optional ``labels/`` subfolder.  A CSV
    file has columns ``image`` and optionally ``label`` (relative paths are relative to the
    CSV).  A pattern's leading folders that exist as written are read literally, brackets
    included (``scans[2024]/*.nii.gz``).  With ``require_labels`` every scan must have a label
    map.  A scan file listed twice (a symlink to another, a repeated CSV row), and a source
    that lists the label maps of such a folder as scans (its labels/ folder, a glob pattern or
    CSV naming them), are refused, and so is a scan or label map that is a symbolic link to a
    missing file.
    """
    text = str(source)
    src = Path(source)
    if src.is_dir():
        entries, listed = _from_folder(src), f"folder {src} holds"
    elif src.is_file() and src.suffix.lower() == ".csv":
        entries, listed = _from_csv(src), f"CSV file {src} lists"
    elif src.is_file() and is_nifti_path(src):
        entries, listed = [ScanEntry(image=src)], "the scan given is"
    elif src.is_file():
        raise RatganError(f"{src} is neither a folder, a CSV file nor a .nii/.nii.gz scan.")
    elif glob.has_magic(text):
        entries, listed = _from_pattern(text), f"pattern {text} matches"
    else:
        raise RatganError(f"scan source {text} does not exist.")
    _refuse_label_maps(entries, listed)
    _refuse_duplicates(entries)
    if require_labels:
        _require_labels(entries)
    return entries
