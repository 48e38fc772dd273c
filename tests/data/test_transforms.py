"""Preprocessing (docs/method.md section 1) and its inverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ratgan.data.transforms import (
    PreprocessInfo,
    center_pad_crop,
    channels_to_labels,
    inverse_labels,
    inverse_preprocess,
    labels_to_channels,
    preprocess,
    preprocess_labels,
)
from ratgan.errors import RatganError


def test_sigma_shape_pads_12_slices_each_side(rng):
    vol = rng.uniform(1.0, 500.0, size=(64, 64, 40)).astype(np.float32)
    out, info = preprocess(vol)
    assert out.shape == (64, 64, 64) and out.dtype == np.float32
    assert info.source_shape == (64, 64, 40) and info.downsample == 1
    # zero padding is the minimum of a positive scan, so it becomes -1
    assert np.all(out[:, :, :12] == -1.0) and np.all(out[:, :, 52:] == -1.0)
    assert np.all(out[:, :, 12:52] > -1.0)
    assert out.min() == -1.0 and out.max() == pytest.approx(1.0)
    # the paper's post-processing crop is slices 12:52
    np.testing.assert_allclose(inverse_preprocess(out, info), vol, rtol=1e-4)
    np.testing.assert_allclose(
        (out[:, :, 12:52] + 1) / 2 * (info.vmax - info.vmin) + info.vmin, vol, rtol=1e-4
    )


def test_round_trip_with_crop_and_negative_values(rng):
    vol = rng.normal(0.0, 50.0, size=(20, 70, 9)).astype(np.float32)
    out, info = preprocess(vol, (32, 64, 16))
    assert out.shape == (32, 64, 16)
    assert out.min() >= -1.0 and out.max() <= 1.0
    back = inverse_preprocess(out, info)
    assert back.shape == vol.shape
    np.testing.assert_allclose(back[:, 3:67], vol[:, 3:67], rtol=1e-4, atol=1e-4 * 200)
    # cropped away: back as the background, the scan's minimum when it is negative (zeros
    # would be a mid-grey band in a scan of negative and positive values)
    assert info.vmin < 0
    assert np.all(back[:, :3] == np.float32(info.vmin)) and np.all(back[:, 67:] == back[0, 0, 0])
    # a non-negative scan's cropped regions come back as zeros, the paper's padding
    positive, positive_info = preprocess(np.abs(vol) + 1.0, (32, 64, 16))
    back = inverse_preprocess(positive, positive_info)
    assert np.all(back[:, :3] == 0) and np.all(back[:, 67:] == 0)


def test_center_pad_crop_numpy_and_torch_agree():
    a = np.arange(5 * 6 * 7, dtype=np.float32).reshape(1, 5, 6, 7)
    for shape in [(8, 4, 7), (5, 6, 7), (3, 9, 2)]:
        n = center_pad_crop(a, shape, fill=-1.0)
        t = center_pad_crop(torch.from_numpy(a), shape, fill=-1.0)
        assert n.shape == (1, *shape)
        np.testing.assert_array_equal(n, t.numpy())
    # pad then crop is the identity
    padded = center_pad_crop(a, (9, 10, 11))
    np.testing.assert_array_equal(center_pad_crop(padded, (5, 6, 7)), a)


def test_downsample_round_trip_shape(rng):
    vol = rng.uniform(0.0, 100.0, size=(64, 64, 40)).astype(np.float32)
    out, info = preprocess(vol, (32, 32, 32), downsample=2)
    assert out.shape == (32, 32, 32)
    assert info.pooled_shape == (32, 32, 20)
    assert np.all(out[:, :, :6] == -1) and np.all(out[:, :, 26:] == -1)
    back = inverse_preprocess(out, info)
    assert back.shape == (64, 64, 40)
    # a smooth volume survives pooling and trilinear upsampling closely
    x, y, z = np.meshgrid(*[np.linspace(0, 1, s) for s in (64, 64, 40)], indexing="ij")
    smooth = (10 + x + 2 * y + 3 * z).astype(np.float32)
    back = inverse_preprocess(*preprocess(smooth, (32, 32, 32), downsample=2))
    np.testing.assert_allclose(back[2:-2, 2:-2, 2:-2], smooth[2:-2, 2:-2, 2:-2], rtol=0.01)


def test_downsample_that_does_not_divide_pads_first(rng):
    vol = rng.uniform(1.0, 2.0, size=(15, 16, 9)).astype(np.float32)
    out, info = preprocess(vol, (8, 8, 8), downsample=2)
    assert info.pooled_shape == (8, 8, 5)
    assert inverse_preprocess(out, info).shape == (15, 16, 9)
    labels = (vol > 1.5).astype(np.int64)
    lab = preprocess_labels(labels, (8, 8, 8), downsample=2)
    assert lab.shape == (8, 8, 8)
    assert inverse_labels(lab, info).shape == (15, 16, 9)


def test_constant_volume_maps_to_minus_one_and_back():
    vol = np.zeros((4, 4, 4), np.float32)
    out, info = preprocess(vol, (6, 6, 6))
    assert np.all(out == -1.0) and info.vmin == info.vmax == 0.0
    np.testing.assert_array_equal(inverse_preprocess(out, info), vol)
    vol = np.full((6, 6, 6), 7.0, np.float32)
    out, info = preprocess(vol, (6, 6, 6))
    assert np.all(out == -1.0)
    np.testing.assert_array_equal(inverse_preprocess(out, info), vol)


def test_preprocess_rejects_bad_input():
    with pytest.raises(RatganError, match="3-D"):
        preprocess(np.zeros((4, 4)))
    with pytest.raises(RatganError, match="downsample"):
        preprocess(np.zeros((4, 4, 4)), downsample=0)


def test_info_dict_round_trip():
    info = PreprocessInfo((64, 64, 40), -3.5, 1234.25, 2)
    d = info.to_dict()
    assert d == {"source_shape": [64, 64, 40], "vmin": -3.5, "vmax": 1234.25, "downsample": 2}
    assert PreprocessInfo.from_dict(d) == info
    with pytest.raises(RatganError):
        PreprocessInfo.from_dict({"vmin": 1})


def test_labels_geometry_matches_images(rng, h):
    labels = h.blob_labels(rng, (64, 64, 40)).astype(np.int64)
    lab = preprocess_labels(labels, (64, 64, 64))
    assert lab.dtype == np.int64 and lab.shape == (64, 64, 64)
    assert np.all(lab[:, :, :12] == 0) and np.all(lab[:, :, 52:] == 0)
    np.testing.assert_array_equal(lab[:, :, 12:52], labels)
    _, info = preprocess(labels.astype(np.float32) + 1, (64, 64, 64))
    np.testing.assert_array_equal(inverse_labels(lab, info), labels)
    # blocks of 4 survive majority pooling by 2 and nearest upsampling exactly
    lab2 = preprocess_labels(labels, (32, 32, 32), downsample=2)
    _, info2 = preprocess(labels.astype(np.float32), (32, 32, 32), downsample=2)
    np.testing.assert_array_equal(inverse_labels(lab2, info2), labels)


def test_majority_pooling():
    labels = np.zeros((2, 2, 2), np.int64)
    labels[0, 0, 0] = 3
    labels[1, 1, :] = 2
    labels[0, 1, :] = 2
    assert preprocess_labels(labels, (1, 1, 1), downsample=2).item() == 2


def test_label_channels_round_trip():
    labels = torch.tensor([0, 1, 2, 3, 1, 0]).view(1, 1, 1, 2, 3).repeat(2, 1, 1, 1, 1)
    ch = labels_to_channels(labels)
    assert ch.shape == (2, 3, 1, 2, 3) and ch.dtype == torch.float32
    assert set(ch.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(ch[0, :, 0, 0, 1], torch.tensor([1.0, -1.0, -1.0]))
    back = channels_to_labels(ch)
    assert back.dtype == torch.int64 and torch.equal(back, labels)
    soft = torch.tensor([-0.2, 0.3, 0.1]).view(1, 3, 1, 1, 1)
    assert channels_to_labels(soft).item() == 2
    assert channels_to_labels(-soft.abs()).item() == 0


@pytest.mark.parametrize("downsample", [1, 2])
def test_padding_of_a_scan_with_negative_values_is_its_background(downsample):
    """Padding took the value 0 of the scan's own units: a scan in [-500, 1500] (background
    -500) was padded with slices that the min/max rescaling put at -0.5, a mid-grey frame
    around a black background, instead of at -1 with the background."""
    vol = np.full((13, 12, 8), -500.0, np.float32)  # 13: pooling by 2 pads it to 14 first
    vol[4:8, 4:8, 2:6] = 1500.0
    vol[4:8, 4:8, 6:8] = 500.0
    out, info = preprocess(vol, (16, 16, 16), downsample=downsample)
    assert (info.vmin, info.vmax) == (-500.0, 1500.0)
    # by hand: -500 -> -1, 500 -> 0, 1500 -> 1; everything but the block is background
    expected = np.full((16, 16, 16), -1.0, np.float32)
    if downsample == 1:  # 13x12x8 sits at [1:14, 2:14, 4:12] of the 16^3 cube
        expected[5:9, 6:10, 6:10] = 1.0
        expected[5:9, 6:10, 10:12] = 0.0
    else:  # pooled to 7x6x4 at [4:11, 5:11, 6:10]; the blocks are whole 2^3 blocks
        expected[6:8, 7:9, 7:9] = 1.0
        expected[6:8, 7:9, 9:10] = 0.0
    np.testing.assert_array_equal(out, expected)
    # a non-negative scan keeps the paper's zero padding: 0 is below its minimum, and -1
    positive, positive_info = preprocess(vol + 600.0, (16, 16, 16), downsample=downsample)
    assert positive_info.vmin == 0.0 and np.all(positive[:, :, :4] == -1.0)
