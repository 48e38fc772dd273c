"""ratgan.models: the four alpha-GAN networks (G, E, D, C) built from a ModelConfig."""

from ratgan.models.build import Networks, build_networks
from ratgan.models.code_discriminator import CodeDiscriminator
from ratgan.models.discriminator import ConvTrunk, Discriminator, Encoder
from ratgan.models.generator import Generator

__all__ = [
    "CodeDiscriminator",
    "ConvTrunk",
    "Discriminator",
    "Encoder",
    "Generator",
    "Networks",
    "build_networks",
]
