"""The `long` preset: `demo` without the up-sampling grid, trained on 64x64x40 scans."""

from dataclasses import asdict

import numpy as np
import torch

from ratgan.config import load_config
from ratgan.models import build_networks


def _flat(data: dict, prefix: str = "") -> dict:
    """A nested config dict as {"section.field": value}."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_long_is_demo_with_the_grid_fix_and_the_documented_loss_weights():
    demo, long = (_flat(asdict(load_config(name))) for name in ("demo", "long"))
    changed = {k: (demo[k], long[k]) for k in demo if demo[k] != long[k]}
    assert changed == {
        "name": ("demo", "long"),
        "model.g_upsample": ("nearest", "trilinear"),
        "model.g_trilinear_blocks": (0, 2),
        "model.g_final_conv": (0, 8),
        "model.g_output_noise_after_tanh": (False, True),
        "loss.mse": (100.0, 1000.0),
        "loss.gdl": (0.01, 0.001),
        "train.iterations": (1800, 8000),
        "train.sample_every": (600, 1000),
        "train.checkpoint_every": (300, 500),
        "train.eval_every": (300, 500),
    }


def test_long_generator_is_trilinear_in_its_last_two_blocks_and_ends_in_a_full_resolution_conv():
    cfg = load_config("long")
    g = build_networks(cfg.model).generator
    modes = [block.mode for name, block in g.net.named_children() if name.startswith(("up", "out"))]
    assert modes == ["nearest", "nearest", "trilinear", "trilinear"]
    # the last up-sampling block ends in 8 channels with norm and activation, then a 3^3 conv to 1
    assert g.net.final.weight.shape == (1, 8, 3, 3, 3)
    # G's parameters: demo's output conv (16 -> 1) replaced by 16 -> 8 and 8 -> 1 convs (G's
    # instance norm has no affine parameters)
    demo_g = build_networks(load_config("demo").model).generator
    n = sum(p.numel() for p in g.parameters())
    n_demo = sum(p.numel() for p in demo_g.parameters())
    assert n - n_demo == 16 * 8 * 27 + 8 * 27 - 16 * 27


def test_long_trains_on_64x64x40_scans_and_exports_them_in_their_space(phantom_dir, tmp_path):
    from ratgan.data.io import read_scan
    from ratgan.generation import generate_scans
    from ratgan.training.run import train

    cfg = load_config("long", {"train.iterations": 1, "train.eval_every": 0})
    run = tmp_path / "run"
    torch.manual_seed(0)
    train(cfg, phantom_dir, run, progress=False)
    paths = generate_scans(run, 2, tmp_path / "out", device="cpu", progress=False)
    reference = read_scan(sorted((phantom_dir / "images").glob("*.nii*"))[0])
    for path in paths:
        scan = read_scan(path)
        assert scan.data.shape == (64, 64, 40)
        assert np.allclose(scan.affine, reference.affine)
        assert np.isfinite(scan.data).all()
