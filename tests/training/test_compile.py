"""train.compile: compiled G/E keep their checkpoint keys; a compiler failure falls back."""

import pytest
import torch

from ratgan.config import load_config
from ratgan.models import build_networks
from ratgan.training import alphagan


def test_compiler_failure_falls_back_to_eager(monkeypatch):
    def broken_compile(fn):
        def run(*args, **kwargs):
            raise RuntimeError("no compiler here")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    cfg = load_config("tiny")
    net = build_networks(cfg.model).generator
    keys = set(net.state_dict())
    z = torch.randn(2, cfg.model.latent_dim)
    expected = net(z)
    alphagan.compile_with_fallback(net)
    with pytest.warns(UserWarning, match="running it eagerly"):
        out = net(z)
    assert torch.equal(out, expected)
    assert set(net.state_dict()) == keys


@pytest.mark.slow
def test_real_compile_matches_eager():
    cfg = load_config("tiny")
    net = build_networks(cfg.model).generator.eval()
    z = torch.randn(2, cfg.model.latent_dim)
    expected = net(z)
    alphagan.compile_with_fallback(net)
    assert torch.allclose(net(z), expected, atol=1e-5)
