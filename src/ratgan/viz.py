"""Figures of 3-D scans as PNG files: orthogonal views and slice montages.

Used by every stage of the project (data checks, training samples, evaluation reports), so it
imports only numpy, matplotlib, ``ratgan.atomic`` and ``ratgan.arrays``.  Figures are drawn on
matplotlib's non-interactive Agg canvas without pyplot, so no display and no global backend state
are needed, and each PNG is written atomically (:func:`save_figure`, which every figure of the
package uses).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from numpy.typing import ArrayLike

from ratgan.arrays import AnyArray, FloatArray
from ratgan.atomic import atomic_path

LABEL_NAMES = {1: "GM", 2: "WM", 3: "CSF"}
"""Names of the tissue labels drawn by the overlay (0 is background and stays transparent)."""
LABEL_COLOURS = {1: "#e41a1c", 2: "#4daf4a", 3: "#377eb8"}
"""Overlay colours: GM red, WM green, CSF blue."""
LABEL_ALPHA = 0.45

_MM_TO_INCH = 0.085  # figure scale: inches of figure per millimetre of field of view


def _drop_leading_singletons(arr: AnyArray) -> AnyArray:
    """``arr`` without its leading axes of length 1 (e.g. a channel axis) beyond three."""
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def _as_volume(volume: ArrayLike, what: str) -> FloatArray:
    """``volume`` as a 3-D float array (leading singleton axes, e.g. channel, are dropped)."""
    arr = _drop_leading_singletons(np.asarray(volume))
    if arr.ndim != 3:
        raise ValueError(f"{what} must be a 3-D volume, got shape {np.shape(volume)}")
    return arr.astype(np.float32, copy=False)


def _window(volume: FloatArray) -> tuple[float, float]:
    """Grey-level window of a volume: its minimum to its 99.5th percentile (robust to spikes)."""
    finite = volume[np.isfinite(volume)]
    if finite.size == 0:
        return 0.0, 1.0
    lo = float(finite.min())
    hi = float(np.percentile(finite, 99.5))
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def _label_cmap() -> tuple[ListedColormap, int]:
    """A colormap whose entry ``k`` is the overlay colour of label ``k`` (0 is never drawn)."""
    n = max(LABEL_COLOURS) + 1
    colours = ["#000000"] + [LABEL_COLOURS.get(k, "#ffff33") for k in range(1, n)]
    return ListedColormap(colours), n


def save_figure(fig: Figure, out: Path | str, **savefig: Any) -> Path:
    """Write a ``matplotlib.figure.Figure`` (made without pyplot) to ``out`` atomically, in the
    format its suffix names (PNG by default); ``savefig`` are ``Figure.savefig`` options."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", **savefig)
    return out


def _save(fig: Figure, out_png: Path | str) -> Path:
    """Write a scan figure (black background) to ``out_png`` atomically."""
    return save_figure(fig, out_png, dpi=100, facecolor="black")


def _plane(volume: AnyArray, axis: int, index: int) -> AnyArray:
    """The slice ``index`` across ``axis``, oriented for ``imshow(origin="lower")``.

    The remaining two axes, in increasing order, become horizontal then vertical.
    """
    return np.take(volume, index, axis=axis).T


def _plane_extent(shape: Sequence[int], zooms: Sequence[float], axis: int) -> tuple[float, float]:
    """Width and height in millimetres of a slice across ``axis``."""
    h_ax, v_ax = [a for a in range(3) if a != axis]
    return shape[h_ax] * zooms[h_ax], shape[v_ax] * zooms[v_ax]


# Planes named as nilearn names them for a RAS affine (the paper's Fig. 2): coronal is the
# plane across axis 1, sagittal across axis 0, axial across axis 2 (the acquired slices).
_ORTHO_PLANES = (("coronal", 1, "y"), ("sagittal", 0, "x"), ("axial", 2, "z"))


def _label_maps(
    labels: Sequence[ArrayLike | None] | None, vols: Sequence[FloatArray]
) -> list[AnyArray | None]:
    """One label map (or None) per volume, each of its volume's shape."""
    if labels is None:
        return [None] * len(vols)
    if len(labels) != len(vols):
        raise ValueError(f"got {len(labels)} label maps for {len(vols)} volumes")
    labs: list[AnyArray | None] = []
    for i, (lab, vol) in enumerate(zip(labels, vols, strict=True)):
        if lab is None:
            labs.append(None)
            continue
        arr = _drop_leading_singletons(np.asarray(lab))
        if arr.shape != vol.shape:
            raise ValueError(
                f"label map {i} has shape {arr.shape}, its volume has shape {vol.shape}"
            )
        labs.append(arr)
    return labs


def _draw_plane(
    ax: Axes,
    vol: FloatArray,
    lab: AnyArray | None,
    axis: int,
    zooms: Sequence[float],
    window: tuple[float, float],
) -> int:
    """Draw the central slice across ``axis`` (and its labels) on ``ax``; return its index."""
    index = vol.shape[axis] // 2
    w, h = _plane_extent(vol.shape, zooms, axis)
    extent = (0.0, w, 0.0, h)
    ax.imshow(
        _plane(vol, axis, index),
        cmap="gray",
        vmin=window[0],
        vmax=window[1],
        origin="lower",
        extent=extent,
        interpolation="nearest",
        aspect="equal",
    )
    if lab is not None:
        cmap_lab, n_lab = _label_cmap()
        plane = _plane(lab, axis, index).astype(np.int32)
        ax.imshow(
            np.ma.masked_where(plane <= 0, np.clip(plane, 0, n_lab - 1)),
            cmap=cmap_lab,
            vmin=0,
            vmax=n_lab - 1,
            alpha=LABEL_ALPHA,
            origin="lower",
            extent=extent,
            interpolation="nearest",
            aspect="equal",
        )
    ax.set_anchor("N")  # shorter panels hang from the top, so titles line up
    ax.set_xlim(0, w)
    ax.set_ylim(0, h)
    ax.set_axis_off()
    return index


def _label_legend(fig: Figure) -> None:
    """The overlay's colour key, at the figure's top right."""
    handles = [Patch(color=LABEL_COLOURS[k], label=LABEL_NAMES[k]) for k in sorted(LABEL_NAMES)]
    fig.legend(
        handles=handles,
        loc="upper right",
        ncol=3,
        fontsize=7,
        frameon=False,
        labelcolor="white",
        handlelength=1.0,
        borderaxespad=0.2,
    )


def orthogonal_views(
    volumes: Sequence[ArrayLike],
    out_png: Path,
    labels: Sequence[ArrayLike | None] | None = None,
    titles: Sequence[str] | None = None,
    zooms: Sequence[float] | None = None,
) -> Path:
    """Draw coronal, sagittal and axial planes through the centre of each scan, one row per scan.

    ``labels[i]`` (optional) is a label map of the same shape as ``volumes[i]`` drawn over it
    semi-transparently (1 GM, 2 WM, 3 CSF; 0 left clear).  ``zooms`` are the voxel sizes in mm
    (default isotropic) and set each panel's aspect.  Returns ``out_png``.
    """
    if not volumes:
        raise ValueError("orthogonal_views needs at least one volume")
    vols = [_as_volume(v, f"volume {i}") for i, v in enumerate(volumes)]
    labs = _label_maps(labels, vols)
    if titles is not None and len(titles) != len(vols):
        raise ValueError(f"got {len(titles)} titles for {len(vols)} volumes")
    mm = tuple(float(z) for z in (zooms or (1.0, 1.0, 1.0)))[:3]
    with_labels = any(lab is not None for lab in labs)

    # Column widths and row heights in mm (largest scan), so that panels share one mm scale;
    # the figure is sized so that every grid cell is exactly its panel's size.
    planes = [ax for _, ax, _ in _ORTHO_PLANES]
    widths = [max(_plane_extent(v.shape, mm, ax)[0] for v in vols) for ax in planes]
    heights = [max(_plane_extent(v.shape, mm, ax)[1] for ax in planes) for v in vols]
    gap, title_mm = 0.04 * np.mean(widths), 3.2
    top_mm = title_mm + (3.0 if with_labels else 0.0)  # legend
    fig_w = sum(widths) + 2 * gap
    fig_h = sum(heights) + (len(vols) - 1) * title_mm + top_mm
    fig = Figure(figsize=(fig_w * _MM_TO_INCH * 1.25, fig_h * _MM_TO_INCH * 1.25))
    grid = fig.add_gridspec(
        len(vols),
        3,
        width_ratios=widths,
        height_ratios=heights,
        left=0.0,
        right=1.0,
        bottom=0.0,
        top=1.0 - top_mm / fig_h,
        wspace=gap / np.mean(widths),
        hspace=title_mm / np.mean(heights),
    )
    for row, (vol, lab) in enumerate(zip(vols, labs, strict=True)):
        window = _window(vol)
        for col, (name, axis, letter) in enumerate(_ORTHO_PLANES):
            ax = fig.add_subplot(grid[row, col])
            index = _draw_plane(ax, vol, lab, axis, mm, window)
            text = f"{name} {letter}={index}"
            if col == 0 and titles is not None:
                text = f"{titles[row]}   {text}"
            ax.set_title(text, color="white", fontsize=7, loc="left", pad=1.5)
    if with_labels:
        _label_legend(fig)
    return _save(fig, out_png)


def montage(
    rows: Sequence[Sequence[ArrayLike]],
    out_png: Path,
    row_titles: list[str] | None = None,
    axis: int = 2,
    n_slices: int = 8,
    zooms: Sequence[float] | None = None,
) -> Path:
    """Draw rows of evenly spaced slices along ``axis`` of 3-D volumes.

    Figure row ``r`` shows, for each volume of ``rows[r]`` in turn, ``n_slices`` slices spaced
    evenly between (not on) the first and last slice.  Each volume gets its own grey window.
    ``zooms`` (voxel sizes in mm, default isotropic) set the aspect.  Returns ``out_png``.
    """
    if not rows or not any(rows):
        raise ValueError("montage needs at least one volume")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    if n_slices < 1:
        raise ValueError(f"n_slices must be at least 1, got {n_slices}")
    if row_titles is not None and len(row_titles) != len(rows):
        raise ValueError(f"got {len(row_titles)} row titles for {len(rows)} rows")
    zooms = tuple(float(z) for z in (zooms or (1.0, 1.0, 1.0)))[:3]
    vol_rows = [
        [_as_volume(v, f"row {r} volume {i}") for i, v in enumerate(row)]
        for r, row in enumerate(rows)
    ]
    n_cols = max(len(row) for row in vol_rows) * n_slices
    panel_w = max(_plane_extent(v.shape, zooms, axis)[0] for row in vol_rows for v in row)
    panel_h = max(_plane_extent(v.shape, zooms, axis)[1] for row in vol_rows for v in row)
    scale = min(_MM_TO_INCH, 24.0 / (n_cols * panel_w))  # at most about 24 inches wide
    title_w = 0.9 if row_titles else 0.0
    fig_w = n_cols * panel_w * scale * 1.03 + title_w
    fig_h = len(vol_rows) * panel_h * scale * 1.03
    fig = Figure(figsize=(fig_w, fig_h))
    grid = fig.add_gridspec(
        len(vol_rows),
        n_cols,
        left=title_w / fig_w,
        right=1.0,
        bottom=0.0,
        top=1.0,
        wspace=0.03,
        hspace=0.03,
    )
    for r, row in enumerate(vol_rows):
        for i, vol in enumerate(row):
            lo, hi = _window(vol)
            n = vol.shape[axis]
            picks = np.linspace(0, n - 1, n_slices + 2)[1:-1].round().astype(int)
            w, h = _plane_extent(vol.shape, zooms, axis)
            for j, index in enumerate(picks):
                ax = fig.add_subplot(grid[r, i * n_slices + j])
                ax.imshow(
                    _plane(vol, axis, int(index)),
                    cmap="gray",
                    vmin=lo,
                    vmax=hi,
                    origin="lower",
                    extent=(0.0, w, 0.0, h),
                    interpolation="nearest",
                    aspect="equal",
                )
                ax.set_xlim(0, w)
                ax.set_ylim(0, h)
                ax.set_axis_off()
        if row_titles:
            fig.text(
                0.5 * title_w / fig_w,
                1.0 - (r + 0.5) / len(vol_rows),
                row_titles[r],
                color="white",
                fontsize=9,
                ha="center",
                va="center",
                rotation=90,
            )
    return _save(fig, out_png)
