"""Small building blocks shared by the four alpha-GAN networks (SPEC section 2).

Plain ``torch.nn``: MONAI's ``Convolution``/``ADN`` blocks order and configure their layers
differently (e.g. their instance norm and bias defaults, and no nearest-upsample + conv block
with the published layer order), so matching the published networks exactly is simpler here.

Conventions taken from the published code (Kwon et al. 2019 ``Model_alphaWGAN.py``,
Ferreira et al. 2022 ``WGAN_SigmaRat1.py`` / ``WGAN_SigmaRat2.py``):

* ``InstanceNorm3d`` has ``affine=False`` and no running statistics (PyTorch's default, which
  the published ``nn.InstanceNorm3d(c)`` calls use), so it has no parameters.
* ``BatchNorm3d`` / ``BatchNorm1d`` are PyTorch's defaults (affine, running statistics).
* Spectral norm wraps the weight of every conv / linear layer of a listed network.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrizations

from ratgan.config import Activation, Norm


def norm3d(kind: Norm, channels: int) -> nn.Module:
    """A 3-D normalisation layer: ``batch``, ``instance`` (affine=False) or ``none``."""
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=False, track_running_stats=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


def activation(kind: Activation, slope: float) -> nn.Module:
    """``relu`` or ``leaky_relu`` with negative slope ``slope`` (never in place)."""
    if kind == "relu":
        return nn.ReLU()
    if kind == "leaky_relu":
        return nn.LeakyReLU(slope)
    raise ValueError(f"unknown activation {kind!r}")


def maybe_spectral(layer: nn.Module, enabled: bool) -> nn.Module:
    """Wrap ``layer``'s weight in spectral normalisation when ``enabled``.

    Uses ``torch.nn.utils.parametrizations.spectral_norm``, which picks the output-channel
    dimension itself (dim 1 for transposed convolutions).
    """
    return parametrizations.spectral_norm(layer) if enabled else layer
