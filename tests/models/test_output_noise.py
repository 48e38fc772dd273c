"""G's optional output noise: off by default, seeded when given, clean output alongside."""

import torch

from ratgan.config import load_config
from ratgan.models import build_networks


def _generator(noise: bool, after_tanh: bool = False):
    overrides = {"model.g_output_noise": noise, "model.g_output_noise_after_tanh": after_tanh}
    cfg = load_config("tiny", overrides).model
    torch.manual_seed(0)
    return build_networks(cfg).generator.eval(), cfg


def test_without_output_noise_the_generator_is_deterministic_and_clean_equals_output():
    g, cfg = _generator(False)
    z = torch.randn(2, cfg.latent_dim)
    out, clean = g(z, return_clean=True)
    assert out is clean
    assert torch.equal(g(z), g(z))
    assert not any("output_noise" in k for k in g.state_dict())


def test_output_noise_adds_the_learned_std_before_tanh():
    g, cfg = _generator(True)
    z = torch.randn(2, cfg.latent_dim)
    noise = torch.randn(2, 1, 16, 16, 16)
    out, clean = g(z, noise=noise, return_clean=True)
    # Known answer at initialisation: std = softplus(0 * pre - 5), so
    # atanh(out) - atanh(clean) = softplus(-5) * noise.
    expected = torch.nn.functional.softplus(torch.tensor(-5.0)) * noise
    diff = torch.atanh(out.clamp(-1 + 1e-6, 1 - 1e-6)) - torch.atanh(
        clean.clamp(-1 + 1e-6, 1 - 1e-6)
    )
    assert torch.allclose(diff, expected, atol=1e-4)
    # The same noise gives the same scan; other noise another one.
    assert torch.equal(g(z, noise=noise), g(z, noise=noise))
    assert not torch.equal(g(z, noise=noise), g(z, noise=torch.randn_like(noise)))


def test_output_noise_strength_is_trained():
    g, cfg = _generator(True)
    z = torch.randn(2, cfg.latent_dim)
    g(z).pow(2).sum().backward()
    assert g.output_noise.offset.grad is not None and g.output_noise.offset.grad != 0


def test_output_noise_after_tanh_adds_to_the_image_and_clamps():
    g, cfg = _generator(True, after_tanh=True)
    z = torch.randn(2, cfg.latent_dim)
    noise = torch.randn(2, 1, 16, 16, 16)
    noise[0, 0, 8, 8, 8] = 1e4  # one extreme draw: reaches the top of the range exactly
    out, clean = g(z, noise=noise, return_clean=True)
    # Known answer at initialisation: std = softplus(-5) everywhere, added after the tanh.
    expected = (clean + torch.nn.functional.softplus(torch.tensor(-5.0)) * noise).clamp(-1, 1)
    assert torch.allclose(out, expected, atol=1e-6)
    assert out[0, 0, 8, 8, 8] == 1.0
    assert out.min() >= -1.0 and out.max() <= 1.0


def test_output_noise_after_tanh_needs_output_noise():
    import pytest

    from ratgan.errors import RatganError

    with pytest.raises(RatganError, match="g_output_noise_after_tanh needs"):
        load_config("tiny", {"model.g_output_noise_after_tanh": True})
