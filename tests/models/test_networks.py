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
    counts = nets.parameter_counts()
    assert counts == {k: sum(p.numel() for p in m.parameters()) for k, m in d.items()}


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
