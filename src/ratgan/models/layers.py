"""Small building blocks shared by the four alpha-GAN networks (docs/method.md section 2).

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

from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrizations

from ratgan.config import Activation, Norm

_ModuleT = TypeVar("_ModuleT", bound=nn.Module)


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


def maybe_spectral(layer: _ModuleT, enabled: bool) -> _ModuleT:
    """Wrap ``layer``'s weight in spectral normalisation when ``enabled``; returns ``layer``.

    Uses ``torch.nn.utils.parametrizations.spectral_norm``, which picks the output-channel
    dimension itself (dim 1 for transposed convolutions) and parametrizes the layer in place
    (it returns the same module, so the layer keeps its class for the type checker).
    """
    if enabled:
        parametrizations.spectral_norm(layer)
    return layer


def nearest_up_conv3d(x: Tensor, weight: Tensor) -> Tensor:
    """``conv3d(upsample_nearest_x2(x), weight, padding=1)`` computed as one transposed conv.

    Along each axis, nearest x2 up-sampling followed by a 3-tap kernel (k0, k1, k2) gives even
    outputs ``k0 x[i-1] + (k1 + k2) x[i]`` and odd outputs ``(k0 + k1) x[i] + k2 x[i+1]``, which is
    a stride-2 transposed convolution with the 4-tap kernel (k2, k1 + k2, k0 + k1, k0) and
    padding 1 (zero padding at either resolution agrees).  The 3-D kernel is that map applied
    along all three axes.  Written here because PyTorch has no fused resize-convolution: it saves
    the 8x-sized up-sampled tensor and 27/8 of the multiply-adds, exactly in real arithmetic.
    The kernel is formed in (at least) float32 outside autocast so its sums are not rounded to bf16.
    """
    exact = torch.promote_types(weight.dtype, torch.float32)
    with torch.autocast(x.device.type, enabled=False):
        taps = weight.new_tensor([[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=exact)
        kernel = torch.einsum("ai,bj,ck,oxijk->xoabc", taps, taps, taps, weight.to(exact))
    return F.conv_transpose3d(x, kernel.to(weight.dtype), stride=2, padding=1)


def to_sphere(z: Tensor) -> Tensor:
    """Codes (B, L) scaled onto the sphere of radius sqrt(L): ``sqrt(L) z / |z|``.

    Where a standard normal code's length concentrates (StyleGAN's ``normalize_2nd_moment``);
    computed in float32 so bf16 rounding does not change the length.
    """
    z32 = z.float()
    scale = torch.rsqrt(z32.pow(2).mean(dim=1, keepdim=True) + 1e-8)
    return (z32 * scale).to(z.dtype)


def minibatch_stddev(x: Tensor, group: int) -> Tensor:
    """Append StyleGAN's minibatch standard deviation as one more channel of ``x`` (B, C, ...).

    The batch is split into *contiguous* groups of ``group`` volumes (StyleGAN strides its
    groups; contiguous ones never mix the real and generated halves of a batch that the trainer
    runs through the critic in one call); each group's per-feature std, averaged to one number,
    is broadcast as a constant map to its members.
    """
    n = x.shape[0]
    g = min(group, n)
    if n % g:
        raise ValueError(f"minibatch stddev: batch {n} is not a multiple of the group {g}")
    y = x.float().reshape(n // g, g, *x.shape[1:])
    std = (y.var(dim=1, unbiased=False) + 1e-8).sqrt()  # (n/g, C, ...)
    stat = std.flatten(1).mean(dim=1)  # (n/g,)
    maps = stat.repeat_interleave(g).view(n, 1, *([1] * (x.dim() - 2)))
    maps = maps.expand(n, 1, *x.shape[2:]).to(x.dtype)
    return torch.cat([x, maps], dim=1)


def _blur_axes(x: Tensor) -> Tensor:
    """The [1, 2, 1] / 4 blur of :func:`binomial_blur3d` along axes 2-4, without autograd, in at
    least float32.  Edge replication adds the border voxel once more to itself."""
    y = x.to(torch.promote_types(x.dtype, torch.float32))
    for axis in (2, 3, 4):
        n = y.shape[axis]
        out = y * 2.0
        if n > 1:
            out.narrow(axis, 1, n - 1).add_(y.narrow(axis, 0, n - 1))
            out.narrow(axis, 0, n - 1).add_(y.narrow(axis, 1, n - 1))
        out.narrow(axis, 0, 1).add_(y.narrow(axis, 0, 1))
        out.narrow(axis, n - 1, 1).add_(y.narrow(axis, n - 1, 1))
        y = out
    return y.mul_(1.0 / 64.0)


class _BinomialBlur(torch.autograd.Function):
    """The blur as one autograd node.  Its matrix along each axis (tridiagonal 1/4, 2/4, 1/4
    with 3/4 in the corners) is symmetric, so the backward pass is the same blur of the
    gradient.  Written as a Function because autograd through the padded slices of the plain
    form zero-fills a full-size gradient per slice, and replicate padding's backward is slow
    on CPUs: the `long` generator's forward + backward (batch 8, bf16) took 1.25 s with the
    padded slices and 0.56 s with this (``benchmarks/upsample_cost.py``)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, out_dtype: torch.dtype) -> Tensor:  # noqa: D102
        ctx.in_dtype = x.dtype
        return _blur_axes(x).to(out_dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # noqa: D102
        return _blur_axes(grad).to(ctx.in_dtype), None


def binomial_blur3d(x: Tensor) -> Tensor:
    """Separable [1, 2, 1] / 4 blur along the three spatial axes of (B, C, X, Y, Z), edges
    replicated.

    Nearest x2 up-sampling followed by this blur *is* trilinear x2 up-sampling
    (align_corners=False).  Both are linear and shift-invariant, so a convolution can move to
    either side of the blur: nearest up-sampling, conv, blur equals trilinear up-sampling, conv
    everywhere but within one voxel of the border, at the cost of the fused nearest form plus
    a few additions per voxel (the literal form costs 27/8 as many multiply-adds).  Computed in
    at least float32; under autocast the result stays float32 (as autocast's replicate padding
    gave before), otherwise it has x's dtype.  Written by hand: a depthwise Conv3d is slow on
    CPUs.
    """
    wide = torch.promote_types(x.dtype, torch.float32)
    out_dtype = wide if torch.is_autocast_enabled(x.device.type) else x.dtype
    out: Tensor = _BinomialBlur.apply(x, out_dtype)  # type: ignore[no-untyped-call]
    return out


class UpsampleConvBlock(nn.Sequential):
    """``[Upsample(x2, nearest|trilinear), Conv3d(k3, s1, p1, no bias), *rest]`` as one block.

    With ``fused`` the first two layers run as :func:`nearest_up_conv3d` (for ``trilinear``
    followed by :func:`binomial_blur3d`, which equals the literal form except within one voxel
    of the border); the module tree (and so the state_dict keys) is the same either way.
    ``trilinear`` is the anti-aliased form (align_corners=False: nearest x2 then a [1, 2, 1] / 4
    blur per axis).
    """

    def __init__(
        self, conv: nn.Conv3d, *rest: nn.Module, fused: bool, mode: str = "nearest"
    ) -> None:
        if (
            conv.kernel_size != (3, 3, 3)
            or conv.padding != (1, 1, 1)
            or conv.stride != (1, 1, 1)
            or conv.bias is not None
        ):
            raise ValueError("UpsampleConvBlock needs a Conv3d(k3, s1, p1) without bias")
        if mode not in ("nearest", "trilinear"):
            raise ValueError(f"unknown up-sampling mode {mode!r}")
        up = (
            nn.Upsample(scale_factor=2, mode="nearest")
            if mode == "nearest"
            else nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)
        )
        super().__init__(up, conv, *rest)
        self.fused = fused
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, S, S, S) -> (B, C_out, 2S, 2S, 2S)."""
        layers = list(self)
        if self.fused:
            conv = layers[1]
            assert isinstance(conv, nn.Conv3d)  # checked in __init__ (spectral norm keeps it)
            x = nearest_up_conv3d(x, conv.weight)
            if self.mode == "trilinear":
                x = binomial_blur3d(x)
            layers = layers[2:]
        for layer in layers:  # what nn.Sequential.forward does
            x = layer(x)
        return x
