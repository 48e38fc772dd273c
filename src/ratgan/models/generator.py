"""The generator G: latent code -> volume in [-1, 1] (SPEC section 2)."""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from ratgan.config import ModelConfig
from ratgan.models.layers import UpsampleConvBlock, activation, maybe_spectral, norm3d


class Generator(nn.Module):
    """Maps z of shape (B, L) to a volume of shape (B, C, S, S, S) with values in [-1, 1].

    z is viewed as L x 1 x 1 x 1, a ConvTranspose3d(k4, s1, p0) makes a 4^3 volume with
    ``g_width`` channels, then ``n_scales`` blocks of [nearest x2 upsample -> Conv3d(k3, s1, p1)]
    halve the channels each time and end at ``channels`` (each pair run as one equivalent
    transposed conv when ``g_fused_upsample``: :func:`ratgan.models.layers.nearest_up_conv3d`).
    Norm and activation follow every layer but the last, which ends in tanh.  No layer has a
    bias (as in the published code).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.latent_dim = cfg.latent_dim
        sn = "G" in cfg.spectral_norm
        widths = list(reversed(cfg.widths(cfg.g_width)))  # deepest first: 512, 256, 128, 64
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["stem"] = nn.Sequential(
            maybe_spectral(nn.ConvTranspose3d(cfg.latent_dim, widths[0], 4, 1, 0, bias=False), sn),
            norm3d(cfg.g_norm, widths[0]),
            activation(cfg.g_activation, cfg.g_leaky_slope),
        )
        for i in range(1, len(widths)):
            layers[f"up{i}"] = UpsampleConvBlock(
                maybe_spectral(nn.Conv3d(widths[i - 1], widths[i], 3, 1, 1, bias=False), sn),
                norm3d(cfg.g_norm, widths[i]),
                activation(cfg.g_activation, cfg.g_leaky_slope),
                fused=cfg.g_fused_upsample,
            )
        layers["out"] = UpsampleConvBlock(
            maybe_spectral(nn.Conv3d(widths[-1], cfg.channels, 3, 1, 1, bias=False), sn),
            nn.Tanh(),
            fused=cfg.g_fused_upsample,
        )
        self.net = nn.Sequential(layers)

    def forward(self, z: Tensor) -> Tensor:
        """(B, L) latent codes -> (B, C, S, S, S) volumes in [-1, 1]."""
        return self.net(z.reshape(z.shape[0], self.latent_dim, 1, 1, 1))
