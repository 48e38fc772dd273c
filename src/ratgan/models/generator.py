"""The generator G: latent code -> volume in [-1, 1] (docs/method.md section 2)."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ratgan.config import ModelConfig
from ratgan.data.transforms import channels_to_labels, labels_to_channels
from ratgan.models.layers import (
    UpsampleConvBlock,
    activation,
    maybe_spectral,
    norm3d,
    to_sphere,
)


class Generator(nn.Module):
    """Maps z of shape (B, L) to a volume of shape (B, C, S, S, S) with values in [-1, 1]
    ((B, C, S, S, ``volume_depth``) when the model sets one).

    z is viewed as L x 1 x 1 x 1, a ConvTranspose3d(k4, s1, p0) makes a 4^3 volume with
    ``g_width`` channels (4 x 4 x ``volume_depth / 2**n_scales`` with a ``volume_depth``), then
    ``n_scales`` blocks of [nearest x2 upsample -> Conv3d(k3, s1, p1)] halve the channels each
    time and end at ``channels`` (each pair run as one equivalent transposed conv when
    ``g_fused_upsample``: :func:`ratgan.models.layers.nearest_up_conv3d`;
    ``g_upsample: trilinear`` makes the last ``g_trilinear_blocks`` blocks anti-aliased).
    With ``latent_norm: sphere`` z is first scaled to length sqrt(L); with ``g_final_conv`` the
    last block ends in that many channels, followed by a full-resolution Conv3d to the output.
    Norm and activation follow every layer but the last, which ends in tanh.  No layer has a
    bias (as in the published code).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.latent_dim = cfg.latent_dim
        self.sphere = cfg.latent_norm == "sphere"
        sn = "G" in cfg.spectral_norm
        widths = list(reversed(cfg.widths(cfg.g_width)))  # deepest first: 512, 256, 128, 64
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["stem"] = nn.Sequential(
            maybe_spectral(
                nn.ConvTranspose3d(cfg.latent_dim, widths[0], cfg.coarsest_shape, 1, 0, bias=False),
                sn,
            ),
            norm3d(cfg.g_norm, widths[0]),
            activation(cfg.g_activation, cfg.g_leaky_slope),
        )
        n_blocks = len(widths)  # up-sampling blocks, the output block included
        smooth_from = (
            n_blocks + 1
            if cfg.g_upsample == "nearest"
            else (1 if cfg.g_trilinear_blocks == 0 else n_blocks - cfg.g_trilinear_blocks + 1)
        )

        def mode(block: int) -> str:
            return "trilinear" if block >= smooth_from else "nearest"

        for i in range(1, len(widths)):
            layers[f"up{i}"] = UpsampleConvBlock(
                maybe_spectral(nn.Conv3d(widths[i - 1], widths[i], 3, 1, 1, bias=False), sn),
                norm3d(cfg.g_norm, widths[i]),
                activation(cfg.g_activation, cfg.g_leaky_slope),
                fused=cfg.g_fused_upsample,
                mode=mode(i),
            )
        # The final tanh is applied in forward(), after the optional output noise (a Tanh has
        # no parameters, so the state_dict keys are those of the published layer list).
        if cfg.g_final_conv:
            extra = cfg.g_final_conv
            layers["out"] = UpsampleConvBlock(
                maybe_spectral(nn.Conv3d(widths[-1], extra, 3, 1, 1, bias=False), sn),
                norm3d(cfg.g_norm, extra),
                activation(cfg.g_activation, cfg.g_leaky_slope),
                fused=cfg.g_fused_upsample,
                mode=mode(n_blocks),
            )
            layers["final"] = maybe_spectral(
                nn.Conv3d(extra, cfg.channels, 3, 1, 1, bias=False), sn
            )
        else:
            layers["out"] = UpsampleConvBlock(
                maybe_spectral(nn.Conv3d(widths[-1], cfg.channels, 3, 1, 1, bias=False), sn),
                fused=cfg.g_fused_upsample,
                mode=mode(n_blocks),
            )
        self.net = nn.Sequential(layers)
        self.tanh = nn.Tanh()
        per_scan = cfg.latent_dim if cfg.g_output_noise_per_scan else 0
        self.output_noise = (
            OutputNoise(
                per_scan,
                level_spread=cfg.g_output_noise_level_spread,
                gain=cfg.g_output_noise_gain,
            )
            if cfg.g_output_noise
            else None
        )
        self.noise_after_tanh = cfg.g_output_noise_after_tanh
        self.hard_labels = cfg.g_hard_labels

    def forward(
        self, z: Tensor, noise: Tensor | None = None, return_clean: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """(B, L) latent codes -> (B, C, S, S, S) volumes in [-1, 1].

        ``noise`` (standard normal, the output's shape) feeds the output noise of a generator
        built with ``g_output_noise``; None draws it from the global random stream.
        ``return_clean`` returns ``(output, noise-free output)`` (the same tensor twice for a
        generator without output noise).
        """
        if self.sphere:
            z = to_sphere(z)
        pre = self.net(z.reshape(z.shape[0], self.latent_dim, 1, 1, 1))
        clean = self.tanh(pre)
        shown = harden_tissue_channels(clean) if self.hard_labels else clean
        if self.output_noise is None:
            return (shown, clean) if return_clean else shown
        # The noise models the scanner's, so it goes on the scan's channel (0) only: a joint
        # model's GM/WM/CSF channels stay noise-free (shared noise parameters let those
        # saturated channels hold the scan's noise down: the scans came out noise-free).
        pre_scan = pre[:, :1]
        noise_scan = None if noise is None else noise[:, :1]
        if self.noise_after_tanh:
            scan = (clean[:, :1] + self.output_noise.noise(pre_scan, noise_scan, z)).clamp(-1, 1)
        else:
            scan = self.tanh(pre_scan + self.output_noise.noise(pre_scan, noise_scan, z))
        out = torch.cat([scan, shown[:, 1:]], dim=1) if clean.shape[1] > 1 else scan
        return (out, clean) if return_clean else out


def harden_tissue_channels(volumes: Tensor) -> Tensor:
    """(B, 4, ...) joint volumes with the scan channel as is and the tissue channels one-hot in
    {-1, 1} (the tissue of the largest channel, background where all are below 0), the soft
    channels' gradient passed straight through (``model.g_hard_labels``)."""
    soft = volumes[:, 1:]
    hard = labels_to_channels(channels_to_labels(soft.detach())).to(soft.dtype)
    return torch.cat([volumes[:, :1], hard + (soft - soft.detach())], dim=1)  # exactly hard


class OutputNoise(nn.Module):
    """Per-voxel Gaussian noise with a learned, intensity-dependent std, added before the tanh
    (or after it: ``model.g_output_noise_after_tanh``).

    std = softplus(GAIN * (a * pre + b)) with a = 0 and GAIN * b = -5 at the start (std ~0.007),
    so a new generator behaves like one without noise.  The std depends on the (detached)
    noise-free pre-activation, so G can give background and tissue different noise, as
    magnitude MRI has (Rician: Rayleigh-distributed in the background).

    GAIN (``model.g_output_noise_gain``, default 100) is a learning-rate multiplier (as
    StyleGAN's equalised learning rate): Adam moves a parameter by about the learning rate per
    step whatever its gradient, so without it the std could change by a factor of only ~e^0.2
    in 1,000 steps at lr 2e-4 (measured: it barely left its initial value); with it, by e^20.
    Written here: MONAI and PyTorch have no noise-injection layer.

    With ``per_scan`` (the latent size), each scan's std also depends on its code: the softplus's
    argument gains ``w . z`` (w learned, zero at the start), so G can give scans different
    noise levels, as scanners and sessions differ in SNR; without it every scan has the same
    noise for the same intensity.

    With ``level_spread``, the softplus's argument also gains ``GAIN * s * u`` (where the std is
    small, a factor ``exp(GAIN * s * u)``): s one learned scalar (zero at the start), u a
    standard normal per scan.  u is read off the scan's own noise draw, ``sum(noise) / sqrt(n)``
    over its n voxels, which is N(0, 1) exactly when the draw is (and correlates with any one
    voxel's noise by only 1 / sqrt(n)): so a scan generated from a seed keeps its level without
    a second random stream.  One parameter instead of ``per_scan``'s L, and it gets the gain:
    ``per_scan``'s w learnt little spread (docs/quality.md).
    """

    DEFAULT_GAIN = 100.0
    """GAIN's value unless ``model.g_output_noise_gain`` sets another."""
    MAX_STD = 1.0
    """Upper bound of the std (pre-activation units, or image units after the tanh; the tanh
    output spans 2): without one the critic can drive it without limit where the output
    saturates."""

    def __init__(
        self, per_scan: int = 0, level_spread: bool = False, gain: float = DEFAULT_GAIN
    ) -> None:
        super().__init__()
        self.gain = float(gain)
        self.slope = nn.Parameter(torch.zeros(()))
        self.offset = nn.Parameter(torch.full((), -5.0 / self.gain))
        self.per_scan = nn.Parameter(torch.zeros(per_scan)) if per_scan else None
        self.level_spread = nn.Parameter(torch.zeros(())) if level_spread else None

    @staticmethod
    def scan_levels(noise: Tensor) -> Tensor:
        """Each scan's standard normal u = sum(noise) / sqrt(n) of its (B, C, ...) noise draw."""
        flat = noise.detach().flatten(1).float()
        levels: Tensor = flat.sum(1) / flat.shape[1] ** 0.5
        return levels

    def std(self, pre: Tensor, z: Tensor | None = None, u: Tensor | None = None) -> Tensor:
        """The noise std at the (detached) noise-free pre-activation ``pre`` (B, C, ...), for
        codes ``z`` (B, L) when the noise level is per scan and levels ``u`` (B,) when it has a
        learned spread."""
        arg = self.gain * (self.slope * pre.detach() + self.offset)
        shifts = []  # each scan's own shift of the softplus's argument, (B,)
        if self.per_scan is not None:
            if z is None:
                raise ValueError("a per-scan noise level needs the scans' codes z")
            shifts.append(z.to(self.per_scan.dtype) @ self.per_scan)
        if self.level_spread is not None:
            if u is None:
                raise ValueError("a learned spread of noise levels needs the scans' levels u")
            shifts.append(self.gain * self.level_spread * u.to(self.level_spread.dtype))
        if shifts:
            shift = sum(shifts[1:], shifts[0])
            arg = arg + shift.reshape(-1, *([1] * (pre.dim() - 1))).to(arg.dtype)
        return F.softplus(arg).clamp(max=self.MAX_STD)

    def noise(self, pre: Tensor, noise: Tensor | None = None, z: Tensor | None = None) -> Tensor:
        """``std(pre, z) * noise`` with ``noise`` ~ N(0, 1) drawn when not given."""
        if noise is None:
            noise = torch.randn_like(pre)
        u = self.scan_levels(noise) if self.level_spread is not None else None
        return self.std(pre, z, u) * noise.to(pre.dtype)

    def forward(self, pre: Tensor, noise: Tensor | None = None, z: Tensor | None = None) -> Tensor:
        """``pre + std(pre, z) * noise`` with ``noise`` ~ N(0, 1) drawn when not given."""
        return pre + self.noise(pre, noise, z)
