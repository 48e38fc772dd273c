"""Options against encoder collapse, the up-sampling grid and low diversity: known answers."""

import numpy as np
import torch
import torch.nn.functional as F

from ratgan.config import load_config
from ratgan.models import build_networks
from ratgan.models.layers import (
    UpsampleConvBlock,
    binomial_blur3d,
    minibatch_stddev,
    to_sphere,
)


def test_to_sphere_gives_length_sqrt_l_and_keeps_the_direction():
    z = torch.randn(5, 64) * torch.tensor([0.1, 1, 3, 10, 100])[:, None]
    s = to_sphere(z)
    assert torch.allclose(s.norm(dim=1), torch.full((5,), 8.0), rtol=1e-5)
    assert torch.allclose(F.cosine_similarity(s, z), torch.ones(5), atol=1e-6)


def test_sphere_generator_and_critic_ignore_the_code_length():
    cfg = load_config("tiny", {"model.latent_norm": "sphere"}).model
    torch.manual_seed(0)
    nets = build_networks(cfg)
    g, c = nets.generator.eval(), nets.code_discriminator.eval()
    z = torch.randn(2, cfg.latent_dim)
    assert torch.allclose(g(z), g(7 * z), atol=1e-6)
    assert torch.allclose(c(z), c(0.2 * z), atol=1e-5)
    codes = nets.encoder(torch.randn(3, 1, 16, 16, 16))
    assert torch.allclose(codes.norm(dim=1), torch.full((3,), cfg.latent_dim**0.5), rtol=1e-5)


def test_standardised_encoder_codes_have_batch_mean_zero_and_variance_one():
    cfg = load_config("tiny", {"model.e_standardise": True}).model
    torch.manual_seed(0)
    e = build_networks(cfg).encoder.train()
    # scans sharing a strong common part: an ordinary encoder gives codes with a large mean
    x = 3 * torch.randn(1, 1, 16, 16, 16) + torch.randn(6, 1, 16, 16, 16)
    z = e(x)
    assert torch.allclose(z.mean(0), torch.zeros(cfg.latent_dim), atol=1e-4)
    assert torch.allclose(z.var(0, unbiased=False), torch.ones(cfg.latent_dim), atol=1e-2)


def _blur_reference(x: np.ndarray) -> np.ndarray:
    """Nearest x2 then [1, 2, 1] / 4 along each spatial axis with edge replication: the
    textbook identity for linear x2 up-sampling at half-voxel offsets."""
    y = x.repeat(2, axis=2).repeat(2, axis=3).repeat(2, axis=4)
    for axis in (2, 3, 4):
        pad = [(0, 0)] * 5
        pad[axis] = (1, 1)
        p = np.pad(y, pad, mode="edge")
        n = y.shape[axis]
        lo, mid, hi = (np.take(p, range(k, k + n), axis=axis) for k in (0, 1, 2))
        y = 0.25 * lo + 0.5 * mid + 0.25 * hi
    return y


def test_trilinear_block_is_nearest_up_sampling_then_a_binomial_blur():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(3, 2, 3, 1, 1, bias=False).double()
    x = torch.randn(1, 3, 4, 5, 6, dtype=torch.float64)
    ref = F.conv3d(torch.from_numpy(_blur_reference(x.numpy())), conv.weight, padding=1)
    literal = UpsampleConvBlock(conv, fused=False, mode="trilinear")
    assert torch.allclose(literal(x), ref, atol=1e-10)
    # the fused form (conv first, blur after) equals it away from the border
    fused = UpsampleConvBlock(conv, fused=True, mode="trilinear")
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2), slice(2, -2))
    assert torch.allclose(fused(x)[inner], ref[inner], atol=1e-10)
    assert not torch.allclose(fused(x), ref, atol=1e-6)  # the border differs, as documented


def test_generator_trilinear_blocks_choose_the_last_blocks():
    cfg = load_config("tiny", {"model.g_upsample": "trilinear", "model.g_trilinear_blocks": 1})
    g = build_networks(cfg.model).generator
    modes = [b.mode for name, b in g.net.named_children() if name != "stem"]
    assert modes == ["nearest"] * (len(modes) - 1) + ["trilinear"]
    cfg = load_config("tiny", {"model.g_upsample": "trilinear"})
    g = build_networks(cfg.model).generator
    assert all(b.mode == "trilinear" for n, b in g.net.named_children() if n != "stem")


def test_minibatch_stddev_known_answer_and_groups_do_not_mix():
    x = torch.zeros(4, 2, 3, 3, 3)
    x[2] = 1.0  # group 2 (volumes 2, 3): per-feature std 0.5 everywhere
    out = minibatch_stddev(x, 2)
    assert out.shape == (4, 3, 3, 3, 3)
    assert torch.equal(out[:, :2], x)
    assert torch.all(out[:2, 2] < 1e-3)  # identical volumes: std ~0 (sqrt of the epsilon)
    assert torch.allclose(out[2:, 2], torch.full((2, 3, 3, 3), 0.5), atol=1e-6)


def test_discriminator_with_minibatch_stddev_scores_each_volume():
    cfg = load_config("tiny", {"model.d_mbstd_group": 2, "train.batch_size": 2})
    d = build_networks(cfg.model).discriminator
    assert d(torch.randn(4, 1, 16, 16, 16)).shape == (4,)


def test_mbstd_group_must_divide_the_batch():
    import pytest

    from ratgan.errors import RatganError

    with pytest.raises(RatganError, match="model.d_mbstd_group"):
        load_config("tiny", {"model.d_mbstd_group": 3, "train.batch_size": 2})


def test_standardised_codes_need_two_scans_per_batch():
    import pytest

    from ratgan.errors import RatganError

    with pytest.raises(RatganError, match="model.e_standardise"):
        load_config("tiny", {"model.e_standardise": True, "train.batch_size": 1})


def test_final_full_resolution_conv():
    cfg = load_config("tiny", {"model.g_final_conv": 4})
    g = build_networks(cfg.model).generator
    assert g.net.final.weight.shape == (1, 4, 3, 3, 3)
    assert g.net.out[1].weight.shape[0] == 4
    assert g(torch.randn(2, cfg.model.latent_dim)).shape == (2, 1, 16, 16, 16)


def test_binomial_blur_matches_the_reference_and_its_gradient_is_exact():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 1, 6, dtype=torch.float64, requires_grad=True)
    up = F.interpolate(x.detach(), scale_factor=2, mode="nearest")
    ref = torch.from_numpy(_blur_reference(x.detach().numpy()))
    assert torch.allclose(binomial_blur3d(up), ref, atol=1e-12)
    assert torch.autograd.gradcheck(binomial_blur3d, (x,))


def test_binomial_blur_keeps_dtype_outside_autocast_and_float32_inside():
    x = torch.randn(1, 2, 4, 4, 4).bfloat16().requires_grad_(True)
    assert binomial_blur3d(x).dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = binomial_blur3d(x)
    assert y.dtype == torch.float32
    y.sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16
