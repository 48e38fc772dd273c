"""ratgan: synthetic 3D rat brain MRI with the alpha-GAN of Ferreira et al. 2022."""

__version__ = "0.1.0"
