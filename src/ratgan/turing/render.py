"""Rendering of a scan into the one image a rater's browser receives.

Every scan of a study, real or synthetic, goes through exactly the same steps, so that
nothing but the anatomy differs between them:

1. intensities stored on a grid of values (an integer file, or a scale slope) are spread
   over their grid step (see dequantise), then windowed per scan by one robust rule (1st to
   99.5th percentile of all voxels) and quantised to 8 bits;
2. the axial slices (third voxel axis, the "original slices" of the paper) are rotated by
   the same fixed rule and tiled row by row into a single grey-scale sprite sheet;
3. the sheet is encoded as a PNG without any ancillary chunk and *without compression*,
   so its byte length depends only on the study's shape, never on the image content
   (a compressed PNG would be larger for a noisier scan, which could give it away).
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
from dataclasses import dataclass

import numpy as np

#: The intensity window: percentiles of all voxels of one scan mapped to black and white.
WINDOW_PERCENTILES = (1.0, 99.5)

#: PNG chunks that may appear in a served image; anything else would be metadata.
ALLOWED_PNG_CHUNKS = frozenset({b"IHDR", b"IDAT", b"IEND"})


@dataclass(frozen=True)
class SpriteLayout:
    """How the axial slices of a scan are tiled in its sprite sheet."""

    n_slices: int
    tile_height: int
    tile_width: int
    columns: int

    @property
    def rows(self) -> int:
        """Number of tile rows in the sheet."""
        return math.ceil(self.n_slices / self.columns)

    @property
    def sheet_shape(self) -> tuple[int, int]:
        """(height, width) of the sprite sheet in pixels."""
        return self.rows * self.tile_height, self.columns * self.tile_width


def layout_for(shape: tuple[int, ...]) -> SpriteLayout:
    """The sprite layout of a 3-D volume of this shape (slices along the third axis)."""
    if len(shape) != 3:
        raise ValueError(f"expected a 3-D volume, got shape {tuple(shape)}")
    nx, ny, nz = (int(s) for s in shape)
    # np.rot90 of an (nx, ny) slice is (ny, nx).
    return SpriteLayout(
        n_slices=nz, tile_height=ny, tile_width=nx, columns=math.ceil(math.sqrt(nz))
    )


def dequantise(volume: np.ndarray) -> np.ndarray:
    """The scan with each voxel moved by a uniform draw within half its value grid's step.

    An integer scan whose window spans fewer than 256 of its values would otherwise fill only
    some of the 256 grey levels (a comb in the image's histogram) where a floating-point scan
    fills them all, and the served image would tell a real scan stored as int16 from a
    synthetic float32 one. The step is the median gap between the scan's distinct values:
    the grid step of a quantised scan, a negligible amount for a continuous one. The draw is
    seeded by the voxels themselves, so a scan always renders to the same image.
    """
    data = np.asarray(volume, dtype=np.float64)
    values = np.unique(data[np.isfinite(data)])
    if values.size < 2:
        return data
    step = float(np.median(np.diff(values)))
    seed = int.from_bytes(hashlib.blake2b(data.tobytes(), digest_size=8).digest(), "little")
    rng = np.random.default_rng(seed)
    return data + rng.uniform(-step / 2, step / 2, size=data.shape)


def window_to_uint8(
    volume: np.ndarray, percentiles: tuple[float, float] = WINDOW_PERCENTILES
) -> np.ndarray:
    """Map one scan's intensities to 0..255 between two of its own percentiles."""
    data = np.nan_to_num(np.asarray(volume, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = np.percentile(data, percentiles)
    if not high > low:
        high = low + 1.0
    scaled = np.clip((data - low) / (high - low), 0.0, 1.0)
    return np.rint(scaled * 255.0).astype(np.uint8)


def sprite_sheet(volume: np.ndarray) -> tuple[np.ndarray, SpriteLayout]:
    """Tile the windowed axial slices of a volume into one 2-D uint8 image."""
    layout = layout_for(volume.shape)
    grey = window_to_uint8(dequantise(volume))
    sheet = np.zeros(layout.sheet_shape, dtype=np.uint8)
    for k in range(layout.n_slices):
        row, col = divmod(k, layout.columns)
        # Neurological display of the RAS slice (the subject's right on the viewer's right):
        # image rows run along -y (anterior at the top), columns along +x.
        tile = np.rot90(grey[:, :, k])
        y0, x0 = row * layout.tile_height, col * layout.tile_width
        sheet[y0 : y0 + layout.tile_height, x0 : x0 + layout.tile_width] = tile
    return sheet, layout


def encode_png(image: np.ndarray) -> bytes:
    """Encode a 2-D uint8 image as an uncompressed PNG with only IHDR, IDAT and IEND chunks."""
    from PIL import Image

    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError("encode_png expects a 2-D uint8 array")
    buffer = io.BytesIO()
    # compress_level=0: stored deflate blocks, so the size is a function of the shape only.
    Image.fromarray(image).save(buffer, format="PNG", compress_level=0, optimize=False)
    return buffer.getvalue()


def render_scan(volume: np.ndarray) -> tuple[bytes, SpriteLayout]:
    """The PNG sprite sheet served for one scan, and its layout."""
    sheet, layout = sprite_sheet(volume)
    return encode_png(sheet), layout


def png_chunks(png: bytes) -> list[tuple[bytes, int]]:
    """(type, length) of every chunk of a PNG file, in order."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    chunks = []
    offset = 8
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        chunks.append((kind, length))
        offset += 12 + length
    return chunks
