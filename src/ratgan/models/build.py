"""Build the four alpha-GAN networks from a ModelConfig."""

from __future__ import annotations

from dataclasses import dataclass

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
        return {"G": self.generator, "E": self.encoder, "D": self.discriminator,
                "C": self.code_discriminator}

    def parameter_counts(self) -> dict[str, int]:
        """Number of trainable parameters per network, keyed ``G``, ``E``, ``D``, ``C``."""
        return {k: sum(p.numel() for p in m.parameters()) for k, m in self.as_dict().items()}


def build_networks(cfg: ModelConfig) -> Networks:
    """Create G, E, D and C (freshly initialised, on the current default device)."""
    return Networks(Generator(cfg), Encoder(cfg), Discriminator(cfg), CodeDiscriminator(cfg))
