"""The discriminator D and the encoder E, sharing one convolutional trunk (docs/method.md §2)."""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from ratgan.config import ModelConfig, Norm
from ratgan.models.layers import activation, maybe_spectral, minibatch_stddev, norm3d, to_sphere
from ratgan.models.whitening import RunningWhitening


class ConvTrunk(nn.Module):
    """Volume (B, C, S, S, S) -> (B, out_channels) features, the trunk of D and E.

    ``n_scales`` Conv3d(k4, s2, p1) layers with ``widths`` channels take S^3 down to 4^3, each
    followed by LeakyReLU; norm sits between conv and activation from the second conv on.
    A final Conv3d(k4, s1, p0) maps 4^3 to 1^3 with ``out_channels`` channels (its kernel is
    ``head_kernel``, the coarsest feature map's shape, for a model with a ``volume_depth``).

    Every conv keeps its bias, including those followed by BatchNorm: both published codes
    (Kwon's ``Discriminator``, which Kwon also uses as the encoder, and Ferreira's
    ``Discriminator``/``Encoder``) use ``nn.Conv3d``'s default ``bias=True`` throughout.
    """

    def __init__(
        self,
        in_channels: int,
        widths: list[int],
        out_channels: int,
        norm: Norm,
        slope: float,
        spectral: bool,
        extra_head_channels: int = 0,
        head_kernel: tuple[int, int, int] = (4, 4, 4),
    ) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        prev = in_channels
        for i, width in enumerate(widths):
            layers[f"down{i + 1}"] = nn.Sequential(
                maybe_spectral(nn.Conv3d(prev, width, 4, 2, 1), spectral),
                norm3d(norm if i > 0 else "none", width),
                activation("leaky_relu", slope),
            )
            prev = width
        head = nn.Conv3d(prev + extra_head_channels, out_channels, head_kernel, 1, 0)
        layers["head"] = maybe_spectral(head, spectral)
        self.net = nn.Sequential(layers)

    def before_head(self, x: Tensor) -> Tensor:
        """What the head sees of the last conv's features (identity here)."""
        return x

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, S, S, S) -> (B, out_channels)."""
        *trunk, head = self.net
        for layer in trunk:
            x = layer(x)
        out: Tensor = head(self.before_head(x))
        return out.flatten(1)


class Discriminator(ConvTrunk):
    """The critic D: volume (B, C, S, S, S) -> one unbounded score per volume, shape (B,).

    With ``d_mbstd_group`` the minibatch standard deviation is appended before the head.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(
            cfg.channels,
            cfg.widths(cfg.d_width),
            1,
            cfg.d_norm,
            cfg.leaky_slope,
            "D" in cfg.spectral_norm,
            extra_head_channels=1 if cfg.d_mbstd_group else 0,
            head_kernel=cfg.coarsest_shape,
        )
        self.mbstd_group = cfg.d_mbstd_group

    def before_head(self, x: Tensor) -> Tensor:
        """The features, plus the minibatch standard deviation with ``d_mbstd_group``."""
        return minibatch_stddev(x, self.mbstd_group) if self.mbstd_group else x

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, S, S, S) -> (B,) scores."""
        return super().forward(x)[:, 0]


class Encoder(ConvTrunk):
    """The encoder E: volume (B, C, S, S, S) -> latent code z_e of shape (B, L)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(
            cfg.channels,
            cfg.widths(cfg.e_width),
            cfg.latent_dim,
            cfg.e_norm,
            cfg.leaky_slope,
            "E" in cfg.spectral_norm,
            head_kernel=cfg.coarsest_shape,
        )
        self.sphere = cfg.latent_norm == "sphere"
        self.standardise = (
            nn.BatchNorm1d(cfg.latent_dim, affine=False) if cfg.e_standardise else None
        )
        self.whiten = RunningWhitening(cfg.latent_dim) if cfg.e_whiten else None

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, S, S, S) -> (B, L) codes (standardised with ``e_standardise``, decorrelated
        with ``e_whiten``, then on the
        sphere with ``latent_norm: sphere``)."""
        z = super().forward(x)
        if self.standardise is not None:
            z = self.standardise(z)
        if self.whiten is not None:
            z = self.whiten(z)
        return to_sphere(z) if self.sphere else z
