"""The settings of an evaluation and its named random streams."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ratgan.evaluation.metrics import MSSSIMSettings

PROTOCOLS = ("ratgan", "authors")


@dataclass
class EvaluationSettings:
    """Every knob of an evaluation (all recorded in metrics.json)."""

    seed: int = 0
    protocol: str = "ratgan"
    """"ratgan" (ours, docs/evaluation.md) or "authors" (the published code's computation)."""
    comparisons: int = 21_000
    authors_epochs: int = 100
    """Epochs of the authors' protocol (each compares every real scan once, in batches of 2)."""
    msssim_comparisons: int = 2_100
    msssim: MSSSIMSettings = field(default_factory=MSSSIMSettings)
    split_repeats: int = 10
    bootstrap: int = 200
    """Bootstrap draws of the scans behind the ± of the feature-space distances against a
    held-out set (0 or 1: none)."""
    permutations: int = 1000
    """Permutations of the RBF-MMD² test against the held-out scans (0: none)."""
    knn_k: int = 3
    copy_threshold: float | None = None
    """A fixed near-copy threshold; None calibrates it on the real reference scans."""
    copy_false_positive_rate: float = 0.01
    """The share of never-seen real scans the calibrated near-copy threshold may flag."""
    copy_confidence: float = 0.95
    """The confidence with which that share holds (a one-sided tolerance bound)."""
    copy_max_shift: int = 2
    """Shifts (voxels per axis) the memorisation similarity tolerates."""
    feature_seed: int = 0
    batch_size: int = 2
    """MS-SSIM pairs per batch.  On a CPU, small batches are fastest: larger ones allocate
    temporaries big enough for the allocator to map and unmap them each time, and the page
    faults cost more than batching saves (64x64x40, one thread: 7 ms per pair at 2, 25 at 8)."""
    feature_batch: int = 4
    """Volumes per batch through the random feature network."""
    device: str = "cpu"
    progress: bool = True
    anatomy: bool = True
    """Also measure the set-level distances in the anatomy feature space (a segmentation
    network trained on the real scans' label maps; skipped, with the reason, without them)."""

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(
                f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}"
            )

    def to_dict(self) -> dict:
        """Plain dict of the settings."""
        return asdict(self)


def stream(seed: int, *name: str) -> np.random.Generator:
    """The random generator of one named stage, e.g. ``stream(seed, "msssim", "synthetic",
    "sr2")``: derived from ``seed`` and the name alone, so adding a set or a stage never
    changes another stage's draws."""
    key = "/".join(name).encode()
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(key)))


@contextmanager
def exact_float32() -> Iterator[None]:
    """CUDA convolutions and matrix products in full float32 (IEEE) inside the block, restored
    after.  PyTorch runs cuDNN's float32 convolutions in TF32 by default on Ampere and later GPUs
    (a 10-bit mantissa), so a GPU evaluation's features, MS-SSIM and distances would differ from
    a CPU evaluation's of the same scans in the digits the report prints.  No effect on a CPU.
    Uses PyTorch's ``fp32_precision`` settings where they exist (mixing them with the legacy
    ``allow_tf32`` flags is an error), else the legacy flags."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    matmul = torch.backends.cuda.matmul
    if conv is not None and hasattr(conv, "fp32_precision"):
        saved = (conv.fp32_precision, matmul.fp32_precision)
        conv.fp32_precision = matmul.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision, matmul.fp32_precision = saved
        return
    legacy = (torch.backends.cudnn.allow_tf32, matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, matmul.allow_tf32 = legacy
