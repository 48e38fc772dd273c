"""The one place that turns a device name (``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``)
into a ``torch.device``."""

from __future__ import annotations

import torch

from ratgan.errors import RatganError


def select_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then the CPU; anything else must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RatganError(
            f"--device {name!r} is not a device name (try auto, cpu, cuda)."
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RatganError(f"--device {name} was asked for but this machine has no CUDA GPU.")
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise RatganError(f"--device {name} was asked for but this machine has no Apple MPS.")
    return device
