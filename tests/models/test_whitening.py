"""model.e_whiten: the running whitening of the encoder's codes against known answers."""

import pytest
import torch

from ratgan.config import load_config
from ratgan.errors import RatganError
from ratgan.models.discriminator import Encoder
from ratgan.models.whitening import RunningWhitening


def _correlated_codes(n: int, dim: int, seed: int) -> torch.Tensor:
    """Standardised codes whose variance lies mostly on one direction (as measured in E)."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(dim, generator=g)
    z = torch.randn(n, 1, generator=g) * 3 * direction + 0.3 * torch.randn(n, dim, generator=g)
    return (z - z.mean(0)) / z.std(0)


def test_codes_on_a_line_come_out_with_the_identity_covariance():
    dim = 16
    layer = RunningWhitening(dim, momentum=0.005, eps=1e-4)
    codes = _correlated_codes(20_000, dim, seed=0)
    corr_in = torch.corrcoef(codes.T)
    top_in = torch.linalg.eigvalsh(corr_in)[-1] / dim
    assert top_in > 0.85  # the input: one direction holds most of the variance
    layer.train()
    for batch in codes.split(4):  # batches of 4, as in training
        layer(batch)
    layer.eval()
    out = layer(_correlated_codes(20_000, dim, seed=0))
    cov = torch.cov(out.T)
    assert torch.allclose(cov, torch.eye(dim), atol=0.15), cov.diagonal()
    # ZCA: the whitening matrix is symmetric and positive definite.
    w = layer.inverse_sqrt()
    assert torch.allclose(w, w.T, atol=1e-5) and torch.linalg.eigvalsh(w).min() > 0


def test_evaluation_mode_does_not_update_and_gradients_reach_the_codes():
    layer = RunningWhitening(8)
    before = layer.running_corr.clone()
    layer.eval()
    layer(torch.randn(4, 8))
    assert torch.equal(layer.running_corr, before)
    layer.train()
    z = torch.randn(4, 8, requires_grad=True)
    layer(z).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert not torch.equal(layer.running_corr, before)


def test_the_encoder_keeps_the_running_correlation_in_its_state():
    cfg = load_config("tiny", {"model.e_standardise": True, "model.e_whiten": True}).model
    encoder = Encoder(cfg)
    assert "whiten.running_corr" in encoder.state_dict()
    x = torch.randn(4, cfg.channels, cfg.volume_size, cfg.volume_size, cfg.volume_size)
    assert encoder(x).shape == (4, cfg.latent_dim)


def test_whitening_needs_standardised_codes():
    with pytest.raises(RatganError, match="model.e_whiten needs model.e_standardise"):
        load_config("tiny", {"model.e_whiten": True})
