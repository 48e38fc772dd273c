"""G's optional output noise: off by default, seeded when given, clean output alongside."""

import torch

from ratgan.config import load_config
from ratgan.models import build_networks


def _generator(noise: bool):
    cfg = load_config("tiny", {"model.g_output_noise": noise}).model
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
