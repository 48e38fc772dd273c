"""Shapes and behaviour of the four networks (full-size presets: one forward pass each)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from ratgan.config import ModelConfig, load_config
from ratgan.models import (
    CodeDiscriminator,
    Discriminator,
    Encoder,
    Generator,
    Networks,
    build_networks,
)

PRESETS = ["alpha-wgan-adni", "sigmarat1", "sigmarat2"]
TINY = {"latent_dim": 8, "g_width": 16, "d_width": 16, "e_width": 16, "c_hidden": 32}


def model_cfg(name: str, **overrides) -> ModelConfig:
    return dataclasses.replace(load_config(name).model, **overrides)


def forward_all(nets: Networks, cfg: ModelConfig, batch: int = 1):
    """One no-grad forward of every network in eval mode; returns (x, z_e, d, c)."""
    torch.manual_seed(0)
    for m in nets.as_dict().values():
        m.eval()
    with torch.no_grad():
        x = nets.generator(torch.randn(batch, cfg.latent_dim))
        z_e = nets.encoder(x)
        d = nets.discriminator(x)
        c = nets.code_discriminator(torch.randn(2, cfg.latent_dim))
    return x, z_e, d, c


@pytest.mark.parametrize("name", PRESETS)
def test_preset_shapes_64(name):
    cfg = model_cfg(name)
    nets = build_networks(cfg)
    x, z_e, d, c = forward_all(nets, cfg)
    S = 64
    assert x.shape == (1, 1, S, S, S)
    assert x.abs().max() <= 1
    assert z_e.shape == (1, cfg.latent_dim)
    assert d.shape == (1,)
    assert c.shape == (2, 1)
    assert all(torch.isfinite(t).all() for t in (x, z_e, d, c))


def test_shapes_128_reduced_widths():
    cfg = model_cfg("sigmarat1", volume_size=128, **TINY)
    nets = build_networks(cfg)
    assert len([m for m in nets.generator.modules() if isinstance(m, nn.Upsample)]) == 5
    x, z_e, d, c = forward_all(nets, cfg)
    assert x.shape == (1, 1, 128, 128, 128)
    assert z_e.shape == (1, 8) and d.shape == (1,) and c.shape == (2, 1)


def test_shapes_32_full_widths():
    cfg = model_cfg("alpha-wgan-adni", volume_size=32)
    nets = build_networks(cfg)
    x, z_e, d, c = forward_all(nets, cfg)
    assert x.shape == (1, 1, 32, 32, 32)
    assert z_e.shape == (1, 1000) and d.shape == (1,) and c.shape == (2, 1)


@pytest.mark.parametrize("name", PRESETS)
def test_multichannel_volumes(name):
    cfg = model_cfg(name, volume_size=16, channels=4, **TINY)
    nets = build_networks(cfg)
    x, z_e, d, _ = forward_all(nets, cfg, batch=2)
    assert x.shape == (2, 4, 16, 16, 16)
    assert z_e.shape == (2, 8) and d.shape == (2,)
    with pytest.raises(RuntimeError):
        nets.discriminator(torch.zeros(2, 1, 16, 16, 16))


def test_channels_last_matches_contiguous():
    cfg = model_cfg("sigmarat1", volume_size=16, **TINY)
    torch.manual_seed(0)
    nets = build_networks(cfg)
    for m in nets.as_dict().values():
        m.eval()
    z = torch.randn(2, cfg.latent_dim)
    with torch.no_grad():
        ref = nets.generator(z)
        ref_e, ref_d = nets.encoder(ref), nets.discriminator(ref)
        for m in (nets.generator, nets.encoder, nets.discriminator):
            m.to(memory_format=torch.channels_last_3d)
        x = nets.generator(z)
        xl = ref.to(memory_format=torch.channels_last_3d)
        torch.testing.assert_close(x, ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(nets.encoder(xl), ref_e, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(nets.discriminator(xl), ref_d, rtol=1e-4, atol=1e-5)


def test_networks_container():
    cfg = model_cfg("sigmarat2", volume_size=16, **TINY)
    nets = build_networks(cfg)
    d = nets.as_dict()
    assert list(d) == ["G", "E", "D", "C"]
    assert isinstance(d["G"], Generator) and isinstance(d["E"], Encoder)
    assert isinstance(d["D"], Discriminator) and isinstance(d["C"], CodeDiscriminator)


# Layer by layer, for the tiny 16^3 shape (2 scales: trunk widths 8, 16; latent 8; C hidden 32),
# written out from the documented architecture (docs/method.md section 2), not from the code:
# a conv weight is (c_out, c_in, k, k, k) (transposed conv: (c_in, c_out, k, k, k)), a linear
# weight (out, in); G has no biases, D/E/C layers have one per output channel; BatchNorm has a
# weight and a bias per channel, instance norm (affine=False) and spectral norm add nothing.
TINY_LAYERS = {
    "G": [
        (8, 16, 4, 4, 4),  # stem: ConvTranspose3d(8 -> 16, k4), 4^3
        (8, 16, 3, 3, 3),  # up1: Conv3d(16 -> 8, k3), 8^3
        (1, 8, 3, 3, 3),
    ],  # out: Conv3d(8 -> 1, k3), 16^3, tanh
    "E": [
        (8, 1, 4, 4, 4),
        (8,),  # down1: Conv3d(1 -> 8, k4, s2), 8^3
        (16, 8, 4, 4, 4),
        (16,),  # down2: Conv3d(8 -> 16, k4, s2), 4^3
        (8, 16, 4, 4, 4),
        (8,),
    ],  # head: Conv3d(16 -> latent 8, k4), 1^3
    "D": [
        (8, 1, 4, 4, 4),
        (8,),
        (16, 8, 4, 4, 4),
        (16,),
        (1, 16, 4, 4, 4),
        (1,),
    ],  # head: Conv3d(16 -> 1, k4)
    "C": [(32, 8), (32,), (32, 32), (32,), (1, 32), (1,)],
}
# BatchNorm weight + bias where the baseline puts batch norm: after G's first two layers, after
# the second trunk conv of D and E, after both hidden layers of C.
TINY_BATCH_NORMS = {
    "G": [(16,), (16,), (8,), (8,)],
    "E": [(16,), (16,)],
    "D": [(16,), (16,)],
    "C": [(32,), (32,), (32,), (32,)],
}
# The same totals summed by hand: G 8*16*64 + 16*8*27 + 8*27; E (64*8 + 8) + (8*16*64 + 16)
# + (16*8*64 + 8); D 520 + 8208 + (16*64 + 1); C (8*32 + 32) + (32*32 + 32) + (32 + 1).
TINY_TOTALS = {"G": 11_864, "E": 16_928, "D": 9_753, "C": 1_377}


@pytest.mark.parametrize(
    "name,batch_norm", [("sigmarat2", ""), ("sigmarat1", "C"), ("alpha-wgan-adni", "GEDC")]
)
def test_parameter_counts_layer_by_layer(name, batch_norm):
    """Every parameter tensor's shape and every total, for the networks with batch norm in
    ``batch_norm`` (sigmarat1 also shows that spectral norm adds no parameter)."""
    from collections import Counter
    from math import prod

    cfg = model_cfg(name, volume_size=16, **TINY)
    counts = build_networks(cfg).parameter_counts()
    for key, layers in TINY_LAYERS.items():
        shapes = layers + (TINY_BATCH_NORMS[key] if key in batch_norm else [])
        expected = sum(prod(shape) for shape in shapes)
        if key not in batch_norm:
            assert expected == TINY_TOTALS[key], key
        assert counts[key] == expected, (name, key)
        net = build_networks(cfg).as_dict()[key]
        assert Counter(tuple(p.shape) for p in net.parameters()) == Counter(shapes), (name, key)


def test_paper_presets_total_parameter_counts():
    # Term by term, full widths (trunk 64, 128, 256, 512; C hidden 4096).
    trunk = (
        (64 * 64 + 64) + (64 * 128 * 64 + 128) + (128 * 256 * 64 + 256) + (256 * 512 * 64 + 512)
    )  # 11,014,144 weights + 960 biases
    g_convs = (512 * 256 + 256 * 128 + 128 * 64 + 64 * 1) * 27  # 4,646,592
    bn_trunk = 2 * (128 + 256 + 512)
    expected = {
        "alpha-wgan-adni": {  # latent 1000, batch norm everywhere
            "G": 1000 * 512 * 64 + g_convs + 2 * (512 + 256 + 128 + 64),
            "E": trunk + 512 * 1000 * 64 + 1000 + bn_trunk,
            "D": trunk + 512 * 64 + 1 + bn_trunk,
            "C": 1000 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 + 1 + 2 * 2 * 4096,
        },
        "sigmarat1": {  # latent 500, instance norm (no parameters), C keeps batch norm
            "G": 500 * 512 * 64 + g_convs,
            "E": trunk + 512 * 500 * 64 + 500,
            "D": trunk + 512 * 64 + 1,
            "C": 500 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 + 1 + 2 * 2 * 4096,
        },
        "sigmarat2": {  # as sigmarat1 but C without batch norm
            "G": 500 * 512 * 64 + g_convs,
            "E": trunk + 512 * 500 * 64 + 500,
            "D": trunk + 512 * 64 + 1,
            "C": 500 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 + 1,
        },
    }
    # The totals `ratgan train --config P --dry-run` prints and docs/method.md section 2 lists.
    totals = {"alpha-wgan-adni": 113_153_962, "sigmarat1": 78_331_958, "sigmarat2": 78_315_574}
    for name, per_net in expected.items():
        assert sum(per_net.values()) == totals[name], name
        with torch.device("meta"):
            nets = build_networks(model_cfg(name))
        assert nets.parameter_counts() == per_net, name


def test_train_mode_backward_with_batch_norm():
    cfg = model_cfg("alpha-wgan-adni", volume_size=16, **TINY)
    nets = build_networks(cfg)
    z = torch.randn(2, cfg.latent_dim)
    x = nets.generator(z)
    loss = nets.discriminator(x).mean() + nets.code_discriminator(nets.encoder(x)).mean()
    loss.backward()
    for key, net in nets.as_dict().items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters()), key


@pytest.mark.parametrize("channels_last", [True, False])
def test_place_lays_out_the_convolutional_networks(channels_last):
    nets = build_networks(load_config("tiny").model)
    assert nets.place("cpu", channels_last) is nets
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    for key in ("G", "E", "D"):
        weights = [p for p in nets.as_dict()[key].parameters() if p.dim() == 5]
        assert weights and all(w.is_contiguous(memory_format=fmt) for w in weights), key
    assert all(p.is_contiguous() for p in nets.code_discriminator.parameters())
