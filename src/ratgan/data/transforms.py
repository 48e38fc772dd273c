"""The paper's preprocessing (docs/method.md section 1) and its exact inverse.

Forward: optional average pooling by an integer factor, centred pad/crop to the network's
cube (with zeros, or the scan's minimum when it holds negative values), min/max rescale to
[-1, 1].  Inverse: rescale back to the recorded range,
crop back, trilinear upsampling.  Label maps follow the same geometry with majority pooling
and nearest upsampling.

Padding, cropping and block pooling are a few lines of numpy/torch written here because they
must be exact inverses of one another with one shared centring rule (MONAI's
SpatialPad/CenterSpatialCrop use the same rule, but would add a channel axis and a MetaTensor
round trip for no gain).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import EllipsisType
from typing import Any, TypeVar, overload

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from ratgan.arrays import AnyArray, FloatArray, IntArray
from ratgan.errors import RatganError

_ScalarT = TypeVar("_ScalarT", bound=np.generic)

N_TISSUES = 3
"""Label classes besides background: 1 grey matter, 2 white matter, 3 CSF."""


@dataclass
class PreprocessInfo:
    """What :func:`preprocess` did to one volume, so that :func:`inverse_preprocess` can undo it."""

    source_shape: tuple[int, int, int]
    vmin: float
    vmax: float
    downsample: int = 1

    @property
    def pooled_shape(self) -> tuple[int, int, int]:
        """Shape after pooling (the source is first padded to a multiple of ``downsample``)."""
        d = self.downsample
        return tuple(-(-s // d) for s in self.source_shape)  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON/YAML friendly)."""
        d = asdict(self)
        d["source_shape"] = [int(s) for s in self.source_shape]
        d["vmin"], d["vmax"], d["downsample"] = (
            float(self.vmin),
            float(self.vmax),
            int(self.downsample),
        )
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessInfo:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                source_shape=tuple(int(s) for s in d["source_shape"]),  # type: ignore[arg-type]
                vmin=float(d["vmin"]),
                vmax=float(d["vmax"]),
                downsample=int(d.get("downsample", 1)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RatganError(
                f"preprocessing record {d!r} is incomplete or malformed ({exc})."
            ) from None


@overload
def center_pad_crop(
    volume: torch.Tensor, shape: Sequence[int], fill: float = 0.0
) -> torch.Tensor: ...


@overload
def center_pad_crop(
    volume: npt.NDArray[_ScalarT], shape: Sequence[int], fill: float = 0.0
) -> npt.NDArray[_ScalarT]: ...


def center_pad_crop(
    volume: AnyArray | torch.Tensor, shape: Sequence[int], fill: float = 0.0
) -> AnyArray | torch.Tensor:
    """Pad with ``fill`` and/or crop the last ``len(shape)`` axes to ``shape``, centred.

    Along an axis growing from n to m, ``(m - n) // 2`` slices go before and the rest after
    (64x64x40 -> 64^3 puts 12 before and 12 after); cropping removes the same amounts, so a
    crop undoes a pad exactly.  Works on numpy arrays and torch tensors.
    """
    k = len(shape)
    lead = volume.ndim - k
    if lead < 0:
        raise ValueError(f"volume of shape {tuple(volume.shape)} has fewer than {k} axes")
    src = tuple(int(s) for s in volume.shape[lead:])
    crop: list[slice] = []
    pads = []
    for n, m in zip(src, shape, strict=True):
        m = int(m)
        if m <= n:
            start = (n - m) // 2
            crop.append(slice(start, start + m))
            pads.append((0, 0))
        else:
            crop.append(slice(0, n))
            before = (m - n) // 2
            pads.append((before, m - n - before))
    index: tuple[EllipsisType | slice, ...] = (Ellipsis, *crop)
    out = volume[index]
    if any(p != (0, 0) for p in pads):
        if isinstance(out, torch.Tensor):
            flat = [v for p in reversed(pads) for v in p]
            out = F.pad(out, flat, mode="constant", value=fill)
        else:
            out = np.pad(out, [(0, 0)] * lead + pads, mode="constant", constant_values=fill)
    return out


def cropped_slices(info: PreprocessInfo, shape: Sequence[int]) -> dict[int, int]:
    """How many slices :func:`preprocess` to ``shape`` cuts off each axis of a scan described
    by ``info`` (after pooling), for the axes it cuts: ``{axis: slices}``, empty for none."""
    pairs = enumerate(zip(info.pooled_shape, shape, strict=True))
    return {axis: p - int(t) for axis, (p, t) in pairs if p > int(t)}


def _check_3d(volume: npt.ArrayLike, what: str) -> AnyArray:
    array = np.asarray(volume)
    if array.ndim != 3:
        raise RatganError(f"{what} must be 3-D (got shape {list(array.shape)}).")
    return array


def _padding_value(volume: FloatArray) -> float:
    """What :func:`preprocess` pads ``volume`` with: 0, or its minimum when that is negative.

    The rescaling maps the padded volume's minimum to -1, the background.  For a non-negative
    (magnitude) scan 0 is at or below its minimum, so the paper's zero padding is that
    background and leaves the scaling as it was; a scan with negative values (e.g. in
    [-500, 1500]) would see zero padding rescaled to mid-grey, so it is padded with its
    minimum, which the rescaling maps to -1 as well.
    """
    return min(0.0, float(volume.min()))


def preprocess(
    volume: npt.ArrayLike, target_shape: Sequence[int] = (64, 64, 64), downsample: int = 1
) -> tuple[FloatArray, PreprocessInfo]:
    """Turn a 3-D scan into a float32 volume of ``target_shape`` in [-1, 1] (docs/method.md §1).

    Steps: (1) when ``downsample`` > 1, pad (centred) to a multiple of it and average-pool by
    it; (2) centred pad/crop to ``target_shape``; (3) min/max rescale to [-1, 1] over the
    padded volume.  Both pads use 0, or the volume's minimum when it is negative
    (:func:`_padding_value`), so padding always maps to -1, the background.  A constant
    volume (max == min) maps to all -1, and inverts to its constant.
    """
    array = _check_3d(volume, "volume")
    if downsample < 1:
        raise RatganError(f"downsample must be a positive integer (got {downsample}).")
    sx, sy, sz = (int(s) for s in array.shape)
    source_shape = (sx, sy, sz)
    x = array.astype(np.float64, copy=False)
    if downsample > 1:
        info0 = PreprocessInfo(source_shape, 0.0, 0.0, downsample)
        padded = tuple(p * downsample for p in info0.pooled_shape)
        x = center_pad_crop(x, padded, fill=_padding_value(x))
        x = F.avg_pool3d(
            torch.from_numpy(np.ascontiguousarray(x))[None, None], kernel_size=downsample
        )[0, 0].numpy()
    x = center_pad_crop(x, tuple(int(s) for s in target_shape), fill=_padding_value(x))
    vmin, vmax = float(x.min()), float(x.max())
    out = (x - vmin) * (2.0 / (vmax - vmin)) - 1.0 if vmax > vmin else np.full_like(x, -1.0)
    info = PreprocessInfo(
        source_shape=source_shape,
        vmin=vmin,
        vmax=vmax,
        downsample=int(downsample),
    )
    return np.clip(out, -1.0, 1.0).astype(np.float32), info


def _upsample(x: FloatArray, factor: int, mode: str) -> FloatArray:
    """Upsample the last three axes by an integer factor (torch interpolate)."""
    lead = x.shape[:-3]
    t = torch.from_numpy(np.ascontiguousarray(x)).reshape(-1, 1, *x.shape[-3:])
    if mode == "nearest":
        t = F.interpolate(t, scale_factor=factor, mode="nearest")
    else:
        t = F.interpolate(t, scale_factor=factor, mode="trilinear", align_corners=False)
    return t.reshape(*lead, *t.shape[-3:]).numpy()


def inverse_preprocess(volume: npt.ArrayLike, info: PreprocessInfo) -> FloatArray:
    """Undo :func:`preprocess`: [-1, 1] -> [vmin, vmax], crop back, upsample to the source shape.

    Works on the last three axes (leading axes allowed).  Regions that preprocessing cropped
    away come back as the value it pads with: zeros, or for a scan with negative values its
    minimum, the background (zeros would be a mid-grey band there).  Exact (float32 rounding)
    when ``downsample`` is 1; otherwise upsampling is trilinear.  Returns float32.
    """
    x: FloatArray = np.asarray(volume, dtype=np.float64)
    x = (x + 1.0) * (0.5 * (info.vmax - info.vmin)) + info.vmin
    # preprocess's padding value: the padded volume's minimum vmin is the scan's own when that
    # is negative, and at least 0 otherwise
    fill = min(0.0, info.vmin)
    pooled = info.pooled_shape
    if info.downsample > 1:
        x = center_pad_crop(x, pooled, fill=fill)
        x = _upsample(x, info.downsample, "trilinear")
    x = center_pad_crop(x, info.source_shape, fill=fill)
    return x.astype(np.float32)


def _majority_pool(labels: IntArray, d: int) -> IntArray:
    """Most frequent label in each d^3 block (ties -> smaller label).

    Hand-written: no library offers a mode filter with stride, and it is a reshape + bincount.
    """
    x, y, z = (s // d for s in labels.shape)
    blocks = labels.reshape(x, d, y, d, z, d).transpose(0, 2, 4, 1, 3, 5).reshape(x, y, z, -1)
    values = np.unique(blocks)
    counts = np.stack([(blocks == v).sum(axis=-1) for v in values], axis=-1)
    pooled: IntArray = values[np.argmax(counts, axis=-1)]
    return pooled


def preprocess_labels(
    labels: npt.ArrayLike, target_shape: Sequence[int] = (64, 64, 64), downsample: int = 1
) -> IntArray:
    """Apply :func:`preprocess`'s geometry to an integer label map (majority pooling, pad 0)."""
    x: IntArray = _check_3d(labels, "label map").astype(np.int64, copy=False)
    if downsample < 1:
        raise RatganError(f"downsample must be a positive integer (got {downsample}).")
    if downsample > 1:
        pooled = tuple(-(-s // downsample) for s in x.shape)
        x = center_pad_crop(x, tuple(p * downsample for p in pooled), fill=0)
        x = _majority_pool(x, downsample)
    return center_pad_crop(x, tuple(int(s) for s in target_shape), fill=0).astype(np.int64)


def inverse_labels(labels: npt.ArrayLike, info: PreprocessInfo) -> IntArray:
    """Undo :func:`preprocess_labels`: crop back, nearest upsampling; returns int64."""
    x: IntArray = np.asarray(labels).astype(np.int64)
    if info.downsample > 1:
        x = center_pad_crop(x, info.pooled_shape, fill=0)
        # np.repeat is nearest-neighbour upsampling by an integer factor, exactly
        for axis in range(x.ndim - 3, x.ndim):
            x = np.repeat(x, info.downsample, axis=axis)
    return center_pad_crop(x, info.source_shape, fill=0).astype(np.int64)


def labels_to_channels(labels: torch.Tensor) -> torch.Tensor:
    """(B, 1, X, Y, Z) labels (0 bg, 1 GM, 2 WM, 3 CSF) -> (B, 3, X, Y, Z) float in {-1, 1}."""
    if labels.ndim < 2 or labels.shape[1] != 1:
        raise ValueError(f"labels must have shape (B, 1, ...), got {tuple(labels.shape)}")
    classes = torch.arange(1, N_TISSUES + 1, device=labels.device).view(
        1, N_TISSUES, *([1] * (labels.ndim - 2))
    )
    return torch.where(labels == classes, 1.0, -1.0).to(torch.float32)


def channels_to_labels(channels: torch.Tensor) -> torch.Tensor:
    """(B, 3, ...) tissue channels in [-1, 1] -> (B, 1, ...) int64 labels.

    Each voxel takes the tissue of its largest channel, or background (0) where every
    channel is below 0.
    """
    if channels.ndim < 2 or channels.shape[1] != N_TISSUES:
        raise ValueError(
            f"channels must have shape (B, {N_TISSUES}, ...), got {tuple(channels.shape)}"
        )
    best, idx = channels.max(dim=1, keepdim=True)
    return torch.where(best < 0, 0, idx + 1).to(torch.int64)
