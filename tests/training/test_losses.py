"""The alpha-GAN losses: known values, NumPy cross-checks and gradient flow of every term."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math

import numpy as np
import pytest
import torch
from torch import nn

from ratgan.config import LossConfig, load_config
from ratgan.errors import RatganError
from ratgan.models import build_networks
from ratgan.training import losses
from ratgan.training.losses import (
    code_discriminator_loss,
    discriminator_loss,
    encoder_generator_loss,
    gradient_difference_loss,
    gradient_penalty,
    reconstruction_loss,
)

# ----------------------------------------------------------------- gradient penalty


@pytest.mark.parametrize("shape", [(3, 2, 4, 5, 6), (5, 7)])
@pytest.mark.parametrize("k", [0.5, 2.0])
def test_gp_linear_critic_known_value(shape, k):
    # critic(x) = k * sum(x) has gradient norm k*sqrt(D) at every point.
    dim = math.prod(shape[1:])
    real = torch.randn(shape, dtype=torch.float64)
    fake = torch.randn(shape, dtype=torch.float64)
    gp = gradient_penalty(lambda x: k * x.flatten(1).sum(1), real, fake)
    assert gp.item() == pytest.approx((k * math.sqrt(dim) - 1) ** 2, rel=1e-12)


@pytest.mark.parametrize("shape", [(3, 2, 4, 5, 6), (5, 7)])
def test_gp_unit_gradient_critic_is_zero(shape):
    u = torch.randn(shape[1:], dtype=torch.float64)
    u = u / u.norm()
    gp = gradient_penalty(
        lambda x: (x * u).flatten(1).sum(1),
        torch.randn(shape, dtype=torch.float64),
        torch.randn(shape, dtype=torch.float64),
    )
    assert gp.item() == pytest.approx(0.0, abs=1e-12)


def test_gp_interpolates_per_sample_with_given_generator():
    # critic(x) = 0.5*||x||^2 has gradient x_hat: the penalty reveals the interpolation points.
    real = torch.randn(4, 1, 3, 3, 3, dtype=torch.float64)
    fake = torch.randn(4, 1, 3, 3, 3, dtype=torch.float64)
    gp = gradient_penalty(
        lambda x: 0.5 * x.flatten(1).pow(2).sum(1),
        real,
        fake,
        generator=torch.Generator().manual_seed(7),
    )
    a = torch.rand(4, 1, 1, 1, 1, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    x_hat = a * real + (1 - a) * fake
    want = ((x_hat.flatten(1).pow(2).sum(1) + 1e-15).sqrt() - 1).pow(2).mean()
    torch.testing.assert_close(gp, want.float() if gp.dtype == torch.float32 else want)
    again = gradient_penalty(
        lambda x: 0.5 * x.flatten(1).pow(2).sum(1),
        real,
        fake,
        generator=torch.Generator().manual_seed(7),
    )
    assert torch.equal(gp, again)


def test_gp_reaches_critic_only():
    critic = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 1))
    maker = nn.Linear(3, 6)  # produces the "fake" samples
    fake = maker(torch.randn(4, 3))
    gp = gradient_penalty(critic, torch.randn(4, 6), fake)
    gp.backward()
    # Every critic weight matters to the input gradient (the last bias cannot).
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0
        for p in (critic[0].weight, critic[0].bias, critic[2].weight)
    )
    assert all(p.grad is None for p in maker.parameters())


# ----------------------------------------------------------------- gradient difference loss


def numpy_gdl(real: np.ndarray, fake: np.ndarray) -> float:
    total = 0.0
    for axis in (2, 3, 4):
        total += ((np.abs(np.diff(real, axis=axis)) - np.abs(np.diff(fake, axis=axis))) ** 2).sum()
    return float(total)


def test_gdl_matches_numpy():
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (2, 3, 5, 6, 7))
    fake = rng.uniform(-1, 1, (2, 3, 5, 6, 7))
    got = gradient_difference_loss(torch.from_numpy(real), torch.from_numpy(fake))
    assert got.item() == pytest.approx(numpy_gdl(real, fake), rel=1e-5)


def test_gdl_zero_for_equal_or_mirrored_edges_and_carries_gradient():
    real = torch.randn(2, 1, 4, 4, 4)
    assert gradient_difference_loss(real, real.clone()).item() == 0
    assert gradient_difference_loss(real, -real).item() == pytest.approx(0, abs=1e-6)
    fake = torch.randn(2, 1, 4, 4, 4, requires_grad=True)
    gradient_difference_loss(real, fake).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


# ----------------------------------------------------------------- objective values


def test_reconstruction_loss_weights_and_parts():
    x, x_rec = torch.randn(2, 1, 4, 4, 4), torch.randn(2, 1, 4, 4, 4)
    cfg = LossConfig(l1=3.0, mse=5.0, gdl=0.5, gp=1.0)
    total, parts = reconstruction_loss(x, x_rec, cfg)
    l1 = (x - x_rec).abs().mean()
    mse = (x - x_rec).pow(2).mean()
    gdl = gradient_difference_loss(x, x_rec)
    torch.testing.assert_close(total, 3 * l1 + 5 * mse + 0.5 * gdl)
    torch.testing.assert_close(parts["l1"], l1)
    torch.testing.assert_close(parts["mse"], mse)
    torch.testing.assert_close(parts["gdl"], gdl)


@pytest.mark.parametrize("w", [1.0, 0.25, 0.0])
def test_tissue_weight_weights_a_joint_models_channels_against_numpy(w):
    """loss.tissue_weight: L1 and MSE are channel means with the tissue channels weighted w
    against the scan's 1, GDL a channel sum weighted the same way (numpy reference); at w = 1
    the plain mean and sum of before, at w = 0 the scan channel's own values."""
    rng = np.random.default_rng(1)
    x, x_rec = rng.uniform(-1, 1, (2, 4, 5, 6, 7)), rng.uniform(-1, 1, (2, 4, 5, 6, 7))
    cw = np.array([1.0, w, w, w])
    per_l1 = np.abs(x - x_rec).mean(axis=(0, 2, 3, 4))
    per_mse = ((x - x_rec) ** 2).mean(axis=(0, 2, 3, 4))
    per_gdl = np.array([numpy_gdl(x[:, c : c + 1], x_rec[:, c : c + 1]) for c in range(4)])
    cfg = LossConfig(l1=3.0, mse=5.0, gdl=0.5, tissue_weight=w)
    total, parts = reconstruction_loss(torch.from_numpy(x), torch.from_numpy(x_rec), cfg)
    want = {
        "l1": (cw * per_l1).sum() / cw.sum(),
        "mse": (cw * per_mse).sum() / cw.sum(),
        "gdl": (cw * per_gdl).sum(),
    }
    for key, value in want.items():
        assert parts[key].item() == pytest.approx(value, rel=1e-6)
    assert total.item() == pytest.approx(3 * want["l1"] + 5 * want["mse"] + 0.5 * want["gdl"])
    if w == 1:
        assert parts["l1"].item() == pytest.approx(np.abs(x - x_rec).mean(), rel=1e-9)
    if w == 0:
        assert parts["gdl"].item() == pytest.approx(per_gdl[0], rel=1e-6)


def test_tissue_weight_needs_label_channels_and_is_not_negative():
    with pytest.raises(RatganError, match="loss.tissue_weight needs label channels"):
        load_config("tiny", {"loss.tissue_weight": 0.5})
    joint = {"model.channels": 4, "data.label_channels": True}
    with pytest.raises(RatganError, match="loss.tissue_weight must be >= 0"):
        load_config("tiny", {**joint, "loss.tissue_weight": -1.0})
    assert load_config("tiny", {**joint, "loss.tissue_weight": 0.0}).loss.tissue_weight == 0


def test_rec_blur_sigma_compares_blurred_scans_against_scipy():
    """loss.rec_blur_sigma: L1 and MSE of the two volumes blurred by scipy's Gaussian (zero
    padding, truncated at 4 sigma); the GDL stays the unblurred one; gradients still reach the
    reconstruction.  A one-voxel shift of a thin sheet costs far less blurred than unblurred."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(2)
    x, x_rec = rng.uniform(-1, 1, (2, 1, 7, 8, 9)), rng.uniform(-1, 1, (2, 1, 7, 8, 9))

    def blur(a: np.ndarray) -> np.ndarray:
        return np.stack(
            [gaussian_filter(v[0], 1.2, mode="constant", truncate=4.0)[None] for v in a]
        )

    want_l1 = np.abs(blur(x) - blur(x_rec)).mean()
    want_mse = ((blur(x) - blur(x_rec)) ** 2).mean()
    rec = torch.from_numpy(x_rec).requires_grad_(True)
    cfg = LossConfig(l1=2.0, mse=3.0, gdl=0.5, rec_blur_sigma=1.2)
    total, parts = reconstruction_loss(torch.from_numpy(x), rec, cfg)
    assert parts["l1"].item() == pytest.approx(want_l1, rel=1e-4)
    assert parts["mse"].item() == pytest.approx(want_mse, rel=1e-4)
    assert parts["gdl"].item() == pytest.approx(numpy_gdl(x, x_rec), rel=1e-6)
    total.backward()
    assert rec.grad is not None and rec.grad.abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the blur keeps float32 under autocast
        assert losses.gaussian_blur(torch.ones(1, 1, 4, 4, 4), 1.0).dtype == torch.float32

    sheet = np.zeros((1, 1, 16, 16, 16))
    sheet[..., 8, :] = 1.0
    shifted = np.roll(sheet, 1, axis=3)
    plain = reconstruction_loss(torch.from_numpy(sheet), torch.from_numpy(shifted), LossConfig())
    blurred = reconstruction_loss(
        torch.from_numpy(sheet), torch.from_numpy(shifted), LossConfig(rec_blur_sigma=1.0)
    )
    assert blurred[1]["mse"].item() < 0.3 * plain[1]["mse"].item()


def test_rec_blur_sigma_refused_negative_or_infinite():
    for bad in (-0.5, math.inf, math.nan):
        with pytest.raises(RatganError, match="loss.rec_blur_sigma must be"):
            load_config("tiny", {"loss.rec_blur_sigma": bad})
    assert load_config("tiny", {"loss.rec_blur_sigma": 1.0}).loss.rec_blur_sigma == 1.0


@pytest.mark.parametrize("name", ["alpha-wgan-adni", "sigmarat1", "sigmarat2"])
def test_objective_values_per_preset(name):
    cfg = load_config(name).loss
    g = torch.Generator().manual_seed(1)
    d_real, d_rec, d_gen = (torch.randn(4, generator=g) for _ in range(3))
    c_enc, c_rand = torch.randn(4, 1, generator=g), torch.randn(4, 1, generator=g)
    x, x_rec = torch.randn(4, 1, 4, 4, 4, generator=g), torch.randn(4, 1, 4, 4, 4, generator=g)
    gp = torch.tensor(0.3)

    l_gd = -d_rec.mean() - d_gen.mean()
    rec = (
        cfg.l1 * (x - x_rec).abs().mean()
        + cfg.mse * (x - x_rec).pow(2).mean()
        + cfg.gdl * gradient_difference_loss(x, x_rec)
    )
    total, parts = encoder_generator_loss(d_rec, d_gen, c_enc, x, x_rec, cfg)
    torch.testing.assert_close(total, l_gd - c_enc.mean() + rec)
    assert set(parts) == {"l_gd", "c_enc", "l1", "mse", "gdl", "total"}
    torch.testing.assert_close(parts["l_gd"], l_gd)

    total, parts = discriminator_loss(d_real, d_rec, d_gen, gp, cfg)
    # L_D = -L_GD - 2 E[D(x)] + lambda1 * GP_D
    torch.testing.assert_close(total, -l_gd - 2 * d_real.mean() + cfg.gp * gp)
    assert parts["total"].item() == pytest.approx(total.item())

    total, parts = code_discriminator_loss(c_enc, c_rand, gp, cfg)
    torch.testing.assert_close(total, c_enc.mean() - c_rand.mean() + cfg.gp * gp)
    assert {"c_enc", "c_rand", "gp", "total"} <= set(parts)


def test_preset_lambdas():
    table = {
        "alpha-wgan-adni": (10, 0, 0, 10),
        "sigmarat1": (10, 10, 0, 10),
        "sigmarat2": (0, 100, 0.01, 100),
    }
    for name, want in table.items():
        c = load_config(name).loss
        assert (c.l1, c.mse, c.gdl, c.gp) == want


def test_losses_never_sync_with_host():
    tree = ast.parse(inspect.getsource(losses))
    called = {
        n.func.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
    }
    assert not called & {"item", "cpu", "tolist", "numpy"}


# ----------------------------------------------------------------- gradient flow

TINY = {
    "volume_size": 16,
    "latent_dim": 8,
    "g_width": 16,
    "d_width": 16,
    "e_width": 16,
    "c_hidden": 32,
}


def reached(loss: torch.Tensor, net: nn.Module) -> bool:
    """True when ``loss`` gives a non-zero gradient to at least one parameter of ``net``."""
    params = list(net.parameters())
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return any(g is not None and g.abs().sum() > 0 for g in grads)


def check(loss: torch.Tensor, nets: dict[str, nn.Module], want: str) -> None:
    got = "".join(k for k, net in nets.items() if reached(loss, net))
    assert got == want


@pytest.fixture(params=["alpha-wgan-adni", "sigmarat1", "sigmarat2"])
def setup(request):
    """Tiny networks of one preset's layer types, a batch, and the forward passes."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(load_config(request.param).model, **TINY)
    nets = build_networks(cfg).as_dict()
    x = torch.rand(2, 1, 16, 16, 16) * 2 - 1
    z_r = torch.randn(2, cfg.latent_dim)
    z_e = nets["E"](x)
    x_rec = nets["G"](z_e)
    x_gen = nets["G"](z_r)
    return nets, x, z_r, z_e, x_rec, x_gen


def only(**weights) -> LossConfig:
    return LossConfig(**{"l1": 0.0, "mse": 0.0, "gdl": 0.0, "gp": 0.0, **weights})


@pytest.mark.parametrize("term", ["l1", "mse", "gdl"])
def test_reconstruction_terms_reach_g_and_e(setup, term):
    nets, x, _, z_e, x_rec, x_gen = setup
    D, C = nets["D"], nets["C"]
    total, _ = encoder_generator_loss(
        D(x_rec).detach(), D(x_gen).detach(), C(z_e).detach(), x, x_rec, only(**{term: 1.0})
    )
    check(total, nets, "GE")


def test_adversarial_terms_of_encoder_generator_loss(setup):
    nets, x, _, z_e, x_rec, x_gen = setup
    D, C = nets["D"], nets["C"]
    d_rec, d_gen, c_enc = D(x_rec), D(x_gen), C(z_e)
    # -E[D(G(z_e))] reaches G and E (and D, which the trainer freezes), not C.
    total, _ = encoder_generator_loss(d_rec, d_gen.detach(), c_enc.detach(), x, x_rec, only())
    check(total, nets, "GED")
    # -E[D(G(z_r))] reaches G but not E.
    total, _ = encoder_generator_loss(d_rec.detach(), d_gen, c_enc.detach(), x, x_rec, only())
    check(total, nets, "GD")
    # -E[C(z_e)] reaches E (and C, frozen by the trainer) but not G.
    total, _ = encoder_generator_loss(d_rec.detach(), d_gen.detach(), c_enc, x, x_rec, only())
    check(total, nets, "EC")


def test_discriminator_loss_terms_reach_d_only(setup):
    nets, x, _, _, x_rec, x_gen = setup
    D = nets["D"]
    zero = torch.zeros(2)
    d_real, d_rec, d_gen = D(x), D(x_rec.detach()), D(x_gen.detach())
    # GP gets the un-detached fakes: it must detach them itself.
    gp = gradient_penalty(D, x, x_rec) + gradient_penalty(D, x, x_gen)
    cfg = only(gp=10.0)
    for args in (
        (d_real, zero, zero, gp.detach()),
        (zero, d_rec, zero, gp.detach()),
        (zero, zero, d_gen, gp.detach()),
        (zero, zero, zero, gp),
    ):
        total, _ = discriminator_loss(*args, cfg)
        check(total, nets, "D")


def test_code_discriminator_loss_terms_reach_c_only(setup):
    nets, _, z_r, z_e, _, _ = setup
    C = nets["C"]
    zero = torch.zeros(2, 1)
    c_enc, c_rand = C(z_e.detach()), C(z_r)
    gp = gradient_penalty(C, z_e, z_r)  # z_e still carries E's graph
    cfg = only(gp=10.0)
    for args in ((c_enc, zero, gp.detach()), (zero, c_rand, gp.detach()), (zero, zero, gp)):
        total, _ = code_discriminator_loss(*args, cfg)
        check(total, nets, "C")


def test_parts_are_detached(setup):
    nets, x, _, z_e, x_rec, x_gen = setup
    D, C = nets["D"], nets["C"]
    total, parts = encoder_generator_loss(
        D(x_rec), D(x_gen), C(z_e), x, x_rec, load_config("sigmarat2").loss
    )
    assert total.requires_grad
    assert not any(p.requires_grad for p in parts.values())
