"""Build the four alpha-GAN networks from a ModelConfig."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ratgan.config import ModelConfig
from ratgan.models.code_discriminator import CodeDiscriminator
from ratgan.models.discriminator import Discriminator, Encoder
from ratgan.models.generator import Generator


@dataclass
class Networks:
    """The generator, encoder, discriminator and code discriminator of one model."""

    generator: Generator
    encoder: Encoder
    discriminator: Discriminator
    code_discriminator: CodeDiscriminator

    def as_dict(self) -> dict[str, nn.Module]:
        """The networks keyed ``G``, ``E``, ``D``, ``C``."""
        return {
            "G": self.generator,
            "E": self.encoder,
            "D": self.discriminator,
            "C": self.code_discriminator,
        }

    def place(self, device: torch.device | str, channels_last: bool) -> Networks:
        """Move every network to ``device``, and G, E and D to channels-last 3-D memory when
        ``channels_last`` (C is fully connected: nothing to lay out).  Returns ``self``."""
        fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
        for key, net in self.as_dict().items():
            net.to(device)
            if key != "C":
                # torch's annotations of Module.to omit its documented memory_format keyword
                net.to(memory_format=fmt)  # type: ignore[call-overload]
        return self

    def parameter_counts(self) -> dict[str, int]:
        """Number of trainable parameters per network, keyed ``G``, ``E``, ``D``, ``C``."""
        return {k: sum(p.numel() for p in m.parameters()) for k, m in self.as_dict().items()}


def build_networks(cfg: ModelConfig) -> Networks:
    """Create G, E, D and C (freshly initialised, on the current default device)."""
    return Networks(Generator(cfg), Encoder(cfg), Discriminator(cfg), CodeDiscriminator(cfg))
