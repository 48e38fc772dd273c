"""Rendering: one rule for every scan, and PNGs whose bytes reveal nothing but the pixels."""

import io

import numpy as np
from PIL import Image

from ratgan.turing.render import (
    ALLOWED_PNG_CHUNKS,
    dequantise,
    layout_for,
    png_chunks,
    render_scan,
    sprite_sheet,
    window_to_uint8,
)


def test_window_ignores_the_intensity_scale_of_a_scan():
    rng = np.random.default_rng(0)
    volume = rng.gamma(2.0, 10.0, (12, 10, 6)).astype(np.float32)
    assert np.array_equal(window_to_uint8(volume), window_to_uint8(volume * 250.0 - 3000.0))
    grey = window_to_uint8(volume)
    assert grey.dtype == np.uint8 and grey.min() == 0 and grey.max() == 255


def test_an_integer_file_renders_like_the_same_scan_in_floating_point():
    # A window spanning ~140 integer values filled only 146 of the 256 grey levels, where the
    # float32 copy of the same anatomy filled 205: the served pixels told the file types apart.
    rng = np.random.default_rng(3)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in (64, 64, 40)], indexing="ij")
    anatomy = np.where(sum((g / 0.7) ** 2 for g in grid) < 1, 150.0, 20.0)
    scan = anatomy + rng.normal(0, 12, anatomy.shape)
    as_float = sprite_sheet(scan.astype(np.float32))[0]
    as_int = sprite_sheet(np.rint(scan).astype(np.int16))[0]
    assert len(np.unique(window_to_uint8(np.rint(scan).astype(np.int16)))) < 150
    assert abs(len(np.unique(as_int)) - len(np.unique(as_float))) <= 5
    # the same image apart from the spread within one stored step (about 1 grey level)
    assert np.abs(as_int.astype(float) - as_float).mean() < 1.0
    assert np.array_equal(as_int, sprite_sheet(np.rint(scan).astype(np.int16))[0])


def test_window_of_a_constant_or_non_finite_scan():
    assert np.all(window_to_uint8(np.full((4, 4, 3), 7.0)) == 0)
    volume = np.ones((4, 4, 3))
    volume[0, 0, 0] = np.nan
    assert window_to_uint8(volume).dtype == np.uint8


def test_sprite_sheet_tiles_rotated_axial_slices_in_rows():
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(6, 5, 7))
    sheet, layout = sprite_sheet(volume)
    assert layout == layout_for(volume.shape)
    assert (layout.columns, layout.rows, layout.tile_height, layout.tile_width) == (3, 3, 5, 6)
    assert sheet.shape == (15, 18)
    grey = window_to_uint8(dequantise(volume))
    for k in range(7):
        row, col = divmod(k, 3)
        tile = sheet[row * 5 : (row + 1) * 5, col * 6 : (col + 1) * 6]
        assert np.array_equal(tile, np.rot90(grey[:, :, k]))
    assert np.all(sheet[10:, 6:] == 0)  # the two unused tiles


def test_pngs_of_different_scans_have_identical_structure_and_size():
    rng = np.random.default_rng(2)
    noisy = rng.normal(size=(32, 32, 20)).astype(np.float32)
    smooth = np.zeros((32, 32, 20), dtype=np.float32)
    smooth[8:24, 8:24, :] = 1.0
    png_a, layout_a = render_scan(noisy)
    png_b, layout_b = render_scan(smooth * 1000.0)
    assert layout_a == layout_b
    assert len(png_a) == len(png_b)
    assert png_chunks(png_a) == png_chunks(png_b)
    assert {kind for kind, _ in png_chunks(png_a)} <= ALLOWED_PNG_CHUNKS
    assert png_a[:33] == png_b[:33]  # signature + IHDR chunk, CRC included
    image = Image.open(io.BytesIO(png_a))
    assert image.mode == "L" and image.info == {}
    assert np.array_equal(np.asarray(image), sprite_sheet(noisy)[0])
