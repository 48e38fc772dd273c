"""The segmentation network of the downstream test (docs/method.md §6): a 3D U-Net for 4 classes.

The paper's network (Rodrigues 2018, Keras) has five levels of two 3x3x3 convolutions with
ReLU and 64, 128, 256, 512, 1024 channels, 2x2x2 max pooling (2x2x1 before the deepest level
so that the 40-slice axis survives), batch normalisation, dropout at the deep levels and a
4-class softmax.  MONAI's ``UNet``/``BasicUNet`` down-sample with strided convolutions or a
fixed isotropic pooling, so the network is assembled here from MONAI ``Convolution`` blocks
with max pooling whose per-axis factors follow the input shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from monai.networks.blocks import Convolution
from torch import nn

NUM_CLASSES = 4
"""Background, grey matter, white matter, cerebrospinal fluid."""
CLASS_NAMES = ("background", "GM", "WM", "CSF")


@dataclass
class UNetConfig:
    """Architecture of the segmentation U-Net; stored with every checkpoint."""

    channels: tuple[int, ...] = (64, 128, 256, 512, 1024)
    """Channels of each level, shallow to deep (the number of levels is its length)."""
    input_shape: tuple[int, int, int] = (64, 64, 40)
    """Spatial shape the network is built for: fixes the pooling factors of each axis."""
    in_channels: int = 1
    num_classes: int = NUM_CLASSES
    norm: str = "batch"
    dropout: float = 0.2
    dropout_levels: int = 2
    """Dropout after the convolutions of this many deepest levels."""
    pools: tuple[tuple[int, int, int], ...] = field(default=())
    """Pooling factors between levels; derived from ``input_shape`` when left empty."""

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.input_shape = tuple(int(s) for s in self.input_shape)  # type: ignore[assignment]
        if not self.pools:
            self.pools = pooling_factors(self.input_shape, len(self.channels) - 1)
        self.pools = tuple(tuple(int(f) for f in p) for p in self.pools)  # type: ignore[misc]

    def to_dict(self) -> dict:
        """Plain dict for checkpoints and JSON."""
        d = asdict(self)
        return {
            k: (list(map(list, v)) if k == "pools" else list(v) if isinstance(v, tuple) else v)
            for k, v in d.items()
        }


def pooling_factors(shape: tuple[int, int, int], n: int) -> tuple[tuple[int, int, int], ...]:
    """Per-axis pooling factors for ``n`` poolings: an axis is halved while its size is even.

    For 64x64x40 and four poolings this gives the paper's 2x2x2, 2x2x2, 2x2x2, 2x2x1.
    """
    sizes = list(shape)
    out: list[tuple[int, int, int]] = []
    for _ in range(n):
        fx, fy, fz = (2 if s % 2 == 0 and s >= 4 else 1 for s in sizes)
        f = (fx, fy, fz)
        sizes = [s // k for s, k in zip(sizes, f, strict=True)]
        out.append(f)
    return tuple(out)


def _double_conv(cin: int, cout: int, norm: str, dropout: float) -> nn.Sequential:
    kw: dict[str, Any] = {
        "spatial_dims": 3,
        "kernel_size": 3,
        "act": "relu",
        "norm": None if norm == "none" else norm,
        "bias": norm == "none",
    }
    return nn.Sequential(
        Convolution(in_channels=cin, out_channels=cout, **kw),
        Convolution(in_channels=cout, out_channels=cout, dropout=dropout or None, **kw),
    )


class SegUNet(nn.Module):
    """3D U-Net returning per-class logits of shape (B, num_classes, X, Y, Z)."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        n = len(ch)
        drop = [cfg.dropout if i >= n - cfg.dropout_levels else 0.0 for i in range(n)]
        self.down = nn.ModuleList()
        cin = cfg.in_channels
        for i, c in enumerate(ch):
            self.down.append(_double_conv(cin, c, cfg.norm, drop[i]))
            cin = c
        self.pool = nn.ModuleList(nn.MaxPool3d(p, p) for p in cfg.pools)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in range(n - 2, -1, -1):
            p = cfg.pools[i]
            self.up.append(
                Convolution(
                    3,
                    ch[i + 1],
                    ch[i],
                    strides=p,
                    kernel_size=p,
                    is_transposed=True,
                    conv_only=True,
                    padding=0,
                    output_padding=0,
                )
            )
            self.dec.append(_double_conv(2 * ch[i], ch[i], cfg.norm, drop[i]))
        self.head = Convolution(3, ch[0], cfg.num_classes, kernel_size=1, conv_only=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of scans (B, in_channels, X, Y, Z)."""
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < len(self.pool):
                skips.append(x)
                x = self.pool[i](x)
        for up, dec in zip(self.up, self.dec, strict=True):
            x = up(x)
            x = dec(torch.cat([x, skips.pop()], dim=1))
        return self.head(x)


PRESETS: dict[str, tuple[int, ...]] = {
    "full": (64, 128, 256, 512, 1024),
    "cpu": (8, 16, 32, 64),
}
"""Level widths: the paper's U-Net and a narrow 4-level variant for CPUs."""


def build_unet(cfg: UNetConfig) -> SegUNet:
    """The U-Net described by ``cfg``."""
    return SegUNet(cfg)
