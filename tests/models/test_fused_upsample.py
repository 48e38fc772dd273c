"""G's fused [nearest x2 upsample -> Conv3d(k3, p1)] is the published formulation, computed faster.

The fused transposed convolution must give the same outputs and the same gradients (input and
weight) as the literal upsample-then-convolve, in float64 to rounding and in a whole generator.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ratgan.config import load_config
from ratgan.models import build_networks
from ratgan.models.layers import nearest_up_conv3d


def _literal(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.conv3d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, padding=1)


@pytest.mark.parametrize("shape", [(2, 3, 4, 4, 4), (1, 5, 3, 6, 2)])
def test_fused_equals_upsample_then_conv_with_gradients(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, shape[1], 3, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    out_grad = torch.randn(
        shape[0], 4, *(2 * s for s in shape[2:]), generator=g, dtype=torch.float64
    )

    fused = nearest_up_conv3d(x, w)
    gx_f, gw_f = torch.autograd.grad(fused, (x, w), out_grad)
    literal = _literal(x, w)
    gx_l, gw_l = torch.autograd.grad(literal, (x, w), out_grad)

    assert fused.shape == literal.shape
    torch.testing.assert_close(fused, literal, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx_f, gx_l, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw_f, gw_l, rtol=1e-12, atol=1e-12)


def test_a_wrong_kernel_map_would_be_caught():
    # The check above is not vacuous: the same transposed conv with the taps reversed differs.
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 4, 4, 4, generator=g, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, 3, generator=g, dtype=torch.float64)
    assert not torch.allclose(nearest_up_conv3d(x, w.flip(2, 3, 4)), _literal(x, w))


@pytest.mark.parametrize("spectral", [[], ["G"]])
def test_generator_fused_and_literal_agree(spectral):
    over = {"model.spectral_norm": spectral}
    fused_cfg = load_config("tiny", {**over, "model.g_fused_upsample": True})
    literal_cfg = load_config("tiny", {**over, "model.g_fused_upsample": False})
    torch.manual_seed(0)
    fused_g = build_networks(fused_cfg.model).generator.double()
    literal_g = build_networks(literal_cfg.model).generator.double()
    literal_g.load_state_dict(fused_g.state_dict())  # same keys: checkpoints are shared
    fused_g.eval()
    literal_g.eval()  # no power-iteration update, so both see the same sigma

    z = torch.randn(3, fused_cfg.model.latent_dim, dtype=torch.float64)
    out_f, out_l = fused_g(z), literal_g(z)
    torch.testing.assert_close(out_f, out_l, rtol=1e-10, atol=1e-10)
    out_f.square().sum().backward()
    out_l.square().sum().backward()
    for (name, p_f), p_l in zip(fused_g.named_parameters(), literal_g.parameters(), strict=True):
        torch.testing.assert_close(p_f.grad, p_l.grad, rtol=1e-9, atol=1e-9, msg=name)


def test_fused_bf16_autocast_stays_close_to_fp32():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 8, 6, 6, 6, generator=g)
    w = torch.randn(4, 8, 3, 3, 3, generator=g) * 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = nearest_up_conv3d(x, w)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), _literal(x, w), rtol=0.05, atol=0.05)
