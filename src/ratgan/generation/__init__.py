"""ratgan.generation: sample a trained run and export NIfTI scans in a real scan's space."""

from ratgan.generation.sample import generate_scans, load_generator

__all__ = ["generate_scans", "load_generator"]
