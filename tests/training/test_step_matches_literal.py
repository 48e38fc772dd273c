"""Our fast iteration is the published iteration's mathematics, computed differently.

AlphaGANStep fuses critic calls and both gradient penalties into one batch, runs G's
upsample+conv pairs as transposed convolutions, skips the graph of the discriminator step's
E/G forwards and caches spectral-normalised weights.  Here one iteration of it is compared,
in float64, with a literal transcription of the published loop (every call separate, the
literal generator, E and G recomputed with a graph) on the same weights, batches and random
draws: every loss, every updated weight and every batch-norm running statistic must agree to
rounding.
"""

from __future__ import annotations

import pytest
import torch

from ratgan.config import load_config
from ratgan.models import Networks, build_networks
from ratgan.training import losses
from ratgan.training.alphagan import AlphaGANStep, frozen


def literal_iteration(nets: Networks, opt: dict, cfg, x1, x2, rng) -> dict[str, torch.Tensor]:
    """The published loop, call by call (docs/method.md §3), drawing from ``rng`` in our order."""
    E, G, D, C = nets.encoder, nets.generator, nets.discriminator, nets.code_discriminator
    B, L = len(x1), cfg.model.latent_dim
    z_r = torch.randn(B, L, generator=rng)
    with frozen(D, C):
        z_e = E(x1).reshape(B, -1)
        x_rec, x_gen = G(z_e), G(z_r)
        eg, _ = losses.encoder_generator_loss(D(x_rec), D(x_gen), C(z_e), x1, x_rec, cfg.loss)
    eg_samples = z_e.detach(), x_rec.detach(), x_gen.detach(), z_r
    for key in "EG":
        opt[key].zero_grad()
    eg.backward()
    opt["E"].step()
    opt["G"].step()
    if cfg.optim.double_generator_step:
        opt["G"].step()

    if cfg.optim.critic_reuses_eg_samples:  # ours beyond the paper: no new E and G forwards
        z_e, x_rec, x_gen, z_r = eg_samples
    else:
        z_e = E(x2).reshape(B, -1)
        z_r = torch.randn(B, L, generator=rng)
        x_rec, x_gen = G(z_e).detach(), G(z_r).detach()
    scores = D(x2), D(x_rec), D(x_gen)  # scores before penalties, as published
    gp = losses.gradient_penalty(D, x2, x_rec, rng) + losses.gradient_penalty(D, x2, x_gen, rng)
    d, _ = losses.discriminator_loss(*scores, gp, cfg.loss)
    opt["D"].zero_grad()
    d.backward()
    opt["D"].step()

    scores = C(z_e.detach()), C(z_r)
    gp = losses.gradient_penalty(C, z_r, z_e.detach(), rng)
    c, _ = losses.code_discriminator_loss(*scores, gp, cfg.loss)
    opt["C"].zero_grad()
    c.backward()
    opt["C"].step()
    return {"eg_total": eg.detach(), "d_total": d.detach(), "c_total": c.detach()}


def _sgd(nets: Networks) -> dict[str, torch.optim.Optimizer]:
    # Plain SGD: an update proportional to the gradient.  Adam's first step is about lr * sign(g)
    # and would blow rounding noise up to full steps where a gradient is zero in exact
    # arithmetic (a bias just before batch norm).
    return {key: torch.optim.SGD(net.parameters(), lr=0.01) for key, net in nets.as_dict().items()}


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize(
    ("preset", "spectral", "reuse"),
    [
        (preset, spectral, False)
        for preset in ("sigmarat1", "sigmarat2", "alpha-wgan-adni")
        for spectral in ("off", "eval")
    ]
    + [("sigmarat2", "off", True)],
)
def test_one_iteration_equals_the_literal_published_loop(preset, spectral, reuse, float64):
    """``spectral="off"``: no spectral norm, networks in training mode.  ``"eval"``: the preset's
    spectral norm with every network in eval mode, where sigma is computed from the stored
    power-iteration vectors without updating them (and batch norm uses its running
    statistics), so our once-per-phase cached W / sigma must equal the per-call one."""
    over = {
        "model.volume_size": 16,
        "model.latent_dim": 8,
        "model.g_width": 16,
        "model.d_width": 16,
        "model.e_width": 16,
        "model.c_hidden": 32,
        "data.target_shape": [16, 16, 16],
        "data.downsample": 4,
        "train.precision": "fp32",
        "train.channels_last": False,
        "optim.critic_reuses_eg_samples": reuse,
    }
    if spectral == "off":
        # In training mode the power iteration runs once per phase here and once per call in
        # the published loop, so the sigma estimates differ by design.
        over["model.spectral_norm"] = []
    fast_cfg = load_config(preset, over)
    literal_cfg = load_config(preset, {**over, "model.g_fused_upsample": False})
    torch.manual_seed(0)
    fast = build_networks(fast_cfg.model)
    literal = build_networks(literal_cfg.model)
    for key, net in literal.as_dict().items():
        net.load_state_dict(fast.as_dict()[key].state_dict())
    if spectral == "eval":
        for nets in (fast, literal):
            for net in nets.as_dict().values():
                net.eval()
    data = torch.Generator().manual_seed(1)
    x1, x2 = (torch.rand(2, 1, 16, 16, 16, generator=data) * 2 - 1 for _ in range(2))

    step = AlphaGANStep(
        fast, _sgd(fast), fast_cfg, torch.device("cpu"), torch.Generator().manual_seed(2)
    )
    ours = step(x1, x2)
    theirs = literal_iteration(
        literal, _sgd(literal), literal_cfg, x1, x2, torch.Generator().manual_seed(2)
    )

    for key, value in theirs.items():
        torch.testing.assert_close(ours[key], value, rtol=1e-9, atol=1e-9, msg=key)
    for key, net in fast.as_dict().items():
        other = literal.as_dict()[key].state_dict()
        for name, tensor in net.state_dict().items():
            torch.testing.assert_close(
                tensor, other[name], rtol=1e-9, atol=1e-9, msg=f"{key}.{name}"
            )


def test_spectral_weights_are_computed_once_per_phase():
    cfg = load_config("tiny")  # sigmarat2-shaped: spectral norm on D and C
    torch.manual_seed(0)
    nets = build_networks(cfg.model)
    calls = {"D": 0, "C": 0}
    for key in calls:
        net = nets.as_dict()[key]
        for module in net.modules():
            if type(module).__name__ == "_SpectralNorm":
                module.register_forward_hook(lambda *_, k=key: calls.__setitem__(k, calls[k] + 1))
    layers = {
        k: sum(type(m).__name__ == "_SpectralNorm" for m in nets.as_dict()[k].modules())
        for k in calls
    }
    assert layers["D"] > 0 and layers["C"] > 0
    step = AlphaGANStep(
        nets, _sgd(nets), cfg, torch.device("cpu"), torch.Generator().manual_seed(1)
    )
    x = torch.rand(2, 1, 16, 16, 16) * 2 - 1
    step(x, x)
    # D: once in the E/G phase and once in its own (scores and both penalties share it);
    # C: once in the E/G phase and once in its own.
    assert calls == {"D": 2 * layers["D"], "C": 2 * layers["C"]}
